//! `tools`: the appliance's host command-line tool.

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use tools::image::{self, Profile};
use tools::qemu::{Accel, Backend, Boot, Forward, Machine, Nic, Serial};
use tools::{config_cmd, disk_cmd, mgmt_cmd, setup, workspace};

#[derive(Parser)]
#[command(
    name = "tools",
    version,
    about = "Build, run, test and configure the load-balancer appliance"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build target/appliance/kernel.elf and target/appliance/appliance.iso.
    Build {
        /// Build the kernel without optimisations.
        #[arg(long)]
        debug: bool,
    },
    /// Build and boot the appliance in QEMU with the console on this terminal.
    Run {
        /// Kernel command line (network settings for a first boot).
        #[arg(long, default_value = "ip=10.0.2.15/24 gw=10.0.2.2")]
        cmdline: String,
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 64)]
        memory: u32,
        /// Boot the ISO instead of the kernel ELF: bios or uefi.
        #[arg(long)]
        iso: Option<String>,
        /// A TOML config to compile and hand to the appliance as its boot
        /// module (without it: the demo, see --no-demo).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Boot the embedded factory default (no services) instead of the
        /// demo (two PACS on this machine balanced by lb-core/configs/demo.toml).
        #[arg(long)]
        no_demo: bool,
    },
    /// Check or compile a configuration file.
    Config {
        #[command(subcommand)]
        which: ConfigCmd,
    },
    /// Make or fill the appliance's config disk (a raw image).
    Disk {
        #[command(subcommand)]
        which: DiskCmd,
    },
    /// Make an administrator key pair: PREFIX.key (private, mode 0600) and
    /// PREFIX.pub (goes into management.admin_keys).
    Keygen {
        #[arg(short, long, default_value = "admin")]
        output: PathBuf,
    },
    /// Sign a config and upload it; exit status 0 only when it was applied.
    Upload {
        #[command(flatten)]
        to: SignedTo,
        config: PathBuf,
    },
    /// Apply the previous stored config again (signed, with a new serial).
    Rollback {
        #[command(flatten)]
        to: SignedTo,
    },
    /// Set a real server online, drain it (no new connections) or halt it.
    Rs {
        #[arg(value_parser = ["online", "drain", "halt"])]
        state: String,
        #[command(flatten)]
        to: SignedTo,
        /// SERVICE/SERVER, e.g. DICOM-Modalities/DICOM1.
        server: String,
    },
    /// Send a request prepared with `--sign-only` (the file's bytes as they are).
    Send {
        /// HOST[:PORT] of the appliance's command port (default 9081).
        #[arg(long)]
        to: String,
        file: PathBuf,
    },
    /// Show the appliance's status (the console's `status`) over the network.
    Status {
        /// HOST[:PORT] of the appliance's HTTP port (default 9080).
        #[arg(long)]
        to: String,
    },
    /// Show the appliance's recent events.
    Logs {
        /// HOST[:PORT] of the appliance's HTTP port (default 9080).
        #[arg(long)]
        from: String,
    },
    /// Benchmarks, side by side with the incumbent in one run.
    Bench {
        #[command(subcommand)]
        which: BenchCmd,
    },
    /// Traffic peers the benchmarks (`bench l4`, `bench l7`) run inside the lab's namespaces.
    #[command(hide = true)]
    Peer {
        #[command(subcommand)]
        which: PeerCmd,
    },
    /// Install what the tests need, then run the whole test suite.
    Test {
        /// Also run the long tests (floods, soaks: `#[ignore = "long: ..."]`).
        #[arg(long)]
        long: bool,
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand)]
enum PeerCmd {
    /// Answer 64-byte requests with 64-byte responses.
    Serve {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 600)]
        lifetime: u64,
    },
    /// Accept connections and keep them, idle.
    Sink {
        #[arg(long)]
        port: u16,
        #[arg(long, default_value_t = 600)]
        lifetime: u64,
    },
    /// Short connections as fast as possible.
    Rate {
        target: std::net::SocketAddr,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        concurrency: usize,
    },
    /// Short connections at a fixed rate, with their latency.
    Latency {
        target: std::net::SocketAddr,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        rate: f64,
    },
    /// Open and hold idle connections.
    Hold {
        target: std::net::SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        seconds: f64,
    },
    /// Answer each TCP connection with one byte, then close it.
    ConnServer {
        #[arg(long)]
        port: u16,
        /// Seconds before the server exits by itself.
        #[arg(long, default_value_t = 600)]
        lifetime: u64,
    },
    /// Open short connections for a while and print how many completed.
    ConnClient {
        /// ADDRESS:PORT
        #[arg(long)]
        target: std::net::SocketAddr,
        #[arg(long, default_value_t = 16)]
        workers: usize,
        #[arg(long, default_value_t = 5.0)]
        seconds: f64,
    },
}

