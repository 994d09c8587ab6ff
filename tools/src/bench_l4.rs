//! `tools bench l4`: L4 forwarding throughput of the appliance against, in
//! the same run, a stock Debian kernel VM of the same shape (1 vCPU, same
//! NIC model, memory and accelerator) doing plain IP forwarding and IPVS in
//! the same forwarding method, and against the direct path with no VM.
//!
//! Each figure is one bounded iperf3 run from a client namespace to a real
//! server namespace: received packets/s of small UDP datagrams (`-u -l 64
//! -b 0`) and TCP Gbit/s.

use crate::connrate;
use crate::console::Appliance;
use crate::debian::{self, DebianGuest};
use crate::iperf3::{self, PORT, json_number};
use crate::lab::{Host, Lab};
use crate::qemu::{Accel, Backend, Boot, Machine, Nic};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// UDP payload bytes of the small-packet test (a 106-byte Ethernet frame).
const SMALL: u32 = 64;
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a path may take to carry its first iperf3 test after boot.
const PATH_TIMEOUT: Duration = Duration::from_secs(45);

/// Layer 4 forwarding method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Dr,
    Nat,
    Snat,
}

impl Mode {
    pub fn parse(s: &str) -> Result<Mode> {
        Ok(match s {
            "dr" => Mode::Dr,
            "nat" => Mode::Nat,
            "snat" => Mode::Snat,
            other => bail!("unknown forwarding method {other:?} (dr, nat or snat)"),
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Dr => "dr",
            Mode::Nat => "nat",
            Mode::Snat => "snat",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Mode::Dr => "DR",
            Mode::Nat => "NAT",
            Mode::Snat => "SNAT",
        }
    }

    /// `ipvsadm`'s method letter. IPVS has no SNAT method: SNAT is its NAT
    /// method (`-m`) with netfilter masquerading what leaves for the server.
    fn ipvs_method(self) -> Option<&'static str> {
        match self {
            Mode::Dr => Some("g"),
            Mode::Nat | Mode::Snat => Some("m"),
        }
    }

    /// First three octets of the external subnet; NAT's internal one is next.
    fn net(self) -> u8 {
        match self {
            Mode::Dr => 10,
            Mode::Nat => 20,
            Mode::Snat => 30,
        }
    }
}

/// What carries the traffic between client and real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Appliance(Accel),
    LinuxForward,
    LinuxIpvs,
    Direct,
}

/// Addresses of one measurement.
struct Net {
    mode: Mode,
    ext: String,
    int: String,
}

impl Net {
    fn new(mode: Mode) -> Net {
        Net {
            mode,
            ext: format!("10.231.{}", mode.net()),
            int: format!("10.231.{}", mode.net() + 1),
        }
    }
    fn balancer(&self) -> String {
        format!("{}.2", self.ext)
    }
    fn balancer_internal(&self) -> String {
        format!("{}.1", self.int)
    }
    fn vip(&self) -> String {
        format!("{}.100", self.ext)
    }
    fn client(&self) -> String {
        format!("{}.11", self.ext)
    }
    /// Where the SYN flood comes from (its packets carry random sources).
    fn flooder(&self) -> String {
        format!("{}.31", self.ext)
    }
    fn server(&self) -> String {
        let net = if self.mode == Mode::Nat {
            &self.int
        } else {
            &self.ext
        };
        format!("{net}.21")
    }

    /// The appliance's config: one TCP and one UDP virtual service on the
    /// iperf3 port, one real server, no health check (IPVS has none either).
    fn appliance_toml(&self) -> String {
        let mut t = format!(
            "[network]\nhostname = \"l4bench\"\n\n[[network.interface]]\nname = \"eth0\"\naddress = \"{}\"\nprefix = 24\nrole = \"external\"\n",
            self.balancer()
        );
        if self.mode == Mode::Nat {
            t += &format!(
                "\n[[network.interface]]\nname = \"eth1\"\naddress = \"{}\"\nprefix = 24\nrole = \"internal\"\n",
                self.balancer_internal()
            );
        }
        for (proto, ports) in [
            ("tcp", format!("{PORT},{}", connrate::PORT)),
            ("udp", format!("{PORT}")),
        ] {
            t += &format!(
                "\n[[virtual_service]]\nlabel = \"bench-{proto}\"\nvip = \"{}\"\nports = \"{ports}\"\nprotocol = \"{proto}\"\nforwarding = \"{}\"\ncheck_type = \"none\"\n\n[[virtual_service.real_server]]\nlabel = \"RS1\"\nip = \"{}\"\n",
                self.vip(),
                self.mode.name(),
                self.server()
            );
        }
        t
    }

