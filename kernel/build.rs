//! Links the kernel with its own script (one PT_LOAD at 1 MiB; see link.ld),
//! and compiles the embedded default configuration
//! (`lb-core/configs/default.toml`) into an envelope blob in `OUT_DIR`.
fn main() {
    embed_default_config();
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-changed=link.ld");
    if std::env::var("TARGET").as_deref() == Ok("x86_64-unknown-none") {
        println!("cargo:rustc-link-arg-bins=-T{dir}/link.ld");
        println!("cargo:rustc-link-arg-bins=--no-pie");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
    }
}

/// Validates the default config at build time (a bad one fails the build)
/// and writes its envelope to `$OUT_DIR/default_config.bin`.
fn embed_default_config() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let src = std::path::Path::new(&dir).join("../lb-core/configs/default.toml");
    println!("cargo:rerun-if-changed={}", src.display());
    let text = std::fs::read_to_string(&src).expect("reading lb-core/configs/default.toml");
    let config = lb_core::config::from_toml(&text)
        .unwrap_or_else(|e| panic!("lb-core/configs/default.toml: {e}"));
    let blob = lb_core::envelope::encode(&config)
        .unwrap_or_else(|e| panic!("encoding the default config: {e:?}"));
    let out = std::env::var("OUT_DIR").expect("cargo sets OUT_DIR");
    std::fs::write(std::path::Path::new(&out).join("default_config.bin"), blob)
        .expect("writing the default config blob");
}
