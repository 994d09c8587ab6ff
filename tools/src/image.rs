//! Building the appliance images: the kernel ELF, the GRUB hybrid ISO, and
//! the disk images for each hypervisor (raw, qcow2, VMDK, OVA, VHDX).
//!
//! Every disk image is the same bootable disk: GRUB's hybrid layout (BIOS
//! boot code in the MBR, a GPT with the UEFI system partition and the
//! ISO 9660 file system holding the kernel) plus one more GPT partition of
//! type [`CONFIG_STORE_TYPE_TEXT`] for the config store, blank until the
//! first `save`. `qemu-img` converts the raw disk to each format.

use crate::workspace::{appliance_dir, root};
use anyhow::{Context, Result, bail};
use lb_core::store::partition::CONFIG_STORE_TYPE_TEXT;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The built images, at stable paths under `target/appliance/`.
pub struct Images {
    pub kernel: PathBuf,
    pub iso: PathBuf,
    pub disks: DiskImages,
}

/// The bootable disk images, one per hypervisor family.
#[derive(Clone, Debug)]
pub struct DiskImages {
    /// Raw disk (bare metal with `dd`, Xen, anything that takes raw).
    pub raw: PathBuf,
    /// QEMU/KVM, Proxmox.
    pub qcow2: PathBuf,
    /// VMware (streamOptimized, what OVAs carry).
    pub vmdk: PathBuf,
    /// VMware/VirtualBox import: OVF descriptor, manifest and the VMDK.
    pub ova: PathBuf,
    /// Hyper-V generation 1.
    pub vhdx: PathBuf,
}

/// Size of the config store's partition on the disk images.
pub const STORE_PARTITION_MIB: u64 = 16;

/// How the kernel is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

/// Builds the kernel ELF and copies it to `target/appliance/kernel.elf`.
pub fn build_kernel(profile: Profile) -> Result<PathBuf> {
    crate::setup::ensure_rust_target()?;
    // A target dir of its own: the tests build the image from inside
    // `cargo test`, which holds the lock on the host build's target dir.
    let target_dir = root().join("target").join("kernel");
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root()).args([
        "build",
        "-p",
        "kernel",
        "--target",
        "x86_64-unknown-none",
        "--target-dir",
    ]);
    cmd.arg(&target_dir);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    let status = cmd.status().context("running cargo to build the kernel")?;
    if !status.success() {
        bail!("kernel build failed ({status})");
    }
    let dir = if profile == Profile::Release {
        "release"
    } else {
        "debug"
    };
    let built = target_dir
        .join("x86_64-unknown-none")
        .join(dir)
        .join("kernel");
    let out_dir = appliance_dir();
    fs::create_dir_all(&out_dir)?;
    let kernel = out_dir.join("kernel.elf");
    fs::copy(&built, &kernel).with_context(|| format!("copying {}", built.display()))?;
    Ok(kernel)
}

/// The GRUB menu: serial console and screen both, kernel by Multiboot, and the
/// config blob (when given) as a boot module. `all_video` lets GRUB set up
/// the firmware's framebuffer under UEFI (there is no VGA text mode there);
/// it passes it to the kernel in the Multiboot information, and the kernel
/// draws its console on it. Under BIOS the screen stays in VGA text mode.
fn grub_cfg(cmdline: &str, with_config: bool) -> String {
    let module = if with_config {
        "  module /boot/config.bin config\n"
    } else {
        ""
    };
    format!(
        "set timeout=0\n\
         set default=0\n\
         insmod all_video\n\
         serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1\n\
         terminal_input serial console\n\
         terminal_output serial console\n\
         menuentry \"Medical load balancer appliance\" {{\n\
         \x20 multiboot /boot/kernel.elf {cmdline}\n\
         {module}\
         \x20 boot\n\
         }}\n"
    )
}