    /// The Debian guest's kernel command line for `side`.
    fn linux_cmdline(&self, side: Side) -> String {
        let mut ips = vec![format!("eth0={}/24", self.balancer())];
        if side == Side::LinuxIpvs {
            // IPVS takes packets in LOCAL_IN: the director owns the VIP.
            ips.push(format!("eth0={}/32", self.vip()));
        }
        if self.mode == Mode::Nat {
            ips.push(format!("eth1={}/24", self.balancer_internal()));
        }
        let mut c = format!(
            "console=ttyS0 quiet panic=-1 bench_forward=1 bench_ip={}",
            ips.join(",")
        );
        if side == Side::LinuxForward && self.mode == Mode::Dr {
            // Plain routing of VIP packets to the server that holds it on lo:
            // the same one-arm, MAC-rewriting path DR takes.
            c += &format!(" bench_route={}/32@{}", self.vip(), self.server());
        }
        if side == Side::LinuxIpvs
            && let Some(m) = self.mode.ipvs_method()
        {
            let rules: Vec<String> = [("t", PORT), ("u", PORT), ("t", connrate::PORT)]
                .iter()
                .map(|(p, port)| format!("{p}:{}:{port}:{}:{m}", self.vip(), self.server()))
                .collect();
            c += &format!(" bench_ipvs={}", rules.join(","));
            if self.mode == Mode::Snat {
                c += " bench_masq=eth0";
            }
        }
        c
    }
}

/// One side's figures.
#[derive(Clone, Copy, Debug)]
struct Figures {
    pps: f64,
    gbps: f64,
    /// Share of a client's new TCP connections that completed during a
    /// spoofed SYN flood at the same target (NaN: not measured).
    served: f64,
    /// Short TCP connections completed per second.
    cps: f64,
}

type Outcome = std::result::Result<Figures, String>;

