//! Each disk image `tools build` writes boots in QEMU on the hardware it is
//! made for, and keeps a config saved on its own disk across a reboot:
//! - `appliance.qcow2`: q35, virtio-blk, virtio-net, BIOS;
//! - `appliance.vmdk` (the OVA's disk): q35, SATA (AHCI) and vmxnet3,
//!   under BIOS, and under UEFI (OVMF);
//! - `appliance.vhdx`: `pc` (i440fx), IDE and tulip, BIOS.
//!
//! Each run boots a copy-on-write overlay of the built image (the image
//! itself stays pristine), answers the first-boot wizard with an address,
//! which the appliance saves into the config store's partition on that
//! disk, checks the address answers pings, then boots the same disk again
//! and checks the saved config is what runs. Firmware boots run under TCG.

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tests::images;
use tests::lab::Lab;
use tests::peers::TempDir;
use tools::console::Appliance;
use tools::qemu::{Backend, Boot, DiskBus, Machine, Nic};

const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const STEP: Duration = Duration::from_secs(30);

struct Kind {
    name: &'static str,
    image: &'static Path,
    format: &'static str,
    bus: DiskBus,
    uefi: bool,
    pc: bool,
    nic: &'static str,
    /// What the banner says of the disk.
    disk_banner: &'static str,
}

/// A writable overlay of `kind`'s image in `dir`.
fn overlay(kind: &Kind, dir: &Path) -> std::path::PathBuf {
    let out = dir.join(format!("{}.qcow2", kind.name));
    let status = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", kind.format, "-b"])
        .arg(kind.image)
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "qemu-img create");
    out
}

fn machine(kind: &Kind, disk: &Path, lab: &mut Lab) -> Machine {
    let mut m = Machine::new(Boot::Disk {
        image: disk.to_path_buf(),
        format: "qcow2".into(),
        bus: kind.bus,
        uefi: kind.uefi,
    });
    m.pc = kind.pc;
    // OVMF wants more than the kernel does.
    m.memory_mib = 256;
    let tap = lab.tap("br0").unwrap();
    m.nics
        .push(Nic::model(kind.nic, Backend::Tap { ifname: tap }));
    m
}

fn answer(vm: &mut Appliance, prompt: &str, text: &str) {
    vm.wait_prompt(prompt, STEP).unwrap();
    vm.send_line(text).unwrap();
}

/// Boot, wizard, save, ping; reboot, stored config, ping.
fn boots_and_keeps_its_config(kind: Kind, net: u8) {
    let tmp = TempDir::new(kind.name).unwrap();
    let disk = overlay(&kind, tmp.path());
    let address = format!("10.240.{net}.9");
    let mut lab = Lab::new().unwrap();
    let client = lab
        .host("client", "br0", &format!("10.240.{net}.1/24"), None)
        .unwrap();
    let mut vm = Appliance::boot(&machine(&kind, &disk, &mut lab), Some(&lab)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: {e}\n{}", kind.name, vm.console()));
    let console = vm.console();
    let disk_line = console
        .lines()
        .find(|l| l.starts_with("disk: "))
        .unwrap_or_else(|| panic!("{}: no disk line\n{console}", kind.name));
    assert!(
        disk_line.contains(kind.disk_banner)
            && disk_line.contains("config store partition of 16 MiB"),
        "{}: {disk_line}",
        kind.name
    );
    assert!(console.contains("store: blank disk"), "{console}");
    answer(&mut vm, "interface (eth0) [eth0]:", "");
    answer(&mut vm, "DHCP (y/n) [n]:", "n");
    answer(
        &mut vm,
        "address with prefix [192.168.2.21/24]:",
        &format!("{address}/24"),
    );
    answer(&mut vm, "default gateway (Enter for none):", "");
    answer(
        &mut vm,
        "DNS servers, separated by commas:",
        &format!("10.240.{net}.2"),
    );
    answer(&mut vm, "hostname [lbmed]:", kind.name);
    answer(&mut vm, "console password (Enter for none):", "");
    answer(
        &mut vm,
        "management admin key (paste the line of tools keygen's .pub file; Enter for none):",
        "",
    );
    answer(&mut vm, "apply and save? (y/n):", "y");
    vm.wait_for("the save", STEP, |l| {
        l.starts_with("config: saved to slot A sequence 1")
    })
    .unwrap_or_else(|e| panic!("{}: {e}\n{}", kind.name, vm.console()));
    let loss = client.ping_loss(&address, 10, "0.2").unwrap();
    assert_eq!(loss, 0.0, "{}: ping\n{}", kind.name, vm.console());
    drop(vm);

    let mut lab = Lab::new().unwrap();
    let client = lab
        .host("client", "br0", &format!("10.240.{net}.1/24"), None)
        .unwrap();
    let vm = Appliance::boot(&machine(&kind, &disk, &mut lab), Some(&lab)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT)
        .unwrap_or_else(|e| panic!("{} reboot: {e}\n{}", kind.name, vm.console()));
    let console = vm.console();
    assert!(
        console.contains("config: 0 virtual service(s) from the store (slot A, sequence 1)"),
        "{}: {console}",
        kind.name
    );
    assert!(
        console.contains(&format!("eth0 address: {address}/24")),
        "{}: {console}",
        kind.name
    );
    assert!(!console.contains("First boot"), "{console}");
    let loss = client.ping_loss(&address, 10, "0.2").unwrap();
    assert_eq!(
        loss,
        0.0,
        "{}: ping after reboot\n{}",
        kind.name,
        vm.console()
    );
}

#[test]
fn qcow2_on_virtio_boots_and_keeps_its_config() {
    boots_and_keeps_its_config(
        Kind {
            name: "qcow2",
            image: &images().disks.qcow2,
            format: "qcow2",
            bus: DiskBus::Virtio,
            uefi: false,
            pc: false,
            nic: "virtio-net-pci",
            disk_banner: "virtio-blk",
        },
        1,
    );
}

#[test]
fn vmdk_on_sata_and_vmxnet3_boots_under_bios_and_keeps_its_config() {
    boots_and_keeps_its_config(
        Kind {
            name: "vmdk-bios",
            image: &images().disks.vmdk,
            format: "vmdk",
            bus: DiskBus::Sata,
            uefi: false,
            pc: false,
            nic: "vmxnet3",
            disk_banner: "SATA QEMU HARDDISK",
        },
        2,
    );
}

#[test]
fn vmdk_on_sata_and_vmxnet3_boots_under_uefi_and_keeps_its_config() {
    boots_and_keeps_its_config(
        Kind {
            name: "vmdk-uefi",
            image: &images().disks.vmdk,
            format: "vmdk",
            bus: DiskBus::Sata,
            uefi: true,
            pc: false,
            nic: "vmxnet3",
            disk_banner: "SATA QEMU HARDDISK",
        },
        3,
    );
}

#[test]
fn vhdx_on_pc_with_ide_and_tulip_boots_and_keeps_its_config() {
    boots_and_keeps_its_config(
        Kind {
            name: "vhdx",
            image: &images().disks.vhdx,
            format: "vhdx",
            bus: DiskBus::Ide,
            uefi: false,
            pc: true,
            nic: "tulip",
            disk_banner: "IDE QEMU HARDDISK",
        },
        4,
    );
}

/// The OVA `tools build` wrote passes the offline OVF checks (the build
/// already refuses an invalid one; this keeps the shipped file honest).
#[test]
fn the_ova_is_valid() {
    tools::ovf::validate_ova(&images().disks.ova).unwrap();
}
