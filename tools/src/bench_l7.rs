//! `tools bench l7`: the Layer 7 TCP-mode relay against, in the same run,
//! HAProxy in TCP mode (Debian's package, `balance source`, the guide's
//! timeouts) in a stock Debian kernel VM of the same shape (1 vCPU, same
//! memory, NIC model and accelerator), one-arm like the appliance's
//! layer 7 SNAT.
//!
//! Figures, each from a client namespace through the VIP to a real server
//! namespace (see [`crate::loadgen`] for the traffic):
//! - connections/s: short connections (connect, 64-byte request, 64-byte
//!   response, close) from `--concurrency` clients;
//! - Gbit/s: one iperf3 TCP stream through the VIP;
//! - p50/p99 latency of a short connection at a fixed rate below both
//!   maxima (`--rate`), measured from each connection's scheduled start;
//! - memory per idle connection: `--hold` idle connections through the VIP,
//!   each side booted afresh for it (the appliance in `--hold-memory`,
//!   64 MiB by default; HAProxy in `--haproxy-hold-memory`, so that its
//!   kernel's socket memory is not the limit); the appliance's
//!   preallocated table bytes per connection plus its heap growth, and
//!   HAProxy's resident memory growth (its guest kernel's slab growth
//!   beside it).

use crate::bench_l4::{cpu_model, host_kernel, iperf3_tcp, load_average, median, wait_path};
use crate::console::Appliance;
use crate::debian::{self, DebianGuest};
use crate::iperf3::{PORT as IPERF_PORT, Server as Iperf3Server};
use crate::lab::{Host, Lab};
use crate::qemu::{Accel, Backend, Boot, Machine, Nic};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The request/response port and the idle-connection ports.
const ECHO_PORT: u16 = 7000;
/// One holder process and one sink per port: this host allows a process
/// 20 000 descriptors and no more (no CAP_SYS_RESOURCE), so 50 000 idle
/// connections need several of each.
const HOLD_PORTS: [u16; 4] = [7001, 7002, 7003, 7004];
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// What `tools bench l7` was asked for.
pub struct Options {
    pub kernel: PathBuf,
    pub accel: Accel,
    pub seconds: u32,
    pub memory_mib: u32,
    pub runs: usize,
    pub concurrency: usize,
    /// Connections per second of the latency run.
    pub rate: u32,
    /// Idle connections of the memory run.
    pub hold: usize,
    /// The appliance's memory for the memory run.
    pub hold_memory_mib: u32,
    /// HAProxy's VM's memory for the memory run.
    pub haproxy_hold_memory_mib: u32,
    pub command: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Appliance,
    Haproxy,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Appliance => "appliance",
            Side::Haproxy => "HAProxy",
        }
    }
}

/// One side's figures from one round.
#[derive(Clone, Copy, Debug, Default)]
struct Figures {
    conns_per_s: f64,
    gbps: f64,
    p50_us: f64,
    p99_us: f64,
    /// Bytes per idle connection (appliance: table entry and heap growth;
    /// HAProxy: resident memory growth).
    bytes_per_conn: f64,
    /// Idle connections open at once in the memory run.
    held: f64,
    /// HAProxy: its guest kernel's slab growth per idle connection (the
    /// two sockets of each); the appliance has no kernel besides itself.
    kernel_bytes_per_conn: f64,
}

const EXT: &str = "10.233.7";

fn vip() -> String {
    format!("{EXT}.100")
}
fn balancer() -> String {
    format!("{EXT}.2")
}
fn client_addr() -> String {
    format!("{EXT}.11")
}
/// The latency run's own client: the connection-rate run leaves tens of
/// thousands of the first client's connections to the VIP in TIME_WAIT,
/// and the host kernel then searches its whole source-port range before
/// each new connect from that address (5-10 ms each here, after the
/// appliance's run, not after HAProxy's slower one). A fresh address has
/// none in its way.
fn pacer_addr() -> String {
    format!("{EXT}.12")
}
fn server_addr() -> String {
    format!("{EXT}.21")
}
/// A second address of the server namespace: the idle connections are
/// spread over two real servers, since one real server address gives the
/// appliance 48 128 source ports (1024–49151), fewer than 50 000.
fn server_addr2() -> String {
    format!("{EXT}.22")
}