/// Where a signed request goes and who signs it.
#[derive(clap::Args)]
struct SignedTo {
    /// HOST[:PORT] of the appliance's command port (default 9081).
    #[arg(long)]
    to: String,
    /// The private key file written by `tools keygen`.
    #[arg(long)]
    key: PathBuf,
    /// The appliance's HTTP port, where the running serial is read (default 9080).
    #[arg(long)]
    http_port: Option<u16>,
    /// The request's serial (default: the time in microseconds, or the
    /// running serial + 1 if that is higher).
    #[arg(long)]
    serial: Option<u64>,
    /// Write the signed request to this file instead of sending it (send
    /// it later with `tools send`); nothing is asked of the appliance.
    #[arg(long)]
    sign_only: Option<PathBuf>,
    /// With --sign-only: the hostname of the appliance it is for (default:
    /// any appliance holding the key).
    #[arg(long)]
    appliance: Option<String>,
}

impl SignedTo {
    /// Signs and sends `action`; prints the answer; fails unless applied.
    fn send(&self, action: lb_core::mgmt::request::Action) -> Result<()> {
        let key = mgmt_cmd::load_key(&self.key)?;
        if let Some(out) = &self.sign_only {
            let req = lb_core::mgmt::request::Request {
                serial: self.serial.unwrap_or_else(mgmt_cmd::now_serial),
                appliance: self.appliance.clone().unwrap_or_default(),
                action,
            };
            std::fs::write(out, mgmt_cmd::signed_frame(&key, &req))?;
            println!("{}: signed request, serial {}", out.display(), req.serial);
            return Ok(());
        }
        let target = mgmt_cmd::Target::new(&self.to, self.http_port, self.serial)?;
        let reply = target.request(&key, action)?;
        if !mgmt_cmd::report(&reply) {
            std::process::exit(1);
        }
        Ok(())
    }
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Parse and validate a TOML config; print every problem with its field.
    Check { file: PathBuf },
    /// Compile a TOML config to the appliance's postcard blob.
    Compile {
        file: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Print every virtual service's effective values: presets and
    /// defaults filled in, as the appliance will run them.
    Explain { file: PathBuf },
}

#[derive(Subcommand)]
enum DiskCmd {
    /// Create a raw disk image holding an empty config store.
    Create {
        file: PathBuf,
        /// Size in MiB.
        #[arg(long, default_value_t = tools::disk_cmd::DEFAULT_SIZE_MIB)]
        size: u64,
    },
    /// Save a TOML config into the image's store (the appliance boots with it).
    Write { file: PathBuf, config: PathBuf },
    /// Show the image's store and the config the appliance would boot with.
    Show { file: PathBuf },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// HTTPS health checks: full TLS handshakes/s the appliance completes
    /// while forwarding, the forwarding it keeps, and OpenSSL natively.
    Health {
        /// Accelerator of the appliance.
        #[arg(long, default_value = "tcg")]
        accel: String,
        /// HTTPS real servers checked every second (up to 256).
        #[arg(long, default_value_t = 128)]
        servers: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 20)]
        seconds: u32,
        /// Memory of the appliance in MiB.
        #[arg(long, default_value_t = 64)]
        memory: u32,
    },
    /// Boot time, first ping, image size and smallest RAM against a Debian kernel.
    Boot {
        /// Boots per guest and accelerator.
        #[arg(long, default_value_t = 10)]
        boots: usize,
        /// Accelerators to compare under (both sides always share one).
        #[arg(long, value_delimiter = ',', default_value = "kvm,tcg")]
        accel: Vec<String>,
    },
    /// L4 forwarding (DR, NAT, SNAT) against a Debian VM forwarding and doing
    /// IPVS, and the direct path; packets/s and Gbit/s with iperf3.
    L4 {
        /// Accelerator of both VMs (a stock Debian kernel hangs under KVM-PVM).
        #[arg(long, default_value = "tcg")]
        accel: String,
        /// Forwarding methods to measure.
        #[arg(long, value_delimiter = ',', default_value = "dr,nat,snat")]
        modes: Vec<String>,
        /// Seconds per iperf3 run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Memory of both VMs in MiB.
        #[arg(long, default_value_t = 256)]
        memory: u32,
        /// Rounds; each boots every side afresh and measures each figure once
        /// (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Also measure the appliance under KVM (an extra column).
        #[arg(long)]
        also_kvm: bool,
        /// NIC checksum/segmentation offloads: on (QEMU's default) or off.
        #[arg(long, default_value = "on")]
        offloads: String,
        /// QEMU NIC model of both VMs: virtio-net-pci, e1000, e1000e,
        /// vmxnet3 or tulip.
        #[arg(long, default_value = "virtio-net-pci")]
        nic: String,
        /// Appliance kernel ELF to measure instead of building one.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Seconds of spoofed SYN flood per side for the "under flood"
        /// figure (0 skips it).
        #[arg(long, default_value_t = 10)]
        flood_seconds: u32,
    },
    /// Layer 7 TCP mode against HAProxy (TCP mode) in a Debian VM:
    /// connections/s, Gbit/s, latency, memory per idle connection.
    L7 {
        /// Accelerator of both VMs (a stock Debian kernel hangs under KVM-PVM).
        #[arg(long, default_value = "tcg")]
        accel: String,
        /// Seconds per figure.
        #[arg(long, default_value_t = 10)]
        seconds: u32,
        /// Memory of both VMs in MiB.
        #[arg(long, default_value_t = 256)]
        memory: u32,
        /// Rounds (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Concurrent clients of the connections/s run.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Connections per second of the latency run.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// Idle connections of the memory run (spread over four ports and
        /// as many holder processes: this host allows 20 000 descriptors
        /// per process).
        #[arg(long, default_value_t = 50_000)]
        hold: usize,
        /// Memory of the appliance's VM in MiB for the memory run (booted
        /// afresh for it): the "50 000 connections in 64 MiB".
        #[arg(long, default_value_t = 64)]
        hold_memory: u32,
        /// Memory of HAProxy's VM in MiB for the memory run: enough that
        /// its kernel's socket memory is not the limit.
        #[arg(long, default_value_t = 1024)]
        haproxy_hold_memory: u32,
        /// Appliance kernel ELF to measure instead of building one.
        #[arg(long)]
        kernel: Option<PathBuf>,
    },
    /// DICOM-aware layer 7 against plain layer 7 and layer 4 NAT on the
    /// same storescu workload: associations/s and MB/s.
    Aware {
        /// Accelerator of the appliance.
        #[arg(long, default_value = "tcg")]
        accel: String,
        /// Memory of the appliance in MiB.
        #[arg(long, default_value_t = 64)]
        memory: u32,
        /// Associations of one small study each (associations/s).
        #[arg(long, default_value_t = 40)]
        associations: usize,
        /// Associations of the throughput run.
        #[arg(long, default_value_t = 4)]
        transfers: usize,
        /// Studies per association of the throughput run.
        #[arg(long, default_value_t = 10)]
        studies: usize,
        /// Size of each of those studies, KiB.
        #[arg(long, default_value_t = 1024)]
        study_kib: usize,
        /// Appliance kernel ELF to measure instead of building one.
        #[arg(long)]
        kernel: Option<PathBuf>,
    },
}

