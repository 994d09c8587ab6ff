//! Short TCP connections per second, for `tools bench l4`: a server that
//! answers each connection with one byte and closes it, and a client that
//! keeps `workers` connections going for a fixed time (connect, read the
//! byte and the server's close, close). Both run inside the lab's
//! namespaces as `tools peer conn-server|conn-client` (the same binary), so
//! the appliance and the Linux VM are measured with the same load.
//!
//! The server closes first, so the TIME_WAIT state stays on the server's
//! side and the client's ports are free again at once; the client's namespace
//! still gets the full ephemeral port range.

use anyhow::{Context, Result};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The port the benchmark's connection service listens on.
pub const PORT: u16 = 5202;
/// How long one connection attempt may take before it counts as failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts connections for `lifetime`, answering each with one byte.
pub fn serve(port: u16, lifetime: Duration) -> Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", port)).context("binding the connection server")?;
    serve_on(listener, lifetime)
}

/// [`serve`] on a listener already bound (so a caller can connect as soon
/// as this returns from `bind`, with no start-up race).
pub fn serve_on(listener: TcpListener, lifetime: Duration) -> Result<()> {
    listener.set_nonblocking(true)?;
    let end = Instant::now() + lifetime;
    while Instant::now() < end {
        match listener.accept() {
            Ok((mut s, _)) => {
                let _ = s.set_nonblocking(false);
                let _ = s.set_nodelay(true);
                let _ = s.write_all(b"!");
                // Dropping `s` closes it: the server's FIN follows the byte.
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// What a client run counted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Counts {
    /// Connections that got their byte and the server's close.
    pub done: u64,
    /// Connections refused, reset, timed out or short.
    pub failed: u64,
    pub seconds: f64,
}

impl Counts {
    /// The line `conn-client` prints, read back by [`Counts::parse`].
    pub fn line(&self) -> String {
        format!(
            "connections={} failed={} seconds={:.3}",
            self.done, self.failed, self.seconds
        )
    }

    pub fn parse(text: &str) -> Option<Counts> {
        let mut done = None;
        let mut failed = None;
        let mut seconds = None;
        for kv in text.split_whitespace() {
            match kv.split_once('=')? {
                ("connections", v) => done = v.parse().ok(),
                ("failed", v) => failed = v.parse().ok(),
                ("seconds", v) => seconds = v.parse().ok(),
                _ => {}
            }
        }
        Some(Counts {
            done: done?,
            failed: failed?,
            seconds: seconds?,
        })
    }

    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.done as f64 / self.seconds
        } else {
            0.0
        }
    }
}

fn one(target: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(CONNECT_TIMEOUT));
    let mut buf = [0u8; 2];
    let mut got = 0;
    loop {
        match s.read(&mut buf[got..]) {
            Ok(0) => return got == 1,
            Ok(n) => {
                got += n;
                if got > 1 {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
}

/// Runs `workers` connection loops against `target` for `seconds`.
pub fn client(target: SocketAddr, workers: usize, seconds: f64) -> Counts {
    repeat(target, workers, seconds, one)
}

/// Runs `workers` threads that call `attempt` on `target` back to back for
/// `seconds`, and counts the attempts that succeeded and failed (the
/// connection-rate clients of `bench l4` and `bench l7` alike).
pub fn repeat(
    target: SocketAddr,
    workers: usize,
    seconds: f64,
    attempt: fn(SocketAddr) -> bool,
) -> Counts {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..workers.max(1))
        .map(|_| {
            let (stop, done, failed) = (stop.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if attempt(target) {
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(seconds));
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    Counts {
        done: done.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_line_round_trips() {
        let c = Counts {
            done: 1234,
            failed: 5,
            seconds: 5.002,
        };
        assert_eq!(Counts::parse(&c.line()), Some(c));
        assert_eq!(Counts::parse("garbage"), None);
        assert!((c.per_second() - 246.7).abs() < 0.1);
    }

    #[test]
    fn loopback_client_and_server_agree() {
        // Bound before the client starts (port 0: no clash with other
        // runs), so no connection can be refused by a late server.
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let target = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || serve_on(listener, Duration::from_secs(3)));
        let c = client(target, 2, 0.5);
        assert!(c.done > 10, "{c:?}");
        assert_eq!(c.failed, 0, "{c:?}");
        server.join().unwrap().unwrap();
    }
}
