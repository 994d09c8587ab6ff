//! `tools bench aware`: what DICOM awareness costs. One appliance, three
//! virtual services in front of the same real server (dcmtk `storescp`,
//! one process per association, data received and discarded), driven by
//! the same `storescu` workload from one client namespace:
//!
//! - DICOM-aware layer 7 (`protocol_aware = "dicom"`: the A-ASSOCIATE-RQ is
//!   read before the server is chosen),
//! - plain layer 7 (the server is chosen when the client's handshake
//!   completes),
//! - layer 4 NAT (the real server routes through the appliance).
//!
//! Figures, each service in turn within one boot:
//! - associations/s: `--associations` sequential `storescu` runs of one
//!   small study each (the handshake-time cost of awareness shows here);
//! - MB/s: `--transfers` sequential associations of `--studies` studies of
//!   `--study-kib` KiB each.

use crate::bench_l4::{cpu_model, host_kernel, load_average};
use crate::console::Appliance;
use crate::lab::{Host, Lab};
use crate::qemu::{Accel, Backend, Boot, Machine, Nic};
use anyhow::{Context, Result, bail};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const EXT: &str = "10.233.9";
const INT: &str = "10.233.10";
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// The three services, in report order: label, VIP host number, the
/// service's settings.
const SERVICES: [(&str, u8, &str); 3] = [
    (
        "DICOM-aware layer 7",
        100,
        "forwarding = \"layer7\"\nprotocol_aware = \"dicom\"\n",
    ),
    ("plain layer 7", 101, "forwarding = \"layer7\"\n"),
    ("layer 4 NAT", 102, "forwarding = \"nat\"\n"),
];

pub struct Options {
    pub kernel: PathBuf,
    pub accel: Accel,
    pub memory_mib: u32,
    /// Associations of one small study each (associations/s).
    pub associations: usize,
    /// Associations of the throughput run, and studies in each.
    pub transfers: usize,
    pub studies: usize,
    pub study_kib: usize,
    pub command: String,
}

fn appliance_toml() -> String {
    let mut t = format!(
        "[network]\nhostname = \"awbench\"\n\n[[network.interface]]\nname = \"eth0\"\naddress = \"{EXT}.2\"\nprefix = 24\n\n[[network.interface]]\nname = \"eth1\"\naddress = \"{INT}.1\"\nprefix = 24\nrole = \"internal\"\n"
    );
    for (i, (_, host, settings)) in SERVICES.iter().enumerate() {
        let _ = write!(
            t,
            "\n[[virtual_service]]\nlabel = \"S{i}\"\nvip = \"{EXT}.{host}\"\nports = \"104\"\n{settings}client_timeout = 3600\nserver_timeout = 3600\ncheck_type = \"none\"\n\n[[virtual_service.real_server]]\nlabel = \"PACS\"\nip = \"{INT}.21\"\n"
        );
    }
    t
}

