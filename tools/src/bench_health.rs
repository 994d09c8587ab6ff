//! `tools bench health`: what HTTPS health checks cost the appliance.
//!
//! One lab: a client, and a web host running Debian's nginx (TLS 1.2,
//! ECDHE-RSA with a 2048-bit RSA certificate, the common hospital case) on
//! `servers` ports plus an iperf3 server. Two boots of the appliance (same
//! accelerator, memory and NIC):
//!
//! 1. baseline: only an SNAT virtual service in front of iperf3 — TCP Gbit/s;
//! 2. loaded: the same, plus HTTPS checks of `servers` real servers every
//!    second (more than the checkers can do, so they run flat out) — the TCP
//!    Gbit/s again while the checks run, and the handshakes/s completed,
//!    counted by nginx (each check is one full handshake and one GET).
//!
//! Beside them, in the same run: OpenSSL's own client (`openssl s_time
//! -new`, what HAProxy's `check-ssl` is built on) making full handshakes
//! against the same nginx from a namespace on the host, natively.

use crate::bench_l4::{cpu_model, host_kernel, iperf3_tcp, load_average, wait_path};
use crate::console::Appliance;
use crate::iperf3::Server as Iperf3Server;
use crate::lab::{Host, Lab};
use crate::qemu::{Accel, Backend, Boot, Machine, Nic};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const NET: &str = "10.232.0";
/// First nginx TLS port; the sites are on consecutive ports.
const TLS_BASE: u16 = 9000;
/// Real servers per virtual service (the config's bound).
const PER_SERVICE: usize = 64;
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Checks run this long before the measurement starts.
const WARM_UP: Duration = Duration::from_secs(10);

pub struct Options {
    pub kernel: PathBuf,
    pub accel: Accel,
    pub memory_mib: u32,
    /// HTTPS real servers checked every second.
    pub servers: usize,
    /// Seconds of each measurement.
    pub seconds: u32,
    /// How the tool was run, for the report.
    pub command: String,
}

fn addr(n: u8) -> String {
    format!("{NET}.{n}")
}

fn certs() -> PathBuf {
    crate::workspace::root().join("lb-core/testdata/health/tls")
}

/// nginx on `count` TLS 1.2 ports (ECDHE-RSA only, RSA certificate).
fn nginx_conf(dir: &Path, bind: &str, count: usize) -> String {
    let c = certs();
    let mut t = format!(
        "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\nhttp {{\n access_log {d}/access.log;\n client_body_temp_path {d}/tmp;\n proxy_temp_path {d}/tmp;\n fastcgi_temp_path {d}/tmp;\n uwsgi_temp_path {d}/tmp;\n scgi_temp_path {d}/tmp;\n server {{\n",
        d = dir.display()
    );
    for i in 0..count {
        let _ = writeln!(t, "  listen {bind}:{} ssl;", TLS_BASE as usize + i);
    }
    let _ = write!(
        t,
        "  ssl_protocols TLSv1.2;\n  ssl_ciphers ECDHE-RSA-AES128-GCM-SHA256;\n  ssl_certificate {c}/rsa.pem;\n  ssl_certificate_key {c}/rsa.key;\n  root {d}/www;\n }}\n}}\n",
        c = c.display(),
        d = dir.display()
    );
    t
}

/// The appliance's config: the iperf3 service, and with `servers > 0` the
/// HTTPS-checked services.
fn appliance_toml(servers: usize) -> String {
    let mut t = format!(
        "[[network.interface]]\nname = \"eth0\"\naddress = \"{}\"\nprefix = 24\n\n[[virtual_service]]\nlabel = \"IPERF\"\nvip = \"{}\"\nports = 5201\nforwarding = \"snat\"\n\n[[virtual_service.real_server]]\nlabel = \"WEB\"\nip = \"{}\"\n",
        addr(2),
        addr(100),
        addr(30)
    );
    for (k, chunk) in (0..servers)
        .collect::<Vec<_>>()
        .chunks(PER_SERVICE)
        .enumerate()
    {
        let _ = write!(
            t,
            "\n[[virtual_service]]\nlabel = \"HTTPS{k}\"\nvip = \"{}\"\nports = 443\nforwarding = \"snat\"\ncheck_type = \"https\"\ncheck_request = \"/health.html\"\ncheck_expect = \"OK\"\ncheck_interval = 1\ncheck_timeout = 1\ncheck_rise = 1\ncheck_fall = 1000\n",
            addr(101 + k as u8)
        );
        for i in chunk {
            let _ = write!(
                t,
                "\n[[virtual_service.real_server]]\nlabel = \"S{i}\"\nip = \"{}\"\nport = {}\n",
                addr(30),
                TLS_BASE as usize + i
            );
        }
    }
    t
}

