//! Host prerequisites, installed idempotently (or named, when we cannot).
//!
//! The README's two commands must work on a fresh Debian machine: this module
//! checks for each program the build, run and tests use and installs the
//! Debian package that provides it when missing.

use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::Command;

/// A host program (or file) and the Debian package that provides it.
pub struct Requirement {
    pub path_or_cmd: &'static str,
    pub package: &'static str,
}

const fn req(path_or_cmd: &'static str, package: &'static str) -> Requirement {
    Requirement {
        path_or_cmd,
        package,
    }
}

/// What `build` needs: GRUB for BIOS and UEFI, and the ISO tools.
pub const BUILD: &[Requirement] = &[
    req("grub-mkrescue", "grub-common"),
    req("/usr/lib/grub/i386-pc/multiboot.mod", "grub-pc-bin"),
    req(
        "/usr/lib/grub/x86_64-efi/multiboot.mod",
        "grub-efi-amd64-bin",
    ),
    req("xorriso", "xorriso"),
    req("mformat", "mtools"),
    // The qcow2, VMDK and VHDX disk images.
    req("qemu-img", "qemu-utils"),
];

/// What `run` needs on top of `build`.
pub const RUN: &[Requirement] = &[req("qemu-system-x86_64", "qemu-system-x86")];

/// What `run`'s demo needs: dcmtk for its two PACS and the sample study.
pub const DEMO: &[Requirement] = &[req("storescp", "dcmtk"), req("dump2dcm", "dcmtk")];

/// What the test suite needs on top of `run`: UEFI firmware, network tools,
/// the real protocol peers, a DHCP server (dnsmasq without its system
/// service) and a packet flooder.
pub const TEST: &[Requirement] = &[
    req("/usr/share/OVMF/OVMF_CODE.fd", "ovmf"),
    req("ip", "iproute2"),
    req("ping", "iputils-ping"),
    req("storescp", "dcmtk"),
    req("python3", "python3"),
    // HTTPS real servers for the health checks (TLS 1.2/1.3 sites), and
    // the PROXY-protocol real server of the layer 7 tests.
    req("nginx", "nginx-light"),
    req("openssl", "openssl"),
    // A DHCP server (without its system service) and a packet flooder.
    req("dnsmasq", "dnsmasq-base"),
    req("hping3", "hping3"),
    // The System Overview page read in a real browser.
    req("chromium", "chromium"),
    req("chromedriver", "chromium-driver"),
    // Layer 7 tests: clients.
    req("curl", "curl"),
    req("sha256sum", "coreutils"),
    // The DICOM-aware drain/halt test captures resets at both peers.
    req("tcpdump", "tcpdump"),
    // The clustered pair's peer in the interoperability test.
    req("keepalived", "keepalived"),
];

/// What the benchmarks need on top of the tests: the traffic generator and
/// the offload switch.
pub const BENCH: &[Requirement] = &[
    req("iperf3", "iperf3"),
    req("ethtool", "ethtool"),
    req("hping3", "hping3"),
];

fn present(r: &Requirement) -> bool {
    if r.path_or_cmd.starts_with('/') {
        Path::new(r.path_or_cmd).exists()
    } else {
        which(r.path_or_cmd)
    }
}

/// True if `cmd` is an executable on `PATH`.
pub fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}

/// Namespaces, taps and bridges need root.
pub fn require_root() -> Result<()> {
    if !is_root() {
        bail!("this creates network namespaces and taps: run it as root");
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Installs the Debian packages for every missing requirement. As root this
/// runs `apt-get`; otherwise it stops with the one command that does it.
pub fn ensure(reqs: &[&[Requirement]]) -> Result<()> {
    let mut missing: Vec<&str> = reqs
        .iter()
        .flat_map(|group| group.iter())
        .filter(|r| !present(r))
        .map(|r| r.package)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if !is_root() || !which("apt-get") {
        bail!("missing host packages; install them with:\n  sudo apt-get install -y {list}");
    }
    eprintln!("setup: installing Debian packages: {list}");
    run_quiet(Command::new("apt-get").arg("update").arg("-qq"))?;
    run_quiet(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// Adds the bare-metal Rust target if this toolchain lacks it.
pub fn ensure_rust_target() -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(crate::workspace::root())
        .output();
    match out {
        Ok(o) if String::from_utf8_lossy(&o.stdout).contains("x86_64-unknown-none") => Ok(()),
        Ok(_) => run_quiet(
            Command::new("rustup")
                .args(["target", "add", "x86_64-unknown-none"])
                .current_dir(crate::workspace::root()),
        ),
        // No rustup: the toolchain may still carry the target; the build will say.
        Err(_) => Ok(()),
    }
}

/// Python modules the test peers import: (module, Debian package, PyPI
/// package).
pub const PYTHON: &[(&str, &str, &str)] = &[
    ("hl7.mllp", "python3-hl7", "hl7"),
    ("scapy.all", "python3-scapy", "scapy"),
    // The metrics read with Prometheus's own parser; Chromium driven
    // through chromedriver.
    (
        "prometheus_client.parser",
        "python3-prometheus-client",
        "prometheus-client",
    ),
    ("selenium.webdriver", "python3-selenium", "selenium"),
];

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Makes the Python modules the test peers use importable by `python3`.
/// Debian's packages first (Debian 12's own Python refuses `pip install`
/// outside a virtual environment, PEP 668); PyPI through pip only for a
/// `python3` that is not Debian's (e.g. pyenv), which apt cannot reach.
pub fn ensure_python(modules: &[(&str, &str, &str)]) -> Result<()> {
    for (module, debian, pypi) in modules {
        if python_has(module) {
            continue;
        }
        if is_root() && which("apt-get") {
            eprintln!("setup: installing Debian package {debian}");
            let _ = run_quiet(Command::new("apt-get").arg("update").arg("-qq"));
            run_quiet(
                Command::new("apt-get")
                    .args(["install", "-y", "-qq", "--no-install-recommends", debian])
                    .env("DEBIAN_FRONTEND", "noninteractive"),
            )?;
            if python_has(module) {
                continue;
            }
        }
        eprintln!("setup: installing Python package {pypi} with pip");
        run_quiet(Command::new("python3").args([
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            pypi,
        ]))
        .with_context(|| {
            format!("python3 cannot import {module}: install {debian} (Debian) or {pypi} (PyPI)")
        })?;
        if !python_has(module) {
            bail!("python3 still cannot import {module} after installing {pypi}");
        }
    }
    Ok(())
}

fn run_quiet(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