fn appliance_toml() -> String {
    format!(
        "[network]\nhostname = \"l7bench\"\n\n[[network.interface]]\nname = \"eth0\"\naddress = \"{}\"\nprefix = 24\n\n[[virtual_service]]\nlabel = \"bench\"\nvip = \"{v}\"\nports = \"{ECHO_PORT},{IPERF_PORT}\"\nforwarding = \"layer7\"\npersistence_timeout = 3600\nclient_timeout = 3600\nserver_timeout = 3600\ncheck_type = \"none\"\n\n[[virtual_service.real_server]]\nlabel = \"RS1\"\nip = \"{s1}\"\n\n[[virtual_service]]\nlabel = \"idle\"\nvip = \"{v}\"\nports = \"{h}\"\nforwarding = \"layer7\"\nclient_timeout = 3600\nserver_timeout = 3600\ncheck_type = \"none\"\n\n[[virtual_service.real_server]]\nlabel = \"RS1\"\nip = \"{s1}\"\n\n[[virtual_service.real_server]]\nlabel = \"RS1b\"\nip = \"{s2}\"\n",
        balancer(),
        v = vip(),
        s1 = server_addr(),
        s2 = server_addr2(),
        h = hold_ports(),
    )
}

fn hold_ports() -> String {
    let p: Vec<String> = HOLD_PORTS.iter().map(|p| p.to_string()).collect();
    p.join(",")
}

fn haproxy_cmdline() -> String {
    format!(
        "console=ttyS0 quiet panic=-1 bench_ip=eth0={}/24,eth0={}/32 bench_haproxy={}:{ECHO_PORT}+{}+{IPERF_PORT}:{}",
        balancer(),
        vip(),
        vip(),
        hold_ports().replace(',', "+"),
        server_addr()
    )
}

/// Runs every round and returns the Markdown report.
pub fn run(opts: &Options) -> Result<String> {
    let root = crate::workspace::root().join("target").join("bench");
    let work = root.join("l7-work");
    std::fs::create_dir_all(&work)?;
    let debian = debian::prepare_spec(&root.join("debian"), &debian::L7)?;
    let started = Instant::now();
    let load_before = load_average();
    let mut results: [Vec<std::result::Result<Figures, String>>; 2] = [Vec::new(), Vec::new()];
    for round in 1..=opts.runs.max(1) {
        eprintln!("round {round} of {}:", opts.runs.max(1));
        for (i, side) in [Side::Appliance, Side::Haproxy].into_iter().enumerate() {
            let t = Instant::now();
            let r = measure(opts, &debian, &work, side).map_err(|e| format!("{e:#}"));
            match &r {
                Ok(f) => eprintln!(
                    "  {}: {:.0} conn/s, {:.3} Gbit/s, p50 {:.0} µs, p99 {:.0} µs, {:.0} idle held, {:.0} B/conn (+{:.0} B kernel) ({:.0} s)",
                    side.name(),
                    f.conns_per_s,
                    f.gbps,
                    f.p50_us,
                    f.p99_us,
                    f.held,
                    f.bytes_per_conn,
                    f.kernel_bytes_per_conn,
                    t.elapsed().as_secs_f64()
                ),
                Err(e) => eprintln!("  {} failed: {}", side.name(), first_line(e)),
            }
            results[i].push(r);
        }
    }
    report(
        opts,
        &debian,
        &results,
        started.elapsed(),
        (load_before, load_average()),
    )
}