/// Lines in nginx's access log: one per completed check.
fn requests(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn boot(opts: &Options, work: &Path, lab: &Lab, tap: &str, servers: usize) -> Result<Appliance> {
    let toml = work.join(format!("appliance-{servers}.toml"));
    std::fs::write(&toml, appliance_toml(servers))?;
    let blob = work.join(format!("appliance-{servers}.bin"));
    crate::config_cmd::compile(&toml, &blob)?;
    let mut machine = Machine::new(Boot::Kernel {
        elf: opts.kernel.clone(),
        cmdline: String::new(),
        module: Some(blob),
    });
    machine.accel = opts.accel;
    machine.memory_mib = opts.memory_mib;
    machine.nics.push(Nic::virtio(Backend::Tap {
        ifname: tap.to_string(),
    }));
    let vm = Appliance::boot(&machine, Some(lab))?;
    vm.wait_ready(BOOT_TIMEOUT)?;
    Ok(vm)
}

/// `openssl s_time -new` against one site for `seconds`: full handshakes/s.
fn openssl_handshakes(client: &Host, target: &str, seconds: u32) -> Result<f64> {
    let out = client
        .command(&[
            "timeout",
            &(seconds + 20).to_string(),
            "openssl",
            "s_time",
            "-connect",
            target,
            "-new",
            "-time",
            &seconds.to_string(),
            "-tls1_2",
        ])
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "1234 connections in 5.00s; 246.80 connections/user sec, ..."
    let line = text
        .lines()
        .find(|l| l.contains("connections in") && l.contains("real seconds"))
        .or_else(|| text.lines().find(|l| l.contains("connections in")))
        .with_context(|| format!("no handshake count from openssl s_time: {text}"))?;
    let mut words = line.split_whitespace();
    let n: f64 = words.next().and_then(|w| w.parse().ok()).context("count")?;
    let secs: f64 = line
        .split("connections in ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit() && c != '.').next())
        .and_then(|w| w.parse().ok())
        .filter(|s: &f64| *s > 0.0)
        .context("seconds")?;
    Ok(n / secs)
}

struct Figures {
    base_gbit: f64,
    loaded_gbit: f64,
    handshakes: f64,
    checks_down: usize,
    openssl: f64,
}

pub fn run(opts: &Options) -> Result<String> {
    if opts.servers == 0 || opts.servers > 4 * PER_SERVICE {
        bail!("--servers takes 1..={}", 4 * PER_SERVICE);
    }
    let work = std::env::temp_dir().join(format!("lb-bench-health-{}", std::process::id()));
    std::fs::create_dir_all(work.join("nginx/tmp"))?;
    std::fs::create_dir_all(work.join("nginx/www"))?;
    std::fs::write(work.join("nginx/www/health.html"), "OK\n")?;
    let result = measure(opts, &work);
    let _ = std::fs::remove_dir_all(&work);
    let f = result?;
    Ok(report(opts, &f))
}

fn measure(opts: &Options, work: &Path) -> Result<Figures> {
    let mut lab = Lab::new()?;
    let tap = lab.tap("ext")?;
    let client = lab.host("c0", "ext", &format!("{}/24", addr(11)), None)?;
    let web = lab.host("web", "ext", &format!("{}/24", addr(30)), None)?;
    let nginx_dir = work.join("nginx");
    let conf = nginx_dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&nginx_dir, &web.addr, opts.servers))?;
    let prefix = nginx_dir.display().to_string();
    let conf_s = conf.display().to_string();
    let _nginx = Killed(
        web.command(&["nginx", "-p", &prefix, "-c", &conf_s])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nginx")?,
    );
    let _iperf = Iperf3Server::start(&web, None)?;
    std::thread::sleep(Duration::from_secs(1));
    let access = nginx_dir.join("access.log");
    let scratch = work.join("iperf3.json");
    let vip = addr(100);

    // OpenSSL natively, before any VM runs.
    let openssl = openssl_handshakes(&client, &format!("{}:{TLS_BASE}", web.addr), opts.seconds)?;

    // 1. Baseline.
    let base_gbit = {
        let _vm = boot(opts, work, &lab, &tap, 0)?;
        wait_path(&client, &vip, &scratch)?;
        iperf3_tcp(&client, &vip, opts.seconds, &scratch)?
    };
    // 2. With the HTTPS checks running flat out.
    let vm = boot(opts, work, &lab, &tap, opts.servers)?;
    wait_path(&client, &vip, &scratch)?;
    std::thread::sleep(WARM_UP);
    let (n0, t0) = (requests(&access), Instant::now());
    let loaded_gbit = iperf3_tcp(&client, &vip, opts.seconds, &scratch)?;
    let (n1, t1) = (requests(&access), Instant::now());
    let handshakes = (n1 - n0) as f64 / (t1 - t0).as_secs_f64();
    let checks_down = vm
        .console()
        .lines()
        .filter(|l| l.starts_with("health:") && l.contains(" down"))
        .count();
    Ok(Figures {
        base_gbit,
        loaded_gbit,
        handshakes,
        checks_down,
        openssl,
    })
}

