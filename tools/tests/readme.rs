//! The README stays true: its full config example is the shipped one, and it
//! validates.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn readme_config_example_is_the_shipped_medical_config() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let shipped = std::fs::read_to_string(root().join("lb-core/configs/medical.toml")).unwrap();
    let start = readme
        .find("```toml\n")
        .expect("a toml block in the README")
        + "```toml\n".len();
    let len = readme[start..].find("```").unwrap();
    assert_eq!(
        &readme[start..start + len],
        shipped,
        "README example = lb-core/configs/medical.toml"
    );
    lb_core::config::from_toml(&shipped).unwrap();
}

#[test]
fn readme_starts_with_the_two_commands() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let run = readme
        .find("cargo run -p tools -- run")
        .expect("the run command");
    let test = readme
        .find("cargo run -p tools -- test")
        .expect("the test command");
    assert!(run < test);
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        ci.contains("cargo run -p tools -- test"),
        ".ci/run calls the README's test command"
    );
}