/// Host TCP ports forwarded to the appliance by `run` (host 127.0.0.1:port).
const RUN_FORWARDS: &[(u16, u16)] = &[(9080, 9080), (9081, 9081)];

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Build { debug } => {
            let images = image::build_all(if debug {
                Profile::Debug
            } else {
                Profile::Release
            })?;
            println!("kernel: {}", images.kernel.display());
            println!("iso:    {}", images.iso.display());
            let d = &images.disks;
            println!("raw:    {}", d.raw.display());
            println!("qcow2:  {}", d.qcow2.display());
            println!("vmdk:   {}", d.vmdk.display());
            println!("ova:    {}", d.ova.display());
            println!("vhdx:   {}", d.vhdx.display());
        }
        Cmd::Run {
            cmdline,
            memory,
            iso,
            config,
            no_demo,
        } => run(cmdline, memory, iso, config, no_demo)?,
        Cmd::Test { long, args } => test(long, args)?,
        Cmd::Config {
            which: ConfigCmd::Check { file },
        } => {
            let config = config_cmd::load(&file)?;
            println!(
                "{}: valid, {} virtual service(s)",
                file.display(),
                config.virtual_services.len()
            );
            print!("{}", config_cmd::summary(&config));
        }
        Cmd::Config {
            which: ConfigCmd::Explain { file },
        } => {
            let config = config_cmd::load(&file)?;
            print!("{}", config_cmd::explain(&config)?);
        }
        Cmd::Config {
            which: ConfigCmd::Compile { file, output },
        } => {
            let bytes = config_cmd::compile(&file, &output)?;
            println!("{}: {bytes} bytes", output.display());
        }
        Cmd::Disk {
            which: DiskCmd::Create { file, size },
        } => {
            disk_cmd::create(&file, size)?;
            println!("{}: {size} MiB, empty config store", file.display());
        }
        Cmd::Disk {
            which: DiskCmd::Write { file, config },
        } => {
            let config = config_cmd::load(&config)?;
            println!("{}", disk_cmd::write(&file, &config)?);
        }
        Cmd::Disk {
            which: DiskCmd::Show { file },
        } => {
            let shown = disk_cmd::show(&file)?;
            print!("{}", shown.status);
            match shown.config {
                Some((loaded, config)) => {
                    println!(
                        "boots with slot {} (sequence {}): hostname {}, {} virtual service(s)",
                        loaded.slot.name(),
                        loaded.sequence,
                        config.network.hostname,
                        config.virtual_services.len()
                    );
                    print!("{}", config_cmd::summary(&config));
                }
                None => println!("no stored config: the appliance boots without one"),
            }
        }
        Cmd::Keygen { output } => {
            let (private, public) = mgmt_cmd::keygen(&output)?;
            println!("private key: {} (keep it; mode 0600)", private.display());
            println!("public key:  {}", public.display());
            print!(
                "add it to the config's [management] admin_keys:\n  {}",
                std::fs::read_to_string(&public)?
            );
        }
        Cmd::Upload { to, config } => to.send(mgmt_cmd::upload_action(&config)?)?,
        Cmd::Rollback { to } => to.send(lb_core::mgmt::request::Action::Rollback)?,
        Cmd::Rs { state, to, server } => to.send(mgmt_cmd::state_action(&state, &server)?)?,
        Cmd::Send { to, file } => {
            let bytes = std::fs::read(&file)?;
            let addr = mgmt_cmd::address(&to, lb_core::mgmt::COMMAND_PORT)?;
            let reply = mgmt_cmd::send_raw(addr, &bytes)?;
            if !mgmt_cmd::report(&reply) {
                std::process::exit(1);
            }
        }
        Cmd::Status { to } => {
            let http = mgmt_cmd::address(&to, lb_core::mgmt::HTTP_PORT)?;
            print!("{}", mgmt_cmd::status_text(&mgmt_cmd::fetch_status(http)?));
        }
        Cmd::Logs { from } => {
            let http = mgmt_cmd::address(&from, lb_core::mgmt::HTTP_PORT)?;
            for e in mgmt_cmd::fetch_events(http)? {
                println!("{}", lb_core::mgmt::events::console_line(&e));
            }
        }
        Cmd::Bench {
            which: BenchCmd::Boot { boots, accel },
        } => {
            setup::ensure(&[setup::BUILD, setup::RUN, setup::TEST])?;
            let accels = accel
                .iter()
                .map(|a| parse_accel(a))
                .collect::<Result<Vec<_>>>()?;
            let kernel = image::build_kernel(Profile::Release)?;
            let report = tools::bench_boot::run(kernel, boots, &accels)?;
            write_report("boot.md", &report)?;
        }
        Cmd::Bench {
            which:
                BenchCmd::Health {
                    accel,
                    servers,
                    seconds,
                    memory,
                },
        } => {
            let (accel, kernel, command) = bench_prelude(&accel, None)?;
            let report = tools::bench_health::run(&tools::bench_health::Options {
                kernel,
                accel,
                memory_mib: memory,
                servers,
                seconds,
                command,
            })?;
            write_report("health.md", &report)?;
        }
        Cmd::Bench {
            which:
                BenchCmd::L4 {
                    accel,
                    modes,
                    seconds,
                    memory,
                    runs,
                    also_kvm,
                    offloads,
                    nic,
                    kernel,
                    flood_seconds,
                },
        } => {
            let offloads = match offloads.as_str() {
                "on" => true,
                "off" => false,
                other => bail!("--offloads takes on or off, not {other:?}"),
            };
            let modes = modes
                .iter()
                .map(|m| tools::bench_l4::Mode::parse(m))
                .collect::<Result<Vec<_>>>()?;
            let (accel, kernel, command) = bench_prelude(&accel, kernel)?;
            let report = tools::bench_l4::run(&tools::bench_l4::Options {
                kernel,
                accel,
                modes,
                seconds,
                memory_mib: memory,
                runs,
                also_kvm,
                offloads,
                nic,
                flood_seconds,
                command,
            })?;
            write_report("l4.md", &report)?;
        }
        Cmd::Bench {
            which:
                BenchCmd::L7 {
                    accel,
                    seconds,
                    memory,
                    runs,
                    concurrency,
                    rate,
                    hold,
                    hold_memory,
                    haproxy_hold_memory,
                    kernel,
                },
        } => {
            let (accel, kernel, command) = bench_prelude(&accel, kernel)?;
            let report = tools::bench_l7::run(&tools::bench_l7::Options {
                kernel,
                accel,
                seconds,
                memory_mib: memory,
                runs,
                concurrency,
                rate,
                hold,
                hold_memory_mib: hold_memory,
                haproxy_hold_memory_mib: haproxy_hold_memory,
                command,
            })?;
            write_report("l7.md", &report)?;
        }
        Cmd::Bench {
            which:
                BenchCmd::Aware {
                    accel,
                    memory,
                    associations,
                    transfers,
                    studies,
                    study_kib,
                    kernel,
                },
        } => {
            let (accel, kernel, command) = bench_prelude(&accel, kernel)?;
            let report = tools::bench_aware::run(&tools::bench_aware::Options {
                kernel,
                accel,
                memory_mib: memory,
                associations,
                transfers,
                studies,
                study_kib,
                command,
            })?;
            write_report("aware.md", &report)?;
        }
        Cmd::Peer { which } => peer(which)?,
    }
    Ok(())
}