/// One Secondary Capture study of `kib` KiB of pixels, made by dcmtk's
/// `dump2dcm` from a dump (the pixels from `pixels`).
fn write_study(dir: &Path, index: usize, kib: usize, pixels: &Path) -> Result<PathBuf> {
    let dump = dir.join(format!("study{index}.dump"));
    let file = dir.join(format!("study{index}.dcm"));
    let cols = 1024;
    let rows = (kib * 1024).div_ceil(cols);
    std::fs::write(
        &dump,
        format!(
            "(0008,0016) UI =SecondaryCaptureImageStorage\n\
             (0008,0018) UI [1.2.826.0.1.3680043.9.7133.3.{index}]\n\
             (0008,0060) CS [OT]\n\
             (0010,0010) PN [BENCH^AWARE]\n\
             (0010,0020) LO [BENCH{index}]\n\
             (0020,000d) UI [1.2.826.0.1.3680043.9.7133.1.{index}]\n\
             (0020,000e) UI [1.2.826.0.1.3680043.9.7133.2.{index}]\n\
             (0028,0002) US 1\n\
             (0028,0004) CS [MONOCHROME2]\n\
             (0028,0010) US {rows}\n\
             (0028,0011) US {cols}\n\
             (0028,0100) US 8\n\
             (0028,0101) US 8\n\
             (0028,0102) US 7\n\
             (0028,0103) US 0\n\
             (7fe0,0010) OB ={}\n",
            pixels.display()
        ),
    )?;
    let out = std::process::Command::new("dump2dcm")
        .arg("+te")
        .arg(&dump)
        .arg(&file)
        .output()
        .context("running dump2dcm (dcmtk)")?;
    if !out.status.success() {
        bail!("dump2dcm: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(file)
}

/// `storescu` of `files` through `vip` in one association; fails when the
/// store does.
fn store(client: &Host, vip: &str, files: &[PathBuf]) -> Result<()> {
    let mut argv: Vec<String> = [
        "storescu", "-aec", "PACS", "-to", "20", "-ta", "20", vip, "104",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(files.iter().map(|f| f.display().to_string()));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = client.command(&refs).output()?;
    if !out.status.success() {
        bail!(
            "storescu through {vip}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// One service's figures: associations/s, MB/s.
fn measure(
    opts: &Options,
    client: &Host,
    vip: &str,
    small: &Path,
    big: &[PathBuf],
) -> Result<(f64, f64)> {
    // Warm-up: ARP, the server's first fork.
    store(client, vip, &[small.to_path_buf()])?;
    let t = Instant::now();
    for _ in 0..opts.associations {
        store(client, vip, &[small.to_path_buf()])?;
    }
    let per_s = opts.associations as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for _ in 0..opts.transfers {
        store(client, vip, big)?;
    }
    let bytes: u64 = big
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum::<u64>()
        * opts.transfers as u64;
    let mb_s = bytes as f64 / 1e6 / t.elapsed().as_secs_f64();
    Ok((per_s, mb_s))
}

/// The real server: storescp, one process per association, discarding
/// what it receives (`--ignore`), killed by PID on drop.
struct Pacs(Child);

impl Drop for Pacs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn run(opts: &Options) -> Result<String> {
    let work = crate::workspace::root()
        .join("target")
        .join("bench")
        .join("aware-work");
    std::fs::create_dir_all(&work)?;
    let pixels = work.join("pixels.raw");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..opts.study_kib.max(4) * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&pixels, &noise)?;
    let small_pixels = work.join("small.raw");
    std::fs::write(&small_pixels, &noise[..4096])?;
    let small = write_study(&work, 0, 4, &small_pixels)?;
    let big = (1..=opts.studies.max(1))
        .map(|i| write_study(&work, i, opts.study_kib, &pixels))
        .collect::<Result<Vec<_>>>()?;

    let started = Instant::now();
    let load_before = load_average();
    let mut lab = Lab::new()?;
    let ext = lab.tap("ext")?;
    let int = lab.tap("int")?;
    let client = lab.host("c", "ext", &format!("{EXT}.11/24"), None)?;
    let server = lab.host(
        "s",
        "int",
        &format!("{INT}.21/24"),
        Some(&format!("{INT}.1")),
    )?;
    let pacs = Pacs(
        server
            .command(&["storescp", "--fork", "--ignore", "-aet", "PACS", "104"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(work.join("storescp.log"))?)
            .stderr(Stdio::null())
            .spawn()
            .context("starting storescp")?,
    );
    let toml = work.join("aware.toml");
    std::fs::write(&toml, appliance_toml())?;
    let blob = work.join("aware.bin");
    crate::config_cmd::compile(&toml, &blob)?;
    let mut machine = Machine::new(Boot::Kernel {
        elf: opts.kernel.clone(),
        cmdline: String::new(),
        module: Some(blob),
    });
    machine.accel = opts.accel;
    machine.memory_mib = opts.memory_mib;
    for ifname in [ext, int] {
        machine.nics.push(Nic::virtio(Backend::Tap { ifname }));
    }
    let vm = Appliance::boot(&machine, Some(&lab))?;
    vm.wait_ready(BOOT_TIMEOUT)?;
    let mut rows = Vec::new();
    for (label, host, _) in SERVICES {
        let vip = format!("{EXT}.{host}");
        let t = Instant::now();
        let r = measure(opts, &client, &vip, &small, &big);
        match &r {
            Ok((a, m)) => eprintln!(
                "  {label}: {a:.1} associations/s, {m:.1} MB/s ({:.0} s)",
                t.elapsed().as_secs_f64()
            ),
            Err(e) => eprintln!("  {label} failed: {e:#}"),
        }
        rows.push((label, r.map_err(|e| format!("{e:#}"))));
    }
    drop(vm);
    drop(pacs);
    report(
        opts,
        &rows,
        started.elapsed(),
        (load_before, load_average()),
    )
}

type Row = (&'static str, std::result::Result<(f64, f64), String>);

fn report(
    opts: &Options,
    rows: &[Row],
    elapsed: Duration,
    load: (String, String),
) -> Result<String> {
    let mut r = String::new();
    writeln!(
        r,
        "# DICOM awareness: aware layer 7 vs plain layer 7 vs layer 4 NAT\n"
    )?;
    writeln!(r, "Command: `{}`\n", opts.command)?;
    writeln!(
        r,
        "Machine: {}, host kernel {}; appliance {} MiB, 1 vCPU, virtio-net, {:?}; load average {} before, {} after; {:.0} s in all.\n",
        cpu_model(),
        host_kernel(),
        opts.memory_mib,
        opts.accel,
        load.0,
        load.1,
        elapsed.as_secs_f64()
    )?;
    writeln!(
        r,
        "Workload: storescu from one client namespace to storescp (--fork, --ignore) behind the appliance; associations/s over {} associations of one 4 KiB study; MB/s over {} associations of {} studies of {} KiB.\n",
        opts.associations, opts.transfers, opts.studies, opts.study_kib
    )?;
    writeln!(r, "| service | associations/s | vs L4 | MB/s | vs L4 |")?;
    writeln!(r, "|---|---|---|---|---|")?;
    let l4 = rows.last().and_then(|(_, x)| x.as_ref().ok()).copied();
    for (label, x) in rows {
        match x {
            Ok((a, m)) => {
                let ratio = |v: f64, base: Option<f64>| {
                    base.filter(|b| *b > 0.0)
                        .map_or("".to_string(), |b| format!("{:.2}x", v / b))
                };
                writeln!(
                    r,
                    "| {label} | {a:.1} | {} | {m:.1} | {} |",
                    ratio(*a, l4.map(|l| l.0)),
                    ratio(*m, l4.map(|l| l.1))
                )?;
            }
            Err(e) => writeln!(
                r,
                "| {label} | failed: {} | | | |",
                e.lines().next().unwrap_or("")
            )?,
        }
    }
    Ok(r)
}