fn first_line(e: &str) -> String {
    e.split("; console:")
        .next()
        .unwrap_or("")
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

/// A `tools peer ...` process inside a namespace, killed by PID on drop.
struct Peer {
    child: Child,
}

impl Peer {
    fn spawn(host: &Host, args: &[&str], log: &Path) -> Result<Peer> {
        let exe = std::env::current_exe()?;
        let exe = exe.display().to_string();
        let mut argv = vec![exe.as_str(), "peer"];
        argv.extend_from_slice(args);
        let child = host
            .command(&argv)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log)?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting a load peer")?;
        Ok(Peer { child })
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `tools peer ARGS` in `host` to completion (bounded) and returns its
/// output.
fn peer_run(host: &Host, args: &[&str], timeout: Duration) -> Result<String> {
    let exe = std::env::current_exe()?.display().to_string();
    let mut argv = vec![exe.as_str(), "peer"];
    argv.extend_from_slice(args);
    let mut child = host
        .command(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("peer {} did not finish in time", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output()?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The number after `key=` in `text`.
fn field(text: &str, key: &str) -> Option<f64> {
    let at = text.find(&format!("{key}="))? + key.len() + 1;
    let rest = &text[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn measure(opts: &Options, debian: &DebianGuest, work: &Path, side: Side) -> Result<Figures> {
    let mut lab = Lab::new()?;
    let tap = lab.tap("ext")?;
    let client = lab.host("c", "ext", &format!("{}/24", client_addr()), None)?;
    let pacer = lab.host("p", "ext", &format!("{}/24", pacer_addr()), None)?;
    let server = lab.host("s", "ext", &format!("{}/24", server_addr()), None)?;
    server.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", server_addr2()),
        "dev",
        "eth0",
    ])?;
    for h in [&client, &pacer, &server] {
        h.exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_local_port_range=1024 65000",
        ])?;
    }
    let lifetime = (u64::from(opts.seconds) * 6 + 900).to_string();
    let _echo = Peer::spawn(
        &server,
        &[
            "serve",
            "--port",
            &ECHO_PORT.to_string(),
            "--lifetime",
            &lifetime,
        ],
        &work.join("serve.log"),
    )?;
    let _sinks = HOLD_PORTS
        .iter()
        .map(|p| {
            Peer::spawn(
                &server,
                &["sink", "--port", &p.to_string(), "--lifetime", &lifetime],
                &work.join(format!("sink-{p}.log")),
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let _iperf = Iperf3Server::start(&server, None)?;
    let v = vip();
    let echo = format!("{v}:{ECHO_PORT}");
    let mut vm = boot(opts, debian, work, side, &lab, &tap, opts.memory_mib)?;
    wait_connect(&client, &echo, &mut vm)?;
    let s = opts.seconds.to_string();
    let out = peer_run(
        &client,
        &[
            "rate",
            &echo,
            "--seconds",
            &s,
            "--concurrency",
            &opts.concurrency.to_string(),
        ],
        Duration::from_secs(u64::from(opts.seconds) + 60),
    )?;
    let conns = field(&out, "conns").context("rate output")?;
    let conns_per_s = conns
        / field(&out, "secs")
            .filter(|s| *s > 0.0)
            .context("rate output")?;
    let out = peer_run(
        &pacer,
        &[
            "latency",
            &echo,
            "--seconds",
            &s,
            "--rate",
            &opts.rate.to_string(),
        ],
        Duration::from_secs(u64::from(opts.seconds) + 60),
    )?;
    let (p50_us, p99_us) = (
        field(&out, "p50_us").context("latency output")?,
        field(&out, "p99_us").context("latency output")?,
    );
    if field(&out, "errors").unwrap_or(0.0) > 0.0 {
        bail!("latency run had errors: {out}");
    }
    for line in out.lines() {
        eprintln!("  {} latency: {line}", side.name());
    }
    if side == Side::Appliance {
        // What the appliance's own periodic work may have added.
        let mark = vm.mark();
        vm.send_line("status")?;
        let line = vm.wait_from(
            mark,
            "status housekeeping line",
            Duration::from_secs(20),
            |l| l.trim_start().starts_with("housekeeping:"),
        )?;
        eprintln!("  appliance {}", line.trim());
    }
    let scratch = work.join(format!("{}-iperf3.json", side.name()));
    wait_path(&client, &v, &scratch)?;
    let gbps = iperf3_tcp(&client, &v, opts.seconds, &scratch)?;
    drop(vm);
    // Memory: a VM of its own, and a failure here costs only these figures.
    let hold_mib = match side {
        Side::Appliance => opts.hold_memory_mib,
        Side::Haproxy => opts.haproxy_hold_memory_mib,
    };
    let idle = boot(opts, debian, work, side, &lab, &tap, hold_mib).and_then(|mut vm| {
        wait_connect(&client, &echo, &mut vm)?;
        idle_memory(opts, &mut vm, side, &client, &server, work, &v)
    });
    let idle = idle.unwrap_or_else(|e| {
        eprintln!(
            "  {}: memory per idle connection failed: {}",
            side.name(),
            first_line(&format!("{e:#}"))
        );
        Idle {
            bytes_per_conn: f64::NAN,
            held: f64::NAN,
            kernel_bytes_per_conn: f64::NAN,
        }
    });
    Ok(Figures {
        conns_per_s,
        gbps,
        p50_us,
        p99_us,
        bytes_per_conn: idle.bytes_per_conn,
        held: idle.held,
        kernel_bytes_per_conn: idle.kernel_bytes_per_conn,
    })
}

/// Waits until a short connection through `echo` works (ARP, the VM
/// settled).
fn wait_connect(client: &Host, echo: &str, vm: &mut Appliance) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = peer_run(
            client,
            &["rate", echo, "--seconds", "0.5", "--concurrency", "1"],
            Duration::from_secs(30),
        )?;
        if field(&out, "conns").unwrap_or(0.0) > 0.0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "no connection through {echo}: {out}; console:\n{}",
                vm.console()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The memory run's figures.
struct Idle {
    bytes_per_conn: f64,
    held: f64,
    kernel_bytes_per_conn: f64,
}

/// Memory before and while `--hold` idle connections are open through the
/// VIP, spread over [`HOLD_PORTS`] with one holder process each. Whatever
/// a side cannot hold (HAProxy's VM out of memory, the appliance's table
/// full) is reported as the count it held.
fn idle_memory(
    opts: &Options,
    vm: &mut Appliance,
    side: Side,
    client: &Host,
    server: &Host,
    work: &Path,
    v: &str,
) -> Result<Idle> {
    let before = memory(vm, side)?;
    let per_port = opts.hold.div_ceil(HOLD_PORTS.len()).to_string();
    // Held until this run's figures are read; the holders are killed on
    // drop.
    let secs = "900";
    let logs: Vec<PathBuf> = HOLD_PORTS
        .iter()
        .map(|p| work.join(format!("hold-{p}.log")))
        .collect();
    let _holders = HOLD_PORTS
        .iter()
        .zip(&logs)
        .map(|(p, log)| {
            Peer::spawn(
                client,
                &[
                    "hold",
                    &format!("{v}:{p}"),
                    "--count",
                    &per_port,
                    "--seconds",
                    secs,
                ],
                log,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let deadline = Instant::now() + Duration::from_secs(420);
    let opened = loop {
        let counts: Vec<Option<f64>> = logs
            .iter()
            .map(|l| field(&std::fs::read_to_string(l).unwrap_or_default(), "held"))
            .collect();
        if counts.iter().all(Option::is_some) {
            break counts.into_iter().flatten().sum::<f64>();
        }
        if Instant::now() > deadline {
            bail!("idle connections not opened in time");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    // A connection counts once it reaches the real server, not when the
    // client's connect returns: a guest kernel completes handshakes into
    // its accept queue faster than HAProxy under TCG takes them. Wait
    // while the server's count grows.
    let (mut held, mut grew_at) = (0.0, Instant::now());
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let n = established_at(server, &HOLD_PORTS)?;
        if n > held {
            (held, grew_at) = (n, Instant::now());
        }
        if held >= opened
            || grew_at.elapsed() > Duration::from_secs(15)
            || Instant::now() > deadline
        {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let held = held.min(opened);
    if held < 1.0 {
        bail!("no idle connection reached the real server");
    }
    if held < opts.hold as f64 * 0.99 {
        eprintln!(
            "  {}: {held} of {} idle connections reached the real server ({opened} opened)",
            side.name(),
            opts.hold
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let during = memory(vm, side)?;
    if side == Side::Appliance && during.connections < held * 0.99 {
        bail!(
            "the appliance counts {} connections, the real server {held}",
            during.connections
        );
    }
    let grown = |a: f64, b: f64| (b - a).max(0.0) / held;
    Ok(match side {
        // The table is preallocated: every connection costs its entry
        // whether or not it exists; the heap grows only by what else a
        // connection takes.
        Side::Appliance => Idle {
            bytes_per_conn: during.table_bytes + grown(before.used, during.used),
            held,
            kernel_bytes_per_conn: 0.0,
        },
        Side::Haproxy => Idle {
            bytes_per_conn: grown(before.used, during.used),
            held,
            kernel_bytes_per_conn: grown(before.kernel, during.kernel),
        },
    })
}

/// Established TCP connections in `host` to one of `ports`.
fn established_at(host: &Host, ports: &[u16]) -> Result<f64> {
    let out = host.exec(&["ss", "-Htn", "state", "established"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .filter(|l| {
            // Recv-Q Send-Q Local:Port Peer:Port
            l.split_whitespace()
                .nth(2)
                .and_then(|local| local.rsplit(':').next())
                .and_then(|p| p.parse::<u16>().ok())
                .is_some_and(|p| ports.contains(&p))
        })
        .count() as f64)
}

struct Memory {
    /// Appliance: heap bytes used; HAProxy: resident bytes of its processes.
    used: f64,
    /// Appliance: preallocated bytes per layer 7 connection.
    table_bytes: f64,
    /// Appliance: layer 7 connections open.
    connections: f64,
    /// HAProxy: its guest kernel's slab bytes.
    kernel: f64,
}

fn memory(vm: &mut Appliance, side: Side) -> Result<Memory> {
    // `mem: heap 123 bytes used, 456 free; l7 table 237 bytes ...` and
    // `l7: 10 connections (max 62506, ...`: the whole words that are
    // numbers.
    let numbers = |line: &str| -> Vec<f64> {
        line.split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect()
    };
    match side {
        Side::Appliance => {
            // The answer to this status, not an earlier one's.
            let mark = vm.mark();
            vm.send_line("status")?;
            let l7 = vm.wait_from(mark, "status l7 line", Duration::from_secs(20), |l| {
                l.trim_start().starts_with("l7:")
            })?;
            let line = vm.wait_from(mark, "status memory line", Duration::from_secs(20), |l| {
                l.trim_start().starts_with("mem:")
            })?;
            let nums = numbers(&line);
            Ok(Memory {
                used: *nums.first().context("mem line")?,
                table_bytes: *nums.get(2).context("mem line")?,
                connections: *numbers(&l7).first().context("l7 line")?,
                kernel: 0.0,
            })
        }
        Side::Haproxy => {
            // A line logged after now, with a number (the guest logs one
            // every 2 s).
            let mark = vm.mark();
            let line = vm.wait_from(mark, "a fresh rss line", Duration::from_secs(20), |l| {
                rss_slab_kib(l).is_some()
            })?;
            let (rss, slab) = rss_slab_kib(&line).context("rss line")?;
            Ok(Memory {
                used: rss * 1024.0,
                table_bytes: 0.0,
                connections: 0.0,
                kernel: slab * 1024.0,
            })
        }
    }
}

/// `[   12.345678] rss 51234 slab 20480` -> (51234, 20480) (kB); a zero
/// resident size (no haproxy process) is no reading.
fn rss_slab_kib(line: &str) -> Option<(f64, f64)> {
    let at = line.find("] rss ")?;
    let mut w = line[at + 6..].split_whitespace();
    let rss: f64 = w.next()?.parse().ok()?;
    let slab: f64 = match (w.next(), w.next()) {
        (Some("slab"), Some(s)) => s.parse().ok()?,
        _ => return None,
    };
    (rss > 0.0).then_some((rss, slab))
}

fn boot(
    opts: &Options,
    debian: &DebianGuest,
    work: &Path,
    side: Side,
    lab: &Lab,
    tap: &str,
    memory_mib: u32,
) -> Result<Appliance> {
    let boot = match side {
        Side::Appliance => {
            let toml = work.join("l7.toml");
            std::fs::write(&toml, appliance_toml())?;
            let blob = work.join("l7.bin");
            crate::config_cmd::compile(&toml, &blob)?;
            Boot::Kernel {
                elf: opts.kernel.clone(),
                cmdline: String::new(),
                module: Some(blob),
            }
        }
        Side::Haproxy => Boot::Kernel {
            elf: debian.vmlinuz.clone(),
            cmdline: haproxy_cmdline(),
            module: Some(debian.initramfs.clone()),
        },
    };
    let mut machine = Machine::new(boot);
    machine.accel = opts.accel;
    machine.memory_mib = memory_mib;
    machine.nics.push(Nic::virtio(Backend::Tap {
        ifname: tap.to_string(),
    }));
    let vm = Appliance::boot(&machine, Some(lab))?;
    match side {
        Side::Appliance => {
            vm.wait_ready(BOOT_TIMEOUT)?;
        }
        Side::Haproxy => {
            let line = vm.wait_for("the guest's ready line", BOOT_TIMEOUT, |l| {
                l.trim_end().ends_with("] ready") || l.contains("bench-failed")
            })?;
            if line.contains("bench-failed") {
                bail!("{line}; console:\n{}", vm.console());
            }
        }
    }
    Ok(vm)
}

fn report(
    opts: &Options,
    debian: &DebianGuest,
    results: &[Vec<std::result::Result<Figures, String>>; 2],
    elapsed: Duration,
    load: (String, String),
) -> Result<String> {
    let med = |i: usize, f: fn(&Figures) -> f64| -> Option<f64> {
        let v: Vec<f64> = results[i]
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(f)
            .filter(|v| v.is_finite())
            .collect();
        (!v.is_empty()).then(|| median(v))
    };
    // Name, figure, and whether more is better (None: no ratio).
    type Spec = (&'static str, fn(&Figures) -> f64, Option<bool>);
    let rows: [Spec; 7] = [
        (
            "connections/s (64 B request, 64 B response)",
            |f| f.conns_per_s,
            Some(true),
        ),
        (
            "TCP throughput, Gbit/s (one iperf3 stream)",
            |f| f.gbps,
            Some(true),
        ),
        ("latency p50, µs", |f| f.p50_us, Some(false)),
        ("latency p99, µs", |f| f.p99_us, Some(false)),
        (
            "idle connections held at once (memory run)",
            |f| f.held,
            None,
        ),
        (
            "memory per idle connection, bytes (appliance: table entry + heap growth; HAProxy: resident memory growth)",
            |f| f.bytes_per_conn,
            Some(false),
        ),
        (
            "memory per idle connection with the guest kernel's slab growth, bytes",
            |f| f.bytes_per_conn + f.kernel_bytes_per_conn,
            Some(false),
        ),
    ];
    let mut md = String::new();
    writeln!(
        md,
        "| figure | appliance ({}) | HAProxy TCP mode ({}) | ratio (better ÷ worse: ≥ 1 means the appliance is better) |",
        opts.accel.name(),
        opts.accel.name()
    )?;
    writeln!(md, "|---|---|---|---|")?;
    for (name, f, higher_better) in rows {
        let (a, h) = (med(0, f), med(1, f));
        let fmt = |v: Option<f64>| match v {
            Some(v) if v >= 100.0 => format!("{v:.0}"),
            Some(v) => format!("{v:.3}"),
            None => "failed¹".into(),
        };
        let ratio = match (a, h) {
            (Some(a), Some(h)) if a > 0.0 && h > 0.0 => match higher_better {
                Some(true) => format!("{:.2}", a / h),
                Some(false) => format!("{:.2}", h / a),
                None => "—".into(),
            },
            _ => "—".into(),
        };
        writeln!(md, "| {name} | {} | {} | {ratio} |", fmt(a), fmt(h))?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "- Command: `{}` ({:.0} s in all)",
        opts.command,
        elapsed.as_secs_f64()
    )?;
    writeln!(
        md,
        "- Both VMs: 1 vCPU, {} MiB, virtio-net-pci on a tap in a network-namespace lab (QEMU q35, {}); one arm: client, VIP and real server on one /24. The appliance: release kernel {} ({} KiB), one layer 7 service (ports {ECHO_PORT}, {IPERF_PORT}), persistence 1 h, timeouts 1 h, and one for the idle connections (ports {}, round robin over the server's two addresses: one real server address gives the appliance 48 128 source ports). HAProxy: Debian 12's package on Debian's kernel {}, `mode tcp`, `balance source`, `timeout client/server 1h`, `timeout connect 3s`, `retries 2`, `option redispatch`, `nbthread 1`.",
        opts.memory_mib,
        opts.accel.name(),
        opts.kernel.display(),
        std::fs::metadata(&opts.kernel)
            .map(|m| m.len() / 1024)
            .unwrap_or(0),
        hold_ports(),
        debian.version
    )?;
    writeln!(
        md,
        "- Traffic (`tools peer`, from a client namespace to a server namespace): connections/s from {} concurrent clients for {} s; latency of connections started at {}/s for {} s (open loop, from each scheduled start; from a client namespace of its own, so that the connection-rate run's connections in TIME_WAIT do not slow its connects); throughput one iperf3 stream for {} s; memory: each side booted afresh (the appliance with {} MiB, HAProxy's VM with {} MiB so that its kernel's socket memory is not the limit), {} idle connections asked for, opened by {} holder processes (one per port); a connection counts once it is established at the real server (the count is read until it stops growing): the appliance's preallocated table bytes per connection plus its heap growth per connection (console `status`), HAProxy's resident-memory growth per connection (VmRSS of its processes) and its guest kernel's slab growth (`/proc/meminfo`).",
        opts.concurrency,
        opts.seconds,
        opts.rate,
        opts.seconds,
        opts.seconds,
        opts.hold_memory_mib,
        opts.haproxy_hold_memory_mib,
        opts.hold,
        HOLD_PORTS.len()
    )?;
    writeln!(
        md,
        "- Each figure: median of {} rounds; a round boots each side afresh and measures them in turn.",
        opts.runs.max(1)
    )?;
    writeln!(
        md,
        "- Machine: {} CPUs ({}), host kernel {}, 1-minute load average {} before and {} after (other work shares the CPUs).",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        host_kernel(),
        load.0,
        load.1
    )?;
    let failures: Vec<String> = results
        .iter()
        .zip(["appliance", "HAProxy"])
        .flat_map(|(rs, n)| {
            rs.iter()
                .filter_map(move |r| r.as_ref().err().map(|e| format!("{n}: {}", first_line(e))))
        })
        .collect();
    if !failures.is_empty() {
        writeln!(md, "- ¹ Failures:")?;
        for f in failures {
            writeln!(md, "  - {f}")?;
        }
    }
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appliance_config_validates() {
        let c = lb_core::config::from_toml(&appliance_toml()).unwrap();
        assert_eq!(c.virtual_services[0].ports.len(), 2);
        assert_eq!(c.virtual_services[1].real_servers.len(), 2);
    }

    #[test]
    fn fields_of_peer_output() {
        assert_eq!(
            field("conns=1234 errors=0 secs=10.002", "conns"),
            Some(1234.0)
        );
        assert_eq!(
            field("conns=1234 errors=0 secs=10.002", "secs"),
            Some(10.002)
        );
        assert_eq!(
            field("n=10 errors=0 p50_us=812 p99_us=2400", "p99_us"),
            Some(2400.0)
        );
        assert_eq!(field("held=100 failures=0", "held"), Some(100.0));
        assert_eq!(
            rss_slab_kib("[   12.345678] rss 51234 slab 20480"),
            Some((51234.0, 20480.0))
        );
        assert_eq!(rss_slab_kib("[   12.345678] rss  slab 20480"), None);
        assert_eq!(rss_slab_kib("[   12.345678] rss 0 slab 20480"), None);
        assert_eq!(rss_slab_kib("[   12.345678] rss 51234"), None);
        assert!(
            haproxy_cmdline()
                .contains("bench_haproxy=10.233.7.100:7000+7001+7002+7003+7004+5201:10.233.7.21")
        );
    }
}