/// What every VM benchmark starts with: its tools installed, the
/// accelerator, the appliance kernel (the one given, else a release
/// build), and the command line as the README runs it, for the report.
fn bench_prelude(accel: &str, kernel: Option<PathBuf>) -> Result<(Accel, PathBuf, String)> {
    setup::ensure(&[setup::BUILD, setup::RUN, setup::TEST, setup::BENCH])?;
    let accel = parse_accel(accel)?;
    let kernel = match kernel {
        Some(k) => k,
        None => image::build_kernel(Profile::Release)?,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = format!("cargo run -p tools --release -- {}", args.join(" "));
    Ok((accel, kernel, command))
}

fn peer(which: PeerCmd) -> Result<()> {
    use std::time::Duration;
    use tools::loadgen;
    match which {
        PeerCmd::Serve { port, lifetime } => loadgen::serve(port, Duration::from_secs(lifetime)),
        PeerCmd::Sink { port, lifetime } => loadgen::sink(port, Duration::from_secs(lifetime)),
        PeerCmd::Rate {
            target,
            seconds,
            concurrency,
        } => loadgen::rate(target, seconds, concurrency),
        PeerCmd::Latency {
            target,
            seconds,
            rate,
        } => loadgen::latency(target, seconds, rate),
        PeerCmd::Hold {
            target,
            count,
            seconds,
        } => loadgen::hold(&[target], count, seconds),
        PeerCmd::ConnServer { port, lifetime } => {
            tools::connrate::serve(port, Duration::from_secs(lifetime))
        }
        PeerCmd::ConnClient {
            target,
            workers,
            seconds,
        } => {
            println!(
                "{}",
                tools::connrate::client(target, workers, seconds).line()
            );
            Ok(())
        }
    }
}

fn run(
    cmdline: String,
    memory: u32,
    iso: Option<String>,
    config: Option<PathBuf>,
    no_demo: bool,
) -> Result<()> {
    setup::ensure(&[setup::BUILD, setup::RUN])?;
    let mut images = image::build_all(Profile::Release)?;
    let mut forwards: Vec<Forward> = RUN_FORWARDS
        .iter()
        .map(|&(h, g)| Forward::port(h, g))
        .collect();
    let mut demo = None;
    let module = match &config {
        Some(file) => {
            let blob = workspace::appliance_dir().join("config.bin");
            config_cmd::compile(file, &blob)?;
            eprintln!(
                "run: config {} compiled to {}",
                file.display(),
                blob.display()
            );
            Some(blob)
        }
        None if no_demo => None,
        None => {
            setup::ensure(&[setup::DEMO])?;
            let d = tools::demo::Demo::start()?;
            forwards = tools::demo::forwards();
            let m = d.module.clone();
            demo = Some(d);
            Some(m)
        }
    };
    if iso.is_some() && module.is_some() {
        // The ISO carries the config as a GRUB module, with the command line.
        let iso_path = workspace::appliance_dir().join("appliance-config.iso");
        image::build_iso(&images.kernel, &iso_path, &cmdline, module.as_deref())?;
        images.iso = iso_path;
    }
    let boot = match iso.as_deref() {
        None => Boot::Kernel {
            elf: images.kernel,
            cmdline,
            module,
        },
        Some("bios") => Boot::IsoBios(images.iso),
        Some("uefi") => {
            setup::ensure(&[setup::TEST])?;
            Boot::IsoUefi(images.iso)
        }
        Some(other) => bail!("--iso takes bios or uefi, not {other:?}"),
    };
    let mut machine = Machine::new(boot);
    machine.memory_mib = memory;
    machine.serial = Serial::Terminal;
    machine.nics.push(Nic::virtio(Backend::User { forwards }));
    if let Some(d) = &demo {
        eprint!("{}", d.instructions());
    }
    eprintln!(
        "run: booting under {} with {memory} MiB; console below (Ctrl-A X quits QEMU)",
        machine.accel.name()
    );
    let status = machine.command().status()?;
    // The demo's PACS stop with QEMU.
    drop(demo);
    // isa-debug-exit turns the guest's power-off code into QEMU's exit status.
    if !status.success() && status.code() != Some(1) {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}

fn test(long: bool, args: Vec<String>) -> Result<()> {
    setup::ensure(&[setup::BUILD, setup::RUN, setup::TEST])?;
    setup::ensure_python(setup::PYTHON)?;
    // The kernel lint below needs the bare-metal target before any build does.
    setup::ensure_rust_target()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let step = |what: &str, args: &[&str]| -> Result<()> {
        eprintln!("test: {what}");
        let status = Command::new(&cargo)
            .current_dir(workspace::root())
            .args(args)
            .status()?;
        if !status.success() {
            bail!("{what} failed ({status})");
        }
        Ok(())
    };
    step("formatting", &["fmt", "--all", "--", "--check"])?;
    step(
        "lints (host crates)",
        &["clippy", "--all-targets", "--", "-D", "warnings"],
    )?;
    step(
        "lints (kernel)",
        &[
            "clippy",
            "-p",
            "kernel",
            "--target",
            "x86_64-unknown-none",
            "--",
            "-D",
            "warnings",
        ],
    )?;
    let images = image::build_all(Profile::Release)?;
    eprintln!(
        "test: images at {} and {}",
        images.kernel.display(),
        images.iso.display()
    );
    // Every test binary runs even after one fails, so a run shows every
    // failure, not the first.
    let mut test_args = vec!["test", "--no-fail-fast"];
    test_args.extend(args.iter().map(String::as_str));
    if long {
        // The long tests are `#[ignore]`d; run them with the rest.
        if !args.iter().any(|a| a == "--") {
            test_args.push("--");
        }
        test_args.push("--include-ignored");
    }
    eprintln!("test: unit, property and end-to-end tests");
    // Forward cargo's output as it comes and add up its per-binary results,
    // so the run ends on one line with the whole suite's count.
    let mut child = Command::new(&cargo)
        .current_dir(workspace::root())
        .args(&test_args)
        // Every peer is installed by now: a test that cannot find one fails
        // instead of skipping.
        .env("LBMED_REQUIRE_PEERS", "1")
        // The management tests run this very tool inside lab namespaces.
        .env("LBMED_TOOLS_BIN", std::env::current_exe()?)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut total = TestTotals::default();
    for line in BufReader::new(child.stdout.take().expect("piped stdout")).lines() {
        let line = line?;
        println!("{line}");
        total.add(&line);
    }
    let status = child.wait()?;
    println!(
        "tests: {} passed, {} failed, {} skipped",
        total.passed, total.failed, total.ignored
    );
    if !status.success() {
        bail!("unit, property and end-to-end tests failed ({status})");
    }
    if total.passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// Sums of cargo test's `test result:` lines.
#[derive(Default)]
struct TestTotals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl TestTotals {
    /// Adds `test result: ok. 3 passed; 0 failed; 1 ignored; ...`.
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match kind {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

fn parse_accel(name: &str) -> Result<Accel> {
    Ok(match name {
        "kvm" => Accel::Kvm,
        "tcg" => Accel::Tcg,
        other => bail!("unknown accelerator {other:?} (kvm or tcg)"),
    })
}

/// Prints a benchmark report and keeps it under `target/bench/`.
fn write_report(file: &str, report: &str) -> Result<()> {
    let out = workspace::root().join("target").join("bench").join(file);
    std::fs::create_dir_all(out.parent().unwrap())?;
    std::fs::write(&out, report)?;
    println!("{report}");
    eprintln!("report written to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::TestTotals;

    #[test]
    fn adds_up_cargo_test_results() {
        let mut t = TestTotals::default();
        t.add("test result: ok. 200 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 2.04s");
        t.add("test result: FAILED. 7 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out");
        t.add("running 3 tests");
        assert_eq!((t.passed, t.failed, t.ignored), (207, 1, 2));
    }
}
