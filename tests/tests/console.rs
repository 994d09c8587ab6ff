//! The console end to end on the serial line: the network wizard typed at
//! first boot (bad answers refused with a reason and asked again), the new
//! address answering ping at once and after a reboot from the same disk,
//! the console password it set, line editing, and power-off.

use std::time::Duration;
use tests::console::Appliance;
use tests::images;
use tests::lab::Lab;
use tests::peers::TempDir;
use tools::qemu::{Backend, Boot, Machine, Nic};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const STEP: Duration = Duration::from_secs(20);

fn machine(lab: &mut Lab, disk: &std::path::Path) -> Machine {
    let tap = lab.tap("br0").unwrap();
    let mut m = Machine::new(Boot::Kernel {
        elf: images().kernel.clone(),
        cmdline: String::new(),
        module: None,
    });
    m.nics.push(Nic::virtio(Backend::Tap { ifname: tap }));
    m.disks.push(disk.to_path_buf());
    m
}

/// Waits for `prompt`, answers `text`.
fn answer(vm: &mut Appliance, prompt: &str, text: &str) {
    vm.wait_prompt(prompt, STEP).unwrap();
    vm.send_line(text).unwrap();
}

/// Answers `bad` to `prompt` and expects a reason containing `why` and
/// the same question again.
fn refused(vm: &mut Appliance, prompt: &str, bad: &str, why: &str) {
    let from = vm.mark();
    answer(vm, prompt, bad);
    let line = vm
        .wait_from(from, "the reason", STEP, |l| {
            l.starts_with("  ") && l.contains(why)
        })
        .unwrap();
    assert!(line.contains(bad), "the reason quotes the answer: {line}");
    vm.wait_prompt(prompt, STEP).unwrap();
}

