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
//! - memory per idle connection: `--hold` idle connections through the VIP;
//!   the appliance's preallocated table bytes per connection plus its heap
//!   growth, and HAProxy's resident memory growth.

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

/// The request/response port and the idle-connection port.
const ECHO_PORT: u16 = 7000;
const HOLD_PORT: u16 = 7001;
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
    /// Bytes per idle connection.
    bytes_per_conn: f64,
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
        "[network]\nhostname = \"l7bench\"\n\n[[network.interface]]\nname = \"eth0\"\naddress = \"{}\"\nprefix = 24\n\n[[virtual_service]]\nlabel = \"bench\"\nvip = \"{v}\"\nports = \"{ECHO_PORT},{IPERF_PORT}\"\nforwarding = \"layer7\"\npersistence_timeout = 3600\nclient_timeout = 3600\nserver_timeout = 3600\ncheck_type = \"none\"\n\n[[virtual_service.real_server]]\nlabel = \"RS1\"\nip = \"{s1}\"\n\n[[virtual_service]]\nlabel = \"idle\"\nvip = \"{v}\"\nports = \"{HOLD_PORT}\"\nforwarding = \"layer7\"\nclient_timeout = 3600\nserver_timeout = 3600\ncheck_type = \"none\"\n\n[[virtual_service.real_server]]\nlabel = \"RS1\"\nip = \"{s1}\"\n\n[[virtual_service.real_server]]\nlabel = \"RS1b\"\nip = \"{s2}\"\n",
        balancer(),
        v = vip(),
        s1 = server_addr(),
        s2 = server_addr2(),
    )
}

fn haproxy_cmdline() -> String {
    format!(
        "console=ttyS0 quiet panic=-1 bench_ip=eth0={}/24,eth0={}/32 bench_haproxy={}:{ECHO_PORT}+{HOLD_PORT}+{IPERF_PORT}:{}",
        balancer(),
        vip(),
        vip(),
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
                    "  {}: {:.0} conn/s, {:.3} Gbit/s, p50 {:.0} µs, p99 {:.0} µs, {:.0} B/conn ({:.0} s)",
                    side.name(),
                    f.conns_per_s,
                    f.gbps,
                    f.p50_us,
                    f.p99_us,
                    f.bytes_per_conn,
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
    let server = lab.host("s", "ext", &format!("{}/24", server_addr()), None)?;
    server.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{}/24", server_addr2()),
        "dev",
        "eth0",
    ])?;
    for h in [&client, &server] {
        h.exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_local_port_range=1024 65000",
        ])?;
    }
    let secs = (opts.seconds + 120).to_string();
    let lifetime = (u64::from(opts.seconds) * 6 + 600).to_string();
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
    let _sink = Peer::spawn(
        &server,
        &[
            "sink",
            "--port",
            &HOLD_PORT.to_string(),
            "--lifetime",
            &lifetime,
        ],
        &work.join("sink.log"),
    )?;
    let _iperf = Iperf3Server::start(&server, None)?;
    let mut vm = boot(opts, debian, work, side, &lab, &tap)?;
    let v = vip();
    let echo = format!("{v}:{ECHO_PORT}");
    // The path works (ARP, the VM settled).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = peer_run(
            &client,
            &["rate", &echo, "--seconds", "0.5", "--concurrency", "1"],
            Duration::from_secs(30),
        )?;
        if field(&out, "conns").unwrap_or(0.0) > 0.0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "no connection through {echo}: {out}; console:\n{}",
                vm.console()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
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
        &client,
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
    let scratch = work.join(format!("{}-iperf3.json", side.name()));
    wait_path(&client, &v, &scratch)?;
    let gbps = iperf3_tcp(&client, &v, opts.seconds, &scratch)?;
    // Memory: a failure here costs only this figure.
    let bytes_per_conn = match idle_memory(opts, &mut vm, side, &client, work, &v, &secs) {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "  {}: memory per idle connection failed: {e:#}",
                side.name()
            );
            f64::NAN
        }
    };
    Ok(Figures {
        conns_per_s,
        gbps,
        p50_us,
        p99_us,
        bytes_per_conn,
    })
}