/// A table row's figure: its name, how to read it and how to print it.
type FigureSpec = (&'static str, fn(&Figures) -> f64, fn(f64) -> String);

/// The row of the figure measured only with `--flood-seconds` above 0.
const FLOOD_FIGURE: &str = "new TCP connections served under a spoofed SYN flood";

/// What `tools bench l4` was asked for.
pub struct Options {
    pub kernel: PathBuf,
    pub accel: Accel,
    pub modes: Vec<Mode>,
    /// Seconds per iperf3 run.
    pub seconds: u32,
    /// Guest memory of both VMs, MiB.
    pub memory_mib: u32,
    /// Runs per figure; the median is reported.
    pub runs: usize,
    /// Also measure the appliance under KVM (an extra column).
    pub also_kvm: bool,
    /// Segmentation and checksum offloads on the NICs and veths (GSO/TSO
    /// frames of 64 KiB cross the taps); off compares frame for frame.
    pub offloads: bool,
    /// QEMU NIC model of both VMs (`virtio-net-pci`, `e1000`, `e1000e`,
    /// `vmxnet3`, `tulip`); offloads apply to virtio-net only.
    pub nic: String,
    /// Seconds of spoofed SYN flood per side for the "under flood" figure
    /// (0: not measured).
    pub flood_seconds: u32,
    /// The command line as typed, for the report.
    pub command: String,
}

/// Runs everything and returns the Markdown report.
pub fn run(opts: &Options) -> Result<String> {
    let work = crate::workspace::root()
        .join("target")
        .join("bench")
        .join("l4-work");
    std::fs::create_dir_all(&work)?;
    let debian = debian::prepare_spec(
        &crate::workspace::root()
            .join("target")
            .join("bench")
            .join("debian"),
        &debian::L4,
    )?;
    let ctx = Ctx {
        opts,
        debian: &debian,
        work: &work,
    };
    let started = Instant::now();
    let load_before = load_average();
    // Every round boots and measures each side once, in turn, so drift in
    // the machine's other load hits all sides alike.
    let mut sides: Vec<(Mode, Side)> = vec![(Mode::Dr, Side::Direct)];
    for &mode in &opts.modes {
        sides.push((mode, Side::Appliance(opts.accel)));
        sides.push((mode, Side::LinuxForward));
        if mode.ipvs_method().is_some() {
            sides.push((mode, Side::LinuxIpvs));
        }
        if opts.also_kvm && opts.accel != Accel::Kvm {
            sides.push((mode, Side::Appliance(Accel::Kvm)));
        }
    }
    let rounds = opts.runs.max(1);
    let mut results: Vec<Vec<Outcome>> = vec![Vec::new(); sides.len()];
    for round in 1..=rounds {
        eprintln!("round {round} of {rounds}:");
        for (i, &(mode, side)) in sides.iter().enumerate() {
            if side == Side::Direct {
                eprint!("  ");
            } else {
                eprint!("  {}, ", mode.title());
            }
            results[i].push(ctx.measure(mode, side));
        }
    }
    let mut partial = Vec::new();
    let mut get = |mode: Mode, side: Side| -> Option<Outcome> {
        let i = sides.iter().position(|&s| s == (mode, side))?;
        let (outcome, note) = combine(&results[i]);
        if let Some(n) = note {
            partial.push(format!("{}, {}: {n}", mode.title(), side_name(side)));
        }
        Some(outcome)
    };
    let direct = get(Mode::Dr, Side::Direct).context("direct path not measured")?;
    let mut rows = Vec::new();
    for &mode in &opts.modes {
        rows.push(Row {
            mode,
            appliance: get(mode, Side::Appliance(opts.accel)).context("appliance not measured")?,
            forward: get(mode, Side::LinuxForward).context("Linux forwarding not measured")?,
            ipvs: get(mode, Side::LinuxIpvs),
            kvm: get(mode, Side::Appliance(Accel::Kvm)).filter(|_| opts.accel != Accel::Kvm),
        });
    }
    let load = (load_before, load_average());
    report(
        opts,
        &debian,
        &direct,
        &rows,
        &partial,
        started.elapsed(),
        load,
    )
}

/// The median of the rounds that worked, and a note when some failed.
fn combine(runs: &[Outcome]) -> (Outcome, Option<String>) {
    let ok: Vec<Figures> = runs
        .iter()
        .filter_map(|r| r.as_ref().ok().copied())
        .collect();
    let first_error = runs.iter().find_map(|r| r.as_ref().err().cloned());
    match first_error {
        None => {}
        Some(e) if ok.is_empty() => return (Err(e), None),
        Some(e) => {
            let failed = runs.len() - ok.len();
            let note = format!("{failed} of {} rounds failed ({e})", runs.len());
            return (Ok(median_figures(&ok)), Some(note));
        }
    }
    (Ok(median_figures(&ok)), None)
}

fn median_figures(v: &[Figures]) -> Figures {
    Figures {
        pps: median(v.iter().map(|f| f.pps).collect()),
        gbps: median(v.iter().map(|f| f.gbps).collect()),
        served: median(v.iter().map(|f| f.served).filter(|s| !s.is_nan()).collect()),
        cps: median(v.iter().map(|f| f.cps).collect()),
    }
}

/// The host's 1-minute load average: other work on the machine skews
/// every figure, so the report states it.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

struct Row {
    mode: Mode,
    appliance: Outcome,
    forward: Outcome,
    ipvs: Option<Outcome>,
    kvm: Option<Outcome>,
}

struct Ctx<'a> {
    opts: &'a Options,
    debian: &'a DebianGuest,
    work: &'a Path,
}