/// Wraps `kernel` in a hybrid ISO (BIOS El Torito + UEFI ESP, also bootable as
/// a disk) at `out`, with an optional kernel command line and config blob.
pub fn build_iso(kernel: &Path, out: &Path, cmdline: &str, config: Option<&Path>) -> Result<()> {
    build_hybrid(kernel, out, cmdline, config, None)
}

/// [`build_iso`], with a blank partition of `store_mib` MiB appended for the
/// config store when given (a disk image).
fn build_hybrid(
    kernel: &Path,
    out: &Path,
    cmdline: &str,
    config: Option<&Path>,
    store_mib: Option<u64>,
) -> Result<()> {
    crate::setup::ensure(&[crate::setup::BUILD])?;
    let stage = out.with_extension("stage");
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    let grub_dir = stage.join("boot").join("grub");
    fs::create_dir_all(&grub_dir)?;
    fs::copy(kernel, stage.join("boot").join("kernel.elf"))?;
    if let Some(cfg) = config {
        fs::copy(cfg, stage.join("boot").join("config.bin"))?;
    }
    fs::write(
        grub_dir.join("grub.cfg"),
        grub_cfg(cmdline, config.is_some()),
    )?;
    let mut cmd = Command::new("grub-mkrescue");
    cmd.arg("-o").arg(out).arg(&stage);
    let store = out.with_extension("store");
    if let Some(mib) = store_mib {
        fs::File::create(&store)?.set_len(mib << 20)?;
        // Options after `--` go to xorriso: a GPT partition of our type.
        cmd.args(["--", "-append_partition", "3", CONFIG_STORE_TYPE_TEXT])
            .arg(&store);
    }
    let output = cmd.output().context("running grub-mkrescue")?;
    fs::remove_dir_all(&stage)?;
    if store_mib.is_some() {
        fs::remove_file(&store)?;
    }
    if !output.status.success() {
        bail!(
            "grub-mkrescue failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Converts the raw disk `raw` to `format` at `out` with `qemu-img`.
fn convert(raw: &Path, format: &str, options: &str, out: &Path) -> Result<()> {
    let _ = fs::remove_file(out);
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-q", "-f", "raw", "-O", format]);
    if !options.is_empty() {
        cmd.args(["-o", options]);
    }
    let output = cmd.arg(raw).arg(out).output().context("running qemu-img")?;
    if !output.status.success() {
        bail!(
            "qemu-img convert to {format} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Builds the disk images from `kernel` into `dir`.
pub fn build_disks(kernel: &Path, dir: &Path) -> Result<DiskImages> {
    crate::setup::ensure(&[crate::setup::BUILD])?;
    let raw = dir.join("appliance.img");
    build_hybrid(kernel, &raw, "", None, Some(STORE_PARTITION_MIB))?;
    let disks = DiskImages {
        qcow2: dir.join("appliance.qcow2"),
        vmdk: dir.join("appliance.vmdk"),
        ova: dir.join("appliance.ova"),
        vhdx: dir.join("appliance.vhdx"),
        raw,
    };
    convert(&disks.raw, "qcow2", "", &disks.qcow2)?;
    // streamOptimized: the compressed, sequential VMDK that OVAs carry and
    // VMware imports; `adapter_type=ide` is what VMware writes for SATA too.
    convert(
        &disks.raw,
        "vmdk",
        "subformat=streamOptimized,adapter_type=ide",
        &disks.vmdk,
    )?;
    convert(&disks.raw, "vhdx", "subformat=dynamic", &disks.vhdx)?;
    let capacity = fs::metadata(&disks.raw)?.len();
    crate::ovf::build_ova(&disks.vmdk, capacity, &disks.ova)?;
    Ok(disks)
}

/// Builds every image at its stable path.
pub fn build_all(profile: Profile) -> Result<Images> {
    let kernel = build_kernel(profile)?;
    let dir = appliance_dir();
    let iso = dir.join("appliance.iso");
    build_iso(&kernel, &iso, "", None)?;
    let disks = build_disks(&kernel, &dir)?;
    Ok(Images { kernel, iso, disks })
}