/// Bytes per idle connection: memory before and while `--hold` idle
/// connections are open through the VIP.
fn idle_memory(
    opts: &Options,
    vm: &mut Appliance,
    side: Side,
    client: &Host,
    work: &Path,
    v: &str,
    secs: &str,
) -> Result<f64> {
    let before = memory(vm, side)?;
    let hold_log = work.join("hold.log");
    let _hold = Peer::spawn(
        client,
        &[
            "hold",
            &format!("{v}:{HOLD_PORT}"),
            "--count",
            &opts.hold.to_string(),
            "--seconds",
            secs,
        ],
        &hold_log,
    )?;
    let deadline = Instant::now() + Duration::from_secs(300);
    let held = loop {
        let t = std::fs::read_to_string(&hold_log).unwrap_or_default();
        if let Some(n) = field(&t, "held") {
            break n;
        }
        if Instant::now() > deadline {
            bail!("idle connections not opened in time");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if held < opts.hold as f64 * 0.99 {
        bail!("held only {held} of {} idle connections", opts.hold);
    }
    std::thread::sleep(Duration::from_secs(3));
    let during = memory(vm, side)?;
    Ok(match side {
        // The table is preallocated: every connection costs its entry
        // whether or not it exists; the heap grows only by what else a
        // connection takes.
        Side::Appliance => during.table_bytes + (during.heap - before.heap).max(0.0) / held,
        Side::Haproxy => (during.heap - before.heap).max(0.0) / held,
    })
}

struct Memory {
    /// Appliance: heap bytes used; HAProxy: resident bytes.
    heap: f64,
    table_bytes: f64,
}

fn memory(vm: &mut Appliance, side: Side) -> Result<Memory> {
    match side {
        Side::Appliance => {
            // The answer to this status, not an earlier one's.
            let mark = vm.mark();
            vm.send_line("status")?;
            let line = vm.wait_from(mark, "status memory line", Duration::from_secs(20), |l| {
                l.starts_with("mem:")
            })?;
            let nums: Vec<f64> = line
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            Ok(Memory {
                heap: *nums.first().context("mem line")?,
                table_bytes: *nums.get(2).context("mem line")?,
            })
        }
        Side::Haproxy => {
            // A line logged after now, with a number (the guest logs one
            // every 2 s).
            let mark = vm.mark();
            let line = vm.wait_from(mark, "a fresh rss line", Duration::from_secs(20), |l| {
                rss_kib(l).is_some()
            })?;
            let kb = rss_kib(&line).context("rss line")?;
            Ok(Memory {
                heap: kb * 1024.0,
                table_bytes: 0.0,
            })
        }
    }
}

/// `[   12.345678] rss 51234` -> 51234 (kB).
fn rss_kib(line: &str) -> Option<f64> {
    let at = line.find("] rss ")?;
    line[at + 6..].trim().parse().ok()
}

fn boot(
    opts: &Options,
    debian: &DebianGuest,
    work: &Path,
    side: Side,
    lab: &Lab,
    tap: &str,
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
    machine.memory_mib = opts.memory_mib;
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
    type Spec = (&'static str, fn(&Figures) -> f64, &'static str, bool);
    let rows: [Spec; 5] = [
        (
            "connections/s (64 B request, 64 B response)",
            |f| f.conns_per_s,
            "",
            true,
        ),
        (
            "TCP throughput, Gbit/s (one iperf3 stream)",
            |f| f.gbps,
            "",
            true,
        ),
        ("latency p50, µs", |f| f.p50_us, "", false),
        ("latency p99, µs", |f| f.p99_us, "", false),
        (
            "memory per idle connection, bytes",
            |f| f.bytes_per_conn,
            "",
            false,
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
    for (name, f, _, higher_better) in rows {
        let (a, h) = (med(0, f), med(1, f));
        let fmt = |v: Option<f64>| match v {
            Some(v) if v >= 100.0 => format!("{v:.0}"),
            Some(v) => format!("{v:.3}"),
            None => "failed¹".into(),
        };
        let ratio = match (a, h) {
            (Some(a), Some(h)) if a > 0.0 && h > 0.0 => {
                format!("{:.2}", if higher_better { a / h } else { h / a })
            }
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
        "- Both VMs: 1 vCPU, {} MiB, virtio-net-pci on a tap in a network-namespace lab (QEMU q35, {}); one arm: client, VIP and real server on one /24. The appliance: release kernel {} ({} KiB), one layer 7 service (ports {ECHO_PORT}, {IPERF_PORT}), persistence 1 h, timeouts 1 h, and one for the idle connections (port {HOLD_PORT}, round robin over the server's two addresses: one real server address gives the appliance 48 128 source ports). HAProxy: Debian 12's package on Debian's kernel {}, `mode tcp`, `balance source`, `timeout client/server 1h`, `timeout connect 3s`, `retries 2`, `option redispatch`, `nbthread 1`.",
        opts.memory_mib,
        opts.accel.name(),
        opts.kernel.display(),
        std::fs::metadata(&opts.kernel)
            .map(|m| m.len() / 1024)
            .unwrap_or(0),
        debian.version
    )?;
    writeln!(
        md,
        "- Traffic (`tools peer`, from a client namespace to a server namespace): connections/s from {} concurrent clients for {} s; latency of connections started at {}/s for {} s (open loop, from each scheduled start); throughput one iperf3 stream for {} s; memory with {} idle connections held: the appliance's preallocated table bytes per connection plus its heap growth per connection (console `status`), HAProxy's resident-memory growth per connection (VmRSS).",
        opts.concurrency, opts.seconds, opts.rate, opts.seconds, opts.seconds, opts.hold
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
        assert_eq!(rss_kib("[   12.345678] rss 51234"), Some(51234.0));
        assert_eq!(rss_kib("[   12.345678] rss "), None);
        assert!(
            haproxy_cmdline().contains("bench_haproxy=10.233.7.100:7000+7001+5201:10.233.7.21")
        );
    }
}
