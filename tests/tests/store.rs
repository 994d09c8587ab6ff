//! The config store on the appliance's disk, end to end: what `save`
//! writes is what the next boot runs with (over the boot module), and a
//! disk that is not a config store is reported and never written.

use std::time::Duration;
use tests::console::Appliance;
use tests::images;
use tests::lab::Lab;
use tests::peers::TempDir;
use tools::qemu::{Backend, Boot, Machine, Nic};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn machine(lab: &mut Lab, disk: &std::path::Path, module: Option<std::path::PathBuf>) -> Machine {
    let tap = lab.tap("br0").unwrap();
    let mut m = Machine::new(Boot::Kernel {
        elf: images().kernel.clone(),
        cmdline: String::new(),
        module,
    });
    m.nics.push(Nic::virtio(Backend::Tap { ifname: tap }));
    m.disks.push(disk.to_path_buf());
    m
}

/// A config saved at the console is what the next boot runs with, ahead of
/// the boot module the first boot had.
#[test]
fn saved_config_wins_over_the_boot_module_after_reboot() {
    let tmp = TempDir::new("store").unwrap();
    let disk = tmp.path().join("config.img");
    tools::disk_cmd::create(&disk, 4).unwrap();
    let medical = tools::workspace::root().join("lb-core/configs/medical.toml");
    let blob = tmp.path().join("medical.bin");
    tools::config_cmd::compile(&medical, &blob).unwrap();

    let mut lab = Lab::new().unwrap();
    let mut vm =
        Appliance::boot(&machine(&mut lab, &disk, Some(blob.clone())), Some(&lab)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT).unwrap();
    vm.wait_for("config from the boot module", Duration::from_secs(1), |l| {
        l.contains("5 virtual service(s) from boot module")
    })
    .unwrap();
    vm.wait_prompt("lbmed1>", Duration::from_secs(20)).unwrap();
    vm.send_line("save").unwrap();
    let saved = vm
        .wait_for("the save", Duration::from_secs(20), |l| {
            l.starts_with("config: saved to slot")
        })
        .unwrap();
    assert!(saved.contains("slot A sequence 1"), "{saved}");
    drop(vm);

    // Second boot: the same disk, a different boot module (the embedded
    // default's empty config): the store wins.
    let shown = tools::disk_cmd::show(&disk).unwrap();
    let (loaded, config) = shown.config.expect("a stored config");
    assert_eq!((loaded.sequence, config.virtual_services.len()), (1, 5));
    let mut lab = Lab::new().unwrap();
    let vm = Appliance::boot(&machine(&mut lab, &disk, None), Some(&lab)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT).unwrap();
    let console = vm.console();
    assert!(
        console.contains("config: 5 virtual service(s) from the store (slot A, sequence 1)"),
        "{console}"
    );
    assert!(console.contains("eth0 address: 10.12.1.21/24"), "{console}");
}

/// A disk full of random bytes: a clear error, the factory default, and
/// not one byte written — not even by `save`.
#[test]
fn a_disk_that_is_not_a_store_is_reported_and_never_written() {
    let tmp = TempDir::new("foreign").unwrap();
    let disk = tmp.path().join("random.img");
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let bytes: Vec<u8> = (0..4 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&disk, &bytes).unwrap();

    let mut lab = Lab::new().unwrap();
    let mut vm = Appliance::boot(&machine(&mut lab, &disk, None), Some(&lab)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT).unwrap();
    let console = vm.console();
    assert!(
        console
            .lines()
            .any(|l| l.starts_with("error: store: the disk is not a config store")),
        "{console}"
    );
    assert!(
        console.contains("eth0 address: 192.168.2.21/24"),
        "{console}"
    );
    // Nothing usable stored: the first-boot wizard asks; leave it (Ctrl-C).
    vm.wait_prompt("interface (eth0) [eth0]:", Duration::from_secs(20))
        .unwrap();
    vm.send_raw(b"\x03").unwrap();
    vm.wait_prompt("lbmed>", Duration::from_secs(20)).unwrap();
    vm.send_line("save").unwrap();
    let refused = vm
        .wait_for("the refusal", Duration::from_secs(20), |l| {
            l.starts_with("error: save:")
        })
        .unwrap();
    assert!(refused.contains("store format"), "{refused}");
    drop(vm);
    assert!(
        std::fs::read(&disk).unwrap() == bytes,
        "the disk was written"
    );
}