#[test]
fn serial_wizard_sets_the_address_now_and_after_reboot() {
    let tmp = TempDir::new("wizard").unwrap();
    let disk = tmp.path().join("config.img");
    tools::disk_cmd::create(&disk, 4).unwrap();
    let mut lab = Lab::new().unwrap();
    let client = lab.host("client", "br0", "10.77.0.1/24", None).unwrap();

    let mut vm = Appliance::boot(&machine(&mut lab, &disk), Some(&lab)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT).unwrap();
    vm.wait_for("the first-boot wizard", STEP, |l| {
        l.starts_with("First boot")
    })
    .unwrap();
    answer(&mut vm, "interface (eth0) [eth0]:", "");
    answer(&mut vm, "DHCP (y/n) [n]:", "n");
    let address = "address with prefix [192.168.2.21/24]:";
    refused(&mut vm, address, "999.1.1.1/40", "not an IPv4 address");
    refused(&mut vm, address, "10.77.0.9", "prefix length");
    answer(&mut vm, address, "10.77.0.9/24");
    let gateway = "default gateway (Enter for none):";
    refused(&mut vm, gateway, "10.78.0.1", "must be inside 10.77.0.0/24");
    answer(&mut vm, gateway, "10.77.0.1");
    let dns = "DNS servers, separated by commas:";
    refused(&mut vm, dns, "", "at least one DNS server");
    answer(&mut vm, dns, "10.77.0.2");
    answer(&mut vm, "hostname [lbmed]:", "lbtest1");
    answer(
        &mut vm,
        "console password (Enter for none):",
        "hospital-lb1",
    );
    answer(&mut vm, "console password again:", "hospital-lb1");
    // The first management key, pasted from `tools keygen`'s .pub file.
    let (_, public) = tools::mgmt_cmd::keygen(&tmp.path().join("admin")).unwrap();
    let admin_pub = std::fs::read_to_string(&public).unwrap();
    let admin_pub = admin_pub.trim();
    let key_prompt =
        "management admin key (paste the line of tools keygen's .pub file; Enter for none):";
    refused(&mut vm, key_prompt, "ed25519:0123", "64 hex digits");
    answer(&mut vm, key_prompt, admin_pub);
    answer(&mut vm, "apply and save? (y/n):", "y");
    vm.wait_for("the save", STEP, |l| {
        l.starts_with("config: saved to slot A sequence 1")
    })
    .unwrap();
    // Applied at once: the new address answers without a reboot.
    let loss = client.ping_loss("10.77.0.9", 10, "0.1").unwrap();
    assert_eq!(
        loss,
        0.0,
        "ping after the wizard; console:\n{}",
        vm.console()
    );

    // From the appliance: ping the gateway, then the neighbour table,
    // interfaces and event log show what happened.
    answer(&mut vm, "lbtest1>", "ping 10.77.0.1 3");
    vm.wait_for("ping", STEP, |l| {
        l.starts_with("3 sent, 3 received, 0% loss, rtt min/avg/max")
    })
    .unwrap();
    vm.wait_for("a reply line", STEP, |l| {
        l.starts_with("reply from 10.77.0.1: seq=0 time=")
    })
    .unwrap();
    answer(&mut vm, "lbtest1>", "show arp");
    vm.wait_for("the gateway's MAC", STEP, |l| {
        l.starts_with("10.77.0.1 ") && l.ends_with("eth0") && !l.contains("incomplete")
    })
    .unwrap();
    answer(&mut vm, "lbtest1>", "show interfaces");
    vm.wait_for("eth0", STEP, |l| {
        l.starts_with("eth0 ") && l.contains("10.77.0.9/24 from the configuration")
    })
    .unwrap();
    answer(&mut vm, "lbtest1>", "log");
    vm.wait_for("the log", STEP, |l| {
        l.contains("notice  config network settings applied")
    })
    .unwrap();
    // Line editing: Tab completes `show config`, ↑ repeats it.
    vm.wait_prompt("lbtest1>", STEP).unwrap();
    let from = vm.mark();
    vm.send_raw(b"sho\tc\t\r").unwrap();
    vm.wait_from(from, "show config", STEP, |l| {
        l == "address = \"10.77.0.9\""
    })
    .unwrap();
    vm.wait_prompt("lbtest1>", STEP).unwrap();
    let from = vm.mark();
    vm.send_raw(b"\x1b[A\r").unwrap();
    vm.wait_from(from, "show config again", STEP, |l| {
        l == "gateway = \"10.77.0.1\""
    })
    .unwrap();
    assert!(
        vm.console()
            .contains(&format!("admin_keys = [\"{admin_pub}\"]")),
        "the pasted key is in the configuration"
    );
    drop(vm);

    // Reboot from the same disk, no ip=: the stored address, no wizard,
    // and the console locked by the password.
    let mut lab2 = Lab::new().unwrap();
    let client = lab2.host("client", "br0", "10.77.0.1/24", None).unwrap();
    let mut vm = Appliance::boot(&machine(&mut lab2, &disk), Some(&lab2)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT).unwrap();
    let console = vm.console();
    assert!(
        console.contains("config: 0 virtual service(s) from the store (slot A, sequence 1)"),
        "{console}"
    );
    assert!(
        console.contains("eth0 address: 10.77.0.9/24 gw 10.77.0.1"),
        "{console}"
    );
    assert!(!console.contains("First boot"), "{console}");
    let loss = client.ping_loss("10.77.0.9", 10, "0.1").unwrap();
    assert_eq!(
        loss,
        0.0,
        "ping after the reboot; console:\n{}",
        vm.console()
    );
    answer(&mut vm, "lbtest1 (locked)>", "status");
    vm.wait_for("the lock", STEP, |l| l.contains("the console is locked"))
        .unwrap();
    answer(&mut vm, "lbtest1 (locked)>", "login");
    answer(&mut vm, "password:", "not-the-password");
    vm.wait_for("the refusal", STEP, |l| l == "wrong password")
        .unwrap();
    answer(&mut vm, "lbtest1 (locked)>", "login");
    answer(&mut vm, "password:", "hospital-lb1");
    vm.wait_for("the login", STEP, |l| l == "logged in")
        .unwrap();
    answer(&mut vm, "lbtest1>", "status");
    vm.wait_for("status", STEP, |l| l.starts_with("drops:"))
        .unwrap();
    answer(&mut vm, "lbtest1>", "poweroff");
    let status = vm.wait_exit(STEP).unwrap();
    assert!(
        status.success(),
        "ACPI power-off ends QEMU cleanly: {status}"
    );
    let console = vm.console().to_lowercase();
    assert!(!console.contains("panic"), "{console}");
}
