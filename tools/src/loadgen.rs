//! Traffic for `tools bench l7`, run by the bench inside lab namespaces as
//! `tools peer ...`: a small request/response server, a connection-rate
//! client, a paced latency client and a holder of idle connections. Every
//! loop is bounded in count and time; the bench only points them at
//! addresses inside its own lab.

use anyhow::{Context, Result, bail};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Bytes of each request and of each response.
pub const MESSAGE: usize = 64;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `port` for `lifetime`: each connection that sends a request of
/// [`MESSAGE`] bytes gets a response of as many bytes; every connection is
/// held until the client closes it (idle holds send nothing).
pub fn serve(port: u16, lifetime: Duration) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).context("bind")?;
    listener.set_nonblocking(true)?;
    println!("PORT {port}");
    let end = Instant::now() + lifetime;
    while Instant::now() < end {
        match listener.accept() {
            Ok((s, _)) => {
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || answer(s))
                    .ok();
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Ok(())
}

/// Accepts connections on `port` for `lifetime` and keeps them open without
/// a thread each (the idle connections of the memory run).
pub fn sink(port: u16, lifetime: Duration) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).context("bind")?;
    listener.set_nonblocking(true)?;
    println!("PORT {port}");
    let end = Instant::now() + lifetime;
    let mut kept = Vec::new();
    while Instant::now() < end {
        match listener.accept() {
            Ok((s, _)) => kept.push(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    Ok(())
}

fn answer(mut s: TcpStream) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; MESSAGE];
    let mut got = 0;
    while got < MESSAGE {
        match s.read(&mut buf[got..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => got += n,
        }
    }
    if s.write_all(&[b'r'; MESSAGE]).is_err() {
        return;
    }
    // Until the client closes.
    let mut sink = [0u8; 256];
    while matches!(s.read(&mut sink), Ok(n) if n > 0) {}
}

/// One short connection: connect, request, response, close. Returns the
/// time it took.
fn exchange(target: SocketAddr) -> Result<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&target, IO_TIMEOUT)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.write_all(&[b'q'; MESSAGE])?;
    let mut buf = [0u8; MESSAGE];
    s.read_exact(&mut buf)?;
    let took = t.elapsed();
    let _ = s.shutdown(Shutdown::Both);
    Ok(took)
}

/// Short connections as fast as `concurrency` clients can make them for
/// `seconds`; prints `conns=N errors=E secs=S`.
pub fn rate(target: SocketAddr, seconds: f64, concurrency: usize) -> Result<()> {
    let c = crate::connrate::repeat(target, concurrency, seconds, |t| exchange(t).is_ok());
    println!("conns={} errors={} secs={:.3}", c.done, c.failed, c.seconds);
    Ok(())
}

/// Short connections started at `per_second` for `seconds` (open loop: a
/// slow answer does not delay the next start); prints
/// `n=N errors=E p50_us=.. p99_us=..`, each latency measured from the
/// connection's scheduled start (so queueing behind slow ones counts).
pub fn latency(target: SocketAddr, seconds: f64, per_second: f64) -> Result<()> {
    if per_second <= 0.0 {
        bail!("rate must be above 0");
    }
    let total = (seconds * per_second).round() as usize;
    let (tx, rx) = mpsc::channel::<Instant>();
    let rx = Arc::new(Mutex::new(rx));
    let results = Arc::new(Mutex::new(Vec::with_capacity(total)));
    let errors = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (rx, results, errors) = (rx.clone(), results.clone(), errors.clone());
            std::thread::spawn(move || {
                loop {
                    let at = match rx.lock().map(|r| r.recv()) {
                        Ok(Ok(at)) => at,
                        _ => return,
                    };
                    if let Some(wait) = at.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    match exchange(target) {
                        Ok(_) => results.lock().unwrap().push((at.elapsed(), at)),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    let start = Instant::now() + Duration::from_millis(50);
    for i in 0..total {
        let _ = tx.send(start + Duration::from_secs_f64(i as f64 / per_second));
    }
    drop(tx);
    for w in workers {
        let _ = w.join();
    }
    let mut v = results.lock().unwrap().clone();
    v.sort();
    let pct = |p: f64| -> u128 {
        if v.is_empty() {
            return 0;
        }
        let i = ((v.len() as f64 * p).ceil() as usize).clamp(1, v.len()) - 1;
        v[i].0.as_micros()
    };
    println!(
        "n={} errors={} p50_us={} p99_us={} p90_us={} p999_us={} max_us={}",
        v.len(),
        errors.load(Ordering::Relaxed),
        pct(0.50),
        pct(0.99),
        pct(0.90),
        pct(0.999),
        v.last().map_or(0, |x| x.0.as_micros()),
    );
    // The slowest 2 %: when each was started (ms into the run) and how
    // long it took, to tell a steady tail from a burst of slow ones.
    let slow = v.len().div_ceil(50);
    let mut tail: Vec<(u128, u128)> = v[v.len() - slow..]
        .iter()
        .map(|(took, at)| {
            (
                at.saturating_duration_since(start).as_millis(),
                took.as_micros(),
            )
        })
        .collect();
    tail.sort_unstable();
    let tail: Vec<String> = tail.iter().map(|(ms, us)| format!("{ms}:{us}")).collect();
    println!("slowest start_ms:us {}", tail.join(" "));
    Ok(())
}

/// Opens `count` connections spread over `targets` (round robin) and holds
/// them idle; prints `held N` once they are open, then keeps them for
/// `seconds` and closes them.
pub fn hold(targets: &[SocketAddr], count: usize, seconds: f64) -> Result<()> {
    if targets.is_empty() {
        bail!("no target");
    }
    let mut held = Vec::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(300);
    // A side that cannot take more (out of memory, table full) stops the
    // run after a few failures in a row, each up to IO_TIMEOUT.
    let (mut failures, mut in_a_row) = (0, 0);
    while held.len() < count && Instant::now() < deadline && in_a_row < 10 {
        match TcpStream::connect_timeout(&targets[held.len() % targets.len()], IO_TIMEOUT) {
            Ok(s) => {
                held.push(s);
                in_a_row = 0;
            }
            Err(_) => {
                failures += 1;
                in_a_row += 1;
            }
        }
    }
    println!("held={} failures={failures}", held.len());
    std::thread::sleep(Duration::from_secs_f64(seconds));
    drop(held);
    Ok(())
}
