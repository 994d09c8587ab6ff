//! End-to-end test harness: builds the real appliance image once, makes
//! network namespaces with names unique to the run, boots the image under
//! QEMU inside them and reads its serial console.
//!
//! Everything a test creates is removed when its handle drops: QEMU (killed by
//! its PID), then the namespaces (which takes their bridges, taps and veths).

pub mod dicom;
pub mod l4;
pub mod l7;
pub mod peers;

pub use tools::{console, lab};

use std::path::PathBuf;
use std::sync::OnceLock;
use tools::image::{Images, Profile, build_all};

/// The release images, built once per test process.
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        tools::setup::require_root().expect("root");
        build_all(Profile::Release).expect("building the appliance images")
    })
}

/// The host tool's binary, to run inside lab namespaces as an engineer
/// would: the one running the suite (`tools test` passes its own path in
/// `LBMED_TOOLS_BIN`), else built once into a target dir of its own
/// (`cargo test` holds the lock on the usual one).
pub fn tools_bin() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("LBMED_TOOLS_BIN") {
            return PathBuf::from(p);
        }
        let root = tools::workspace::root();
        let target = root.join("target").join("e2e-tools");
        let status =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .current_dir(&root)
                .args(["build", "-p", "tools", "--bin", "tools", "--target-dir"])
                .arg(&target)
                .status()
                .expect("running cargo to build the host tool");
        assert!(status.success(), "building the host tool failed");
        target.join("debug").join("tools")
    })
}

/// A machine that boots the release kernel with `toml` compiled (in `dir`)
/// as its boot module.
pub fn machine_with_config(
    dir: &std::path::Path,
    toml: &str,
) -> anyhow::Result<tools::qemu::Machine> {
    let file = dir.join("config.toml");
    std::fs::write(&file, toml)?;
    let blob = dir.join("config.bin");
    tools::config_cmd::compile(&file, &blob)?;
    Ok(tools::qemu::Machine::new(tools::qemu::Boot::Kernel {
        elf: images().kernel.clone(),
        cmdline: String::new(),
        module: Some(blob),
    }))
}