fn report(opts: &Options, f: &Figures) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "## HTTPS health checks: cost while forwarding\n");
    let _ = writeln!(r, "Command: `{}`", opts.command);
    let _ = writeln!(
        r,
        "Machine: {}, Linux {}, load average before: {}; appliance: 1 vCPU, {} MiB, {}, virtio-net.\n",
        cpu_model(),
        host_kernel(),
        load_average(),
        opts.memory_mib,
        opts.accel.name()
    );
    let _ = writeln!(
        r,
        "Real servers: Debian's nginx, TLS 1.2 ECDHE-RSA-AES128-GCM-SHA256, RSA 2048 certificate; {} HTTPS checks due every second (each a full handshake, a GET and a close; `check_tls_verify = \"none\"`, which still verifies the handshake signature). Forwarding: iperf3 TCP through an SNAT VIP, {} s per figure.\n",
        opts.servers, opts.seconds
    );
    let _ = writeln!(r, "| figure | value |");
    let _ = writeln!(r, "|---|---|");
    let _ = writeln!(
        r,
        "| full TLS 1.2 handshakes/s the appliance completes while forwarding | {:.1} |",
        f.handshakes
    );
    let _ = writeln!(
        r,
        "| OpenSSL `s_time -new` handshakes/s on the host, natively (one core, same nginx) | {:.1} |",
        f.openssl
    );
    let _ = writeln!(
        r,
        "| appliance / OpenSSL | {:.3} |",
        f.handshakes / f.openssl.max(f64::MIN_POSITIVE)
    );
    let _ = writeln!(
        r,
        "| TCP Gbit/s through the VIP, no checks | {:.3} |",
        f.base_gbit
    );
    let _ = writeln!(
        r,
        "| TCP Gbit/s through the VIP, checks running | {:.3} |",
        f.loaded_gbit
    );
    let _ = writeln!(
        r,
        "| forwarding kept while checking | {:.0} % |",
        100.0 * f.loaded_gbit / f.base_gbit.max(f64::MIN_POSITIVE)
    );
    let _ = writeln!(
        r,
        "| servers marked down during the run (check failures, e.g. timeouts) | {} |",
        f.checks_down
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appliance_configs_validate() {
        for n in [0, 1, 64, 65, 256] {
            let text = appliance_toml(n);
            let cfg = lb_core::config::from_toml(&text).unwrap_or_else(|e| panic!("{n}: {e}"));
            let servers: usize = cfg
                .virtual_services
                .iter()
                .skip(1)
                .map(|v| v.real_servers.len())
                .sum();
            assert_eq!(servers, n);
        }
    }

    #[test]
    fn nginx_listens_on_every_port() {
        let conf = nginx_conf(Path::new("/x"), "10.0.0.1", 3);
        assert!(conf.contains("listen 10.0.0.1:9002 ssl;"));
        assert!(!conf.contains(":9003"));
    }
}