impl Ctx<'_> {
    /// Measures one side, turning a failure into its first line.
    fn measure(&self, mode: Mode, side: Side) -> Outcome {
        let t = Instant::now();
        let what = side_name(side);
        match self.try_measure(mode, side) {
            Ok(f) => {
                eprintln!(
                    "{what}: {:.0} packets/s, {:.3} Gbit/s ({:.0} s)",
                    f.pps,
                    f.gbps,
                    t.elapsed().as_secs_f64()
                );
                Ok(f)
            }
            Err(e) => {
                let text = format!("{e:#}");
                eprintln!("{what} failed: {text}");
                Err(text
                    .split("; console:")
                    .next()
                    .unwrap_or("")
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string())
            }
        }
    }

    fn try_measure(&self, mode: Mode, side: Side) -> Result<Figures> {
        let net = Net::new(mode);
        // Declaration order is drop order reversed: QEMU and iperf3 end
        // before the namespaces go.
        let mut lab = Lab::new()?;
        let with_vm = side != Side::Direct;
        let two_arm = with_vm && mode == Mode::Nat;
        let mut taps = Vec::new();
        if with_vm {
            taps.push(lab.tap("ext")?);
            if two_arm {
                taps.push(lab.tap("int")?);
            }
        }
        let client = lab.host("c", "ext", &format!("{}/24", net.client()), None)?;
        let flooder = lab.host("f", "ext", &format!("{}/24", net.flooder()), None)?;
        let (bridge, gateway) = if two_arm {
            ("int", Some(net.balancer_internal()))
        } else {
            ("ext", None)
        };
        let server = lab.host(
            "s",
            bridge,
            &format!("{}/24", net.server()),
            gateway.as_deref(),
        )?;
        if !self.opts.offloads {
            for host in [&client, &server] {
                host.exec(&[
                    "ethtool", "-K", "eth0", "tso", "off", "gso", "off", "gro", "off",
                ])?;
            }
        }
        let uses_vip = matches!(side, Side::Appliance(_) | Side::LinuxIpvs)
            || (side == Side::LinuxForward && mode == Mode::Dr);
        if uses_vip && mode == Mode::Dr {
            hold_vip_on_loopback(&server, &net.vip())?;
        }
        if side == Side::LinuxForward {
            match mode {
                Mode::Dr => route(&client, &format!("{}/32", net.vip()), &net.balancer())?,
                Mode::Nat => route(&client, &format!("{}.0/24", net.int), &net.balancer())?,
                // One arm, both directions through the VM, as SNAT carries them.
                Mode::Snat => {
                    route(&client, &format!("{}/32", net.server()), &net.balancer())?;
                    route(&server, &format!("{}/32", net.client()), &net.balancer())?;
                }
            }
        }
        let target = if uses_vip { net.vip() } else { net.server() };
        // A DR server's UDP replies must leave from the VIP, which only a
        // socket bound to it guarantees (else routing picks eth0's address).
        let bind = (uses_vip && mode == Mode::Dr).then(|| net.vip());
        let _iperf3 = iperf3::Server::start(&server, bind.as_deref())?;
        let _conn_server = ConnServer::start(&server)?;
        let _vm = match side {
            Side::Direct => None,
            _ => Some(self.boot(&net, side, &lab, &taps)?),
        };
        let scratch = self
            .work
            .join(format!("{}-{}.json", mode.name(), side_file(side)));
        wait_path(&client, &target, &scratch)?;
        let gbps = iperf3_tcp(&client, &target, self.opts.seconds, &scratch)?;
        let pps = iperf3_udp(&client, &target, self.opts.seconds, &scratch)?;
        // Connections/s before the flood: what a flood leaves behind
        // (half-open entries, SNAT ports held) is not in the clean figure.
        let cps = connections(&client, &target, self.opts.seconds)?;
        let served = match self.opts.flood_seconds {
            0 => f64::NAN,
            secs => served_under_flood(&client, &flooder, &target, secs)?,
        };
        Ok(Figures {
            pps,
            gbps,
            served,
            cps,
        })
    }

    /// Boots the appliance or the Debian guest on `taps` and waits until it is up.
    fn boot(&self, net: &Net, side: Side, lab: &Lab, taps: &[String]) -> Result<Appliance> {
        let (boot, accel) = match side {
            Side::Appliance(accel) => {
                let toml = self.work.join(format!("{}.toml", net.mode.name()));
                std::fs::write(&toml, net.appliance_toml())?;
                let blob = self.work.join(format!("{}.bin", net.mode.name()));
                crate::config_cmd::compile(&toml, &blob)?;
                (
                    Boot::Kernel {
                        elf: self.opts.kernel.clone(),
                        cmdline: String::new(),
                        module: Some(blob),
                    },
                    accel,
                )
            }
            _ => (
                Boot::Kernel {
                    elf: self.debian.vmlinuz.clone(),
                    cmdline: net.linux_cmdline(side),
                    module: Some(self.debian.initramfs.clone()),
                },
                self.opts.accel,
            ),
        };
        let mut machine = Machine::new(boot);
        machine.accel = accel;
        machine.memory_mib = self.opts.memory_mib;
        for tap in taps {
            let backend = Backend::Tap {
                ifname: tap.clone(),
            };
            // `--offloads off`: the same offload-less device for both VMs.
            machine.nics.push(if self.opts.nic != "virtio-net-pci" {
                Nic::model(&self.opts.nic, backend)
            } else if self.opts.offloads {
                Nic::virtio(backend)
            } else {
                Nic::virtio_without_offloads(backend)
            });
        }
        let vm = Appliance::boot(&machine, Some(lab))?;
        match side {
            Side::Appliance(_) => {
                vm.wait_ready(BOOT_TIMEOUT)?;
            }
            _ => {
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
}

fn side_name(side: Side) -> String {
    match side {
        Side::Appliance(a) => format!("appliance ({})", a.name()),
        Side::LinuxForward => "Linux forwarding".into(),
        Side::LinuxIpvs => "Linux IPVS".into(),
        Side::Direct => "direct".into(),
    }
}

fn side_file(side: Side) -> String {
    match side {
        Side::Appliance(a) => format!("appliance-{}", a.name()),
        Side::LinuxForward => "forward".into(),
        Side::LinuxIpvs => "ipvs".into(),
        Side::Direct => "direct".into(),
    }
}

/// The DR real server's half of the ARP problem: the VIP on loopback,
/// never announced or answered for on eth0.
fn hold_vip_on_loopback(server: &Host, vip: &str) -> Result<()> {
    server.exec(&["ip", "addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
    for (k, v) in [("arp_ignore", "1"), ("arp_announce", "2")] {
        for dev in ["all", "eth0"] {
            server.exec(&[
                "sysctl",
                "-q",
                "-w",
                &format!("net.ipv4.conf.{dev}.{k}={v}"),
            ])?;
        }
    }
    Ok(())
}

fn route(host: &Host, dest: &str, via: &str) -> Result<()> {
    host.exec(&["ip", "route", "add", dest, "via", via])?;
    Ok(())
}

/// The share of new TCP connections from `client` to `target`'s iperf3
/// port that complete (handshake within 1 s) while `flooder` sends
/// `hping3 --flood --rand-source` SYNs at the same port for `seconds`:
/// one attempt every 50 ms, from the second second of the flood on.
fn served_under_flood(client: &Host, flooder: &Host, target: &str, seconds: u32) -> Result<f64> {
    let port = PORT.to_string();
    // hping3 (nice execs it: the PID is hping3's), ended by its PID below;
    // niced because it shares the host's CPUs with the VM under test (the
    // same for every side).
    let mut flood = flooder
        .command(&[
            "nice",
            "-n",
            "19",
            "hping3",
            "--flood",
            "--rand-source",
            "-S",
            "-p",
            &port,
            target,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting hping3")?;
    std::thread::sleep(Duration::from_secs(1));
    // Attempts that fit in the flood, each taking 50 ms to 1 s.
    let attempts = (seconds.saturating_sub(2) * 10).max(10).to_string();
    let probe = "import socket,sys,time\nt,p,n=sys.argv[1],int(sys.argv[2]),int(sys.argv[3])\nok=0\nfor i in range(n):\n    s=socket.socket()\n    s.settimeout(1.0)\n    try:\n        s.connect((t,p)); ok+=1\n    except OSError:\n        pass\n    finally:\n        s.close()\n    time.sleep(0.05)\nprint(ok, n)\n";
    let started = Instant::now();
    let out = client
        .command(&["python3", "-c", probe, target, &port, &attempts])
        .output();
    std::thread::sleep(Duration::from_secs(u64::from(seconds)).saturating_sub(started.elapsed()));
    let _ = flood.kill();
    let _ = flood.wait();
    let out = out.context("running the connection probe")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace().map(|w| w.parse::<f64>());
    match (words.next(), words.next()) {
        (Some(Ok(ok)), Some(Ok(n))) if n > 0.0 => Ok(ok / n),
        _ => bail!(
            "connection probe said {text:?} ({})",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Waits until a short TCP test through the path succeeds (ARP, boot
/// settling, the balancer's own setup).
pub(crate) fn wait_path(client: &Host, target: &str, scratch: &Path) -> Result<()> {
    let deadline = Instant::now() + PATH_TIMEOUT;
    loop {
        match iperf3::client(client, &["-c", target], 1, scratch) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!("no iperf3 path to {target}")));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// TCP goodput the receiver saw, in Gbit/s.
pub(crate) fn iperf3_tcp(client: &Host, target: &str, seconds: u32, scratch: &Path) -> Result<f64> {
    let json = iperf3::client(client, &["-c", target], seconds, scratch)?;
    let bps = json_number(&json, "sum_received", "bits_per_second")
        .context("no sum_received.bits_per_second in iperf3's report")?;
    Ok(bps / 1e9)
}

/// Small UDP datagrams sent as fast as the client can; packets/s received.
fn iperf3_udp(client: &Host, target: &str, seconds: u32, scratch: &Path) -> Result<f64> {
    let len = SMALL.to_string();
    let json = iperf3::client(
        client,
        &["-c", target, "-u", "-l", &len, "-b", "0"],
        seconds,
        scratch,
    )?;
    let bytes = json_number(&json, "sum_received", "bytes")
        .context("no sum_received.bytes in iperf3's report")?;
    let secs = json_number(&json, "sum_received", "seconds")
        .filter(|s| *s > 0.0)
        .context("no sum_received.seconds in iperf3's report")?;
    Ok(bytes / f64::from(SMALL) / secs)
}

/// `tools peer conn-server` in the real server's namespace, killed on drop.
struct ConnServer(std::process::Child);

impl ConnServer {
    fn start(server: &Host) -> Result<ConnServer> {
        let exe = std::env::current_exe()?.display().to_string();
        let port = connrate::PORT.to_string();
        let child = server
            .command(&[&exe, "peer", "conn-server", "--port", &port])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the connection server")?;
        Ok(ConnServer(child))
    }
}

impl Drop for ConnServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Workers of the connection-rate client: enough to keep a balancer busy
/// while each waits a round trip.
const CONN_WORKERS: usize = 16;

/// Short TCP connections per second through `target` (see [`connrate`]).
fn connections(client: &Host, target: &str, seconds: u32) -> Result<f64> {
    let exe = std::env::current_exe()?.display().to_string();
    let to = format!("{target}:{}", connrate::PORT);
    let (w, s) = (CONN_WORKERS.to_string(), seconds.to_string());
    let out = client
        .command(&[
            "timeout",
            &(seconds + 30).to_string(),
            &exe,
            "peer",
            "conn-client",
            "--target",
            &to,
            "--workers",
            &w,
            "--seconds",
            &s,
        ])
        .output()
        .context("running the connection client")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let counts = connrate::Counts::parse(&text).with_context(|| {
        format!(
            "connection client said: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if counts.done == 0 {
        bail!("no connection through {to} ({} failed)", counts.failed);
    }
    Ok(counts.per_second())
}

pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return 0.0;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn cell(o: &Outcome, figure: fn(&Figures) -> f64, fmt: fn(f64) -> String) -> String {
    match o {
        Ok(f) => fmt(figure(f)),
        Err(_) => "failed¹".into(),
    }
}

fn ratio(ours: &Outcome, theirs: Option<&Outcome>, figure: fn(&Figures) -> f64) -> String {
    match (ours, theirs) {
        (Ok(o), Some(Ok(t))) if figure(t) > 0.0 => format!("{:.2}", figure(o) / figure(t)),
        _ => "—".into(),
    }
}

fn per_second(v: f64) -> String {
    format!("{v:.0}/s")
}

fn kpps(v: f64) -> String {
    format!("{:.1} kpps", v / 1000.0)
}

fn gbit(v: f64) -> String {
    format!("{v:.3} Gbit/s")
}

fn percent(v: f64) -> String {
    if v.is_nan() {
        "not measured".into()
    } else {
        format!("{:.0} %", v * 100.0)
    }
}

fn report(
    opts: &Options,
    debian: &DebianGuest,
    direct: &Outcome,
    rows: &[Row],
    partial: &[String],
    elapsed: Duration,
    load: (String, String),
) -> Result<String> {
    let accel = opts.accel.name();
    let kvm_col = rows.iter().any(|r| r.kvm.is_some());
    let mut md = String::new();
    write!(
        md,
        "| method | figure | appliance ({accel}) | Linux forwarding | Linux IPVS | direct (no VM) | appliance ÷ Linux forwarding | appliance ÷ Linux IPVS | appliance ÷ direct |"
    )?;
    if kvm_col {
        write!(md, " appliance (kvm) |")?;
    }
    writeln!(md)?;
    writeln!(
        md,
        "|---|---|---|---|---|---|---|---|---|{}",
        if kvm_col { "---|" } else { "" }
    )?;
    let figures: [FigureSpec; 4] = [
        ("UDP 64 B received packets/s", |f| f.pps, kpps),
        ("TCP throughput", |f| f.gbps, gbit),
        (FLOOD_FIGURE, |f| f.served, percent),
        ("TCP connections/s", |f| f.cps, per_second),
    ];
    let mut failures: Vec<String> = partial.to_vec();
    let mut note = |what: String, o: &Outcome| {
        if let Err(e) = o {
            failures.push(format!("{what}: {e}"));
        }
    };
    note("direct path".into(), direct);
    for r in rows {
        let m = r.mode.title();
        note(format!("{m}, appliance ({accel})"), &r.appliance);
        note(format!("{m}, Linux forwarding"), &r.forward);
        if let Some(i) = &r.ipvs {
            note(format!("{m}, Linux IPVS"), i);
        }
        if let Some(k) = &r.kvm {
            note(format!("{m}, appliance (kvm)"), k);
        }
    }
    for r in rows {
        for (name, figure, fmt) in figures {
            // `--flood-seconds 0` measured no flood: no row of NaNs.
            if opts.flood_seconds == 0 && name == FLOOD_FIGURE {
                continue;
            }
            let ipvs = match &r.ipvs {
                Some(o) => cell(o, figure, fmt),
                None => "n/a".into(),
            };
            write!(
                md,
                "| {} | {name} | {} | {} | {ipvs} | {} | {} | {} | {} |",
                r.mode.title(),
                cell(&r.appliance, figure, fmt),
                cell(&r.forward, figure, fmt),
                cell(direct, figure, fmt),
                ratio(&r.appliance, Some(&r.forward), figure),
                ratio(&r.appliance, r.ipvs.as_ref(), figure),
                ratio(&r.appliance, Some(direct), figure),
            )?;
            if kvm_col {
                let k = match &r.kvm {
                    Some(o) => cell(o, figure, fmt),
                    None => "—".into(),
                };
                write!(md, " {k} |")?;
            }
            writeln!(md)?;
        }
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
        "- Accelerator: {accel} for the appliance and the Debian VM alike; both get 1 vCPU, {} MiB, {} on taps in a network-namespace lab (QEMU q35).",
        opts.memory_mib, opts.nic
    )?;
    writeln!(
        md,
        "- Appliance: release kernel ELF {} ({} KiB), config compiled from the TOML this bench writes (one TCP and one UDP virtual service on port {PORT}, one real server, no health check).",
        opts.kernel.display(),
        std::fs::metadata(&opts.kernel)
            .map(|m| m.len() / 1024)
            .unwrap_or(0)
    )?;
    writeln!(
        md,
        "- Offloads: {}",
        if opts.offloads {
            "on (QEMU's defaults: with virtio-net both VMs negotiate checksum and TCP segmentation offload both ways, so TCP crosses the taps and veths as 64 KiB GSO/TSO frames; the other NIC models carry MTU frames)"
        } else {
            "off (virtio-net-pci with csum, gso and every tso/ecn/ufo feature off for both VMs; tso, gso and gro off on the client's and server's veths): frame for frame"
        }
    )?;
    writeln!(
        md,
        "- Machine: {} CPUs ({}), host kernel {}, 1-minute load average {} before and {} after (other work shares the CPUs); Debian guest kernel {}.",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model(),
        host_kernel(),
        load.0,
        load.1,
        debian.version
    )?;
    writeln!(
        md,
        "- Each figure: median of {} rounds; a round boots every side afresh and measures them in turn (so drift in the machine's load hits all alike), each with one iperf3 run of {} s per figure from a client namespace to a real server namespace. UDP: `-u -l {SMALL} -b 0`, packets/s the server received; TCP: one stream, receiver's Gbit/s. Ratios above 1 mean the appliance is faster.",
        opts.runs.max(1),
        opts.seconds
    )?;
    writeln!(
        md,
        "- Linux forwarding: the VM routes with `ip_forward=1` and no netfilter rules — DR: client → VIP routed via the VM to the server that holds the VIP on lo (one arm, replies direct); NAT: client → server's internal address routed through the VM's two NICs; SNAT: one arm, both directions routed through the VM. Linux IPVS: `ipvsadm` round robin, `-g` for DR and `-m` for NAT, the VIP on the VM's eth0."
    )?;
    writeln!(
        md,
        "- IPVS has no SNAT method: its SNAT here is NAT (`-m`) on one arm with `net.ipv4.vs.conntrack=1` and an nftables `masquerade` rule on eth0's postrouting, so the server sees the VM's address, as with the appliance."
    )?;
    if opts.flood_seconds > 0 {
        writeln!(
            md,
            "- Under flood: after the iperf3 and connection runs, a third namespace on the client's segment runs `nice -n 19 hping3 --flood --rand-source -S -p {PORT}` (niced: it shares the host's CPUs with the VM) at the same target for {} s (as fast as it can send; random spoofed sources) while the client opens new TCP connections to that port, one every 50 ms, each given 1 s to complete its handshake; the figure is the share that did. The appliance's SYN-flood policy (half-open cap with early drop, per-source limit) against IPVS with its defaults.",
            opts.flood_seconds
        )?;
    }
    if !failures.is_empty() {
        writeln!(md, "- ¹ Failures:")?;
        for f in &failures {
            writeln!(md, "  - {f}")?;
        }
    }
    Ok(md)
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub(crate) fn host_kernel() -> String {
    Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_guest_command_lines() {
        let dr = Net::new(Mode::Dr);
        let c = dr.linux_cmdline(Side::LinuxIpvs);
        assert!(c.contains("bench_ip=eth0=10.231.10.2/24,eth0=10.231.10.100/32"));
        assert!(c.contains(
            "bench_ipvs=t:10.231.10.100:5201:10.231.10.21:g,u:10.231.10.100:5201:10.231.10.21:g"
        ));
        let c = dr.linux_cmdline(Side::LinuxForward);
        assert!(c.contains("bench_route=10.231.10.100/32@10.231.10.21"));
        assert!(!c.contains("bench_ipvs"));
        let nat = Net::new(Mode::Nat);
        let c = nat.linux_cmdline(Side::LinuxIpvs);
        assert!(c.contains("eth1=10.231.21.1/24"));
        assert!(c.contains(":10.231.21.21:m"));
        assert!(!c.contains("bench_masq"));
        let snat = Net::new(Mode::Snat).linux_cmdline(Side::LinuxIpvs);
        assert!(snat.contains(":10.231.30.21:m") && snat.contains("bench_masq=eth0"));
    }

    #[test]
    fn appliance_configs_validate() {
        for mode in [Mode::Dr, Mode::Nat, Mode::Snat] {
            let toml = Net::new(mode).appliance_toml();
            let config = lb_core::config::from_toml(&toml)
                .unwrap_or_else(|e| panic!("{mode:?}: {e}\n{toml}"));
            assert_eq!(config.virtual_services.len(), 2);
        }
    }

    #[test]
    fn rounds_combine_to_medians_with_failures_noted() {
        let f = |pps: f64, gbps: f64| {
            Ok(Figures {
                pps,
                gbps,
                served: f64::NAN,
                cps: pps,
            })
        };
        let (all, note) = combine(&[f(3.0, 0.1), f(1.0, 0.3), f(2.0, 0.2)]);
        let all = all.unwrap();
        assert_eq!((all.pps, all.gbps), (2.0, 0.2));
        assert!(note.is_none());
        let (some, note) = combine(&[f(4.0, 1.0), Err("boot failed".into())]);
        assert_eq!(some.unwrap().pps, 4.0);
        assert_eq!(note.as_deref(), Some("1 of 2 rounds failed (boot failed)"));
        let (none, _) = combine(&[Err("x".into()), Err("y".into())]);
        assert_eq!(none.unwrap_err(), "x");
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }
}
