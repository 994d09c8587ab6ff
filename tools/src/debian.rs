//! The incumbent for the boot benchmark: Debian's stock kernel (package
//! `linux-image-amd64`) with a minimal initramfs that loads the virtio NIC
//! modules, sets the address given on its command line and answers ping.

use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Modules the initramfs loads, in dependency order.
const MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// `/init`: bring eth0 up with `bench_ip=` and log `ready` through the kernel
/// log, so its timestamp is the kernel's own time since boot.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
for m in MODULES; do /bin/busybox insmod /lib/modules/$m.ko; done
ip=$(/bin/busybox sed -n 's/.*bench_ip=\([^ ]*\).*/\1/p' /proc/cmdline)
/bin/busybox ip link set lo up
/bin/busybox ip addr add "$ip" dev eth0
/bin/busybox ip link set eth0 up
echo "<1>ready" > /dev/kmsg
exec /bin/busybox sleep 1000000
"#;

/// A Debian kernel and its initramfs, ready for `-kernel` and `-initrd`.
pub struct DebianGuest {
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub version: String,
}

/// Downloads (once) and prepares the Debian guest under `dir`.
pub fn prepare(dir: &Path) -> Result<DebianGuest> {
    fs::create_dir_all(dir)?;
    let vmlinuz = dir.join("vmlinuz");
    let initramfs = dir.join("initramfs.cpio");
    let version_file = dir.join("version");
    if vmlinuz.exists() && initramfs.exists() && version_file.exists() {
        let version = fs::read_to_string(&version_file)?.trim().to_string();
        return Ok(DebianGuest {
            vmlinuz,
            initramfs,
            version,
        });
    }
    let package = kernel_package()?;
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    check(Command::new("apt-get").current_dir(&debs).args([
        "download",
        &package,
        "busybox-static",
    ]))?;
    let root = dir.join("extract");
    for entry in fs::read_dir(&debs)? {
        check(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(entry?.path())
                .arg(&root),
        )?;
    }
    let version = package.trim_start_matches("linux-image-").to_string();
    fs::copy(root.join(format!("boot/vmlinuz-{version}")), &vmlinuz)?;
    let modules = root.join(format!("lib/modules/{version}/kernel"));
    let mut cpio = Cpio::default();
    for d in ["bin", "dev", "proc", "sys", "lib", "lib/modules"] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 5, 1);
    cpio.char_dev("dev/ttyS0", 4, 64);
    cpio.char_dev("dev/kmsg", 1, 11);
    cpio.file("bin/busybox", 0o755, &fs::read(root.join("bin/busybox"))?);
    for m in MODULES {
        let path = find(&modules, &format!("{m}.ko"))?
            .with_context(|| format!("module {m} not in {package}"))?;
        cpio.file(&format!("lib/modules/{m}.ko"), 0o644, &fs::read(path)?);
    }
    cpio.file(
        "init",
        0o755,
        INIT.replace("MODULES", &MODULES.join(" ")).as_bytes(),
    );
    fs::write(&initramfs, cpio.finish())?;
    fs::write(&version_file, &version)?;
    Ok(DebianGuest {
        vmlinuz,
        initramfs,
        version,
    })
}

/// The versioned kernel package `linux-image-amd64` depends on.
fn kernel_package() -> Result<String> {
    let out = check(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .context("apt-cache knows no linux-image-amd64 (run apt-get update)")
}

fn find(dir: &Path, name: &str) -> Result<Option<PathBuf>> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            if let Some(found) = find(&path, name)? {
                return Ok(Some(found));
            }
        } else if path.file_name().is_some_and(|n| n == name) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn check(cmd: &mut Command) -> Result<std::process::Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!("{shown} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out)
}

/// A `newc` cpio archive writer, enough for an initramfs.
#[derive(Default)]
struct Cpio {
    out: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.ino += 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() + 1,
            0
        );
        self.out.extend_from_slice(header.as_bytes());
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while self.out.len() % 4 != 0 {
            self.out.push(0);
        }
    }

    fn dir(&mut self, name: &str) {
        self.entry(name, 0o040755, (0, 0), &[]);
    }

    fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, 0o100000 | perm, (0, 0), data);
    }

    fn char_dev(&mut self, name: &str, major: u32, minor: u32) {
        self.entry(name, 0o020600, (major, minor), &[]);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        self.out
    }
}
