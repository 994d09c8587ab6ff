//! Where things live in the workspace.

use std::path::PathBuf;

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tools lives one level below the workspace root")
        .to_path_buf()
}

/// Stable output folder for the appliance images: `target/appliance/`.
pub fn appliance_dir() -> PathBuf {
    root().join("target").join("appliance")
}
