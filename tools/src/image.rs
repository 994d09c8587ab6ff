//! Building the appliance images: the kernel ELF and the GRUB hybrid ISO.

use crate::workspace::{appliance_dir, root};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The built images, at stable paths under `target/appliance/`.
pub struct Images {
    pub kernel: PathBuf,
    pub iso: PathBuf,
}

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
    let output = Command::new("grub-mkrescue")
        .arg("-o")
        .arg(out)
        .arg(&stage)
        .output()
        .context("running grub-mkrescue")?;
    fs::remove_dir_all(&stage)?;
    if !output.status.success() {
        bail!(
            "grub-mkrescue failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// Builds both images at their stable paths.
pub fn build_all(profile: Profile) -> Result<Images> {
    let kernel = build_kernel(profile)?;
    let iso = appliance_dir().join("appliance.iso");
    build_iso(&kernel, &iso, "", None)?;
    Ok(Images { kernel, iso })
}
