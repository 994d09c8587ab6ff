//! The foundation, end to end: the real image boots (kernel ELF by Multiboot,
//! ISO under BIOS and UEFI), prints its banner and `ready`, and answers ping
//! from a client in its own network namespace.

use std::time::Duration;
use tests::console::Appliance;
use tests::images;
use tests::lab::Lab;
use tests::peers::TempDir;
use tools::qemu::{Backend, Boot, Machine, Nic};
use tools::qmp::Qmp;

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn kernel_machine(cmdline: &str) -> Machine {
    Machine::new(Boot::Kernel {
        elf: images().kernel.clone(),
        cmdline: cmdline.into(),
        module: None,
    })
}

#[test]
fn answers_100_pings_without_loss() {
    let mut lab = Lab::new().unwrap();
    let tap = lab.tap("br0").unwrap();
    let client = lab.host("client", "br0", "10.201.0.1/24", None).unwrap();
    let mut machine = kernel_machine("ip=10.201.0.2/24 gw=10.201.0.1");
    machine.nics.push(Nic::virtio(Backend::Tap { ifname: tap }));
    let vm = Appliance::boot(&machine, Some(&lab)).unwrap();
    let ms = vm.wait_ready(BOOT_TIMEOUT).unwrap();
    assert!(ms > 0.0, "ready line reports a positive time: {ms}");
    let console = vm.console();
    assert!(
        console.contains("10.201.0.2/24"),
        "banner shows the address in use:\n{console}"
    );
    let loss = client.ping_loss("10.201.0.2", 100, "0.02").unwrap();
    assert_eq!(loss, 0.0, "ping loss; console:\n{}", vm.console());
}

#[test]
fn serves_with_32_mib() {
    let mut lab = Lab::new().unwrap();
    let tap = lab.tap("br0").unwrap();
    let client = lab.host("client", "br0", "10.202.0.1/24", None).unwrap();
    let mut machine = kernel_machine("ip=10.202.0.2/24");
    machine.memory_mib = 32;
    machine.nics.push(Nic::virtio(Backend::Tap { ifname: tap }));
    let vm = Appliance::boot(&machine, Some(&lab)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT).unwrap();
    let loss = client.ping_loss("10.202.0.2", 10, "0.05").unwrap();
    assert_eq!(loss, 0.0, "ping loss; console:\n{}", vm.console());
}

#[test]
fn names_every_nic_in_the_banner() {
    let mut lab = Lab::new().unwrap();
    let mut machine = kernel_machine("ip=10.203.0.2/24");
    for (bridge, mac) in [("br0", "52:54:00:12:34:01"), ("br1", "52:54:00:12:34:02")] {
        let tap = lab.tap(bridge).unwrap();
        let mut nic = Nic::virtio(Backend::Tap { ifname: tap });
        nic.mac = Some(mac.into());
        machine.nics.push(nic);
    }
    let vm = Appliance::boot(&machine, Some(&lab)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT).unwrap();
    let console = vm.console();
    for (name, mac) in [("eth0", "52:54:00:12:34:01"), ("eth1", "52:54:00:12:34:02")] {
        assert!(
            console.lines().any(|l| l.contains(name) && l.contains(mac)),
            "{name} with {mac} in the banner:\n{console}"
        );
    }
}

#[test]
fn malformed_command_line_falls_back_to_factory_default() {
    let mut lab = Lab::new().unwrap();
    let tap = lab.tap("br0").unwrap();
    let mut machine = kernel_machine("ip=999.1.1.1/40");
    machine.nics.push(Nic::virtio(Backend::Tap { ifname: tap }));
    let vm = Appliance::boot(&machine, Some(&lab)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT).unwrap();
    let console = vm.console();
    let error = console
        .lines()
        .find(|l| l.starts_with("error: ") && l.contains("ip="))
        .unwrap_or_else(|| panic!("a clear error naming ip=:\n{console}"));
    assert!(
        error.contains("999.1.1.1/40"),
        "the error quotes the bad value: {error}"
    );
    assert!(
        console.contains("192.168.2.21/24"),
        "factory default in use:\n{console}"
    );
    assert!(
        !console.to_lowercase().contains("panic"),
        "no panic:\n{console}"
    );
}

/// Boots the ISO with a screen, a keyboard and a blank config disk; the
/// first-boot wizard is answered on the keyboard (QMP key events); the new
/// address answers ping; the final screen is saved as a test artifact
/// (`target/test-artifacts/first-boot-NAME.png`) and must not be blank.
fn iso_boots_and_takes_the_wizard_on_the_keyboard(boot: Boot, name: &str, screen_kind: &str) {
    let tmp = TempDir::new(name).unwrap();
    let disk = tmp.path().join("config.img");
    tools::disk_cmd::create(&disk, 4).unwrap();
    let qmp_path = tmp.path().join("qmp.sock");
    let mut lab = Lab::new().unwrap();
    let tap = lab.tap("br0").unwrap();
    let client = lab.host("client", "br0", "10.205.0.1/24", None).unwrap();
    let mut machine = Machine::new(boot);
    machine.nics.push(Nic::virtio(Backend::Tap { ifname: tap }));
    machine.disks.push(disk.clone());
    machine.screen = true;
    machine.qmp = Some(qmp_path.clone());
    let vm = Appliance::boot(&machine, Some(&lab)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT).unwrap();
    let console = vm.console();
    assert!(console.contains("eth0"), "NIC in the banner:\n{console}");
    assert!(
        console.contains(&format!("screen: {screen_kind}")) && console.contains("keyboard: PS/2"),
        "screen and keyboard found:\n{console}"
    );
    let mut qmp = Qmp::connect(&qmp_path, Duration::from_secs(10)).unwrap();
    let step = Duration::from_secs(30);
    for (prompt, keys) in [
        ("interface (eth0) [eth0]:", "\n"),
        ("DHCP (y/n) [n]:", "n\n"),
        ("address with prefix [192.168.2.21/24]:", "10.205.0.2/24\n"),
        ("default gateway (Enter for none):", "\n"),
        ("DNS servers, separated by commas:", "10.205.0.1\n"),
        ("hostname [lbmed]:", "lbscreen\n"),
        ("console password (Enter for none):", "\n"),
        (
            "management admin key (paste the line of tools keygen's .pub file; Enter for none):",
            "\n",
        ),
        ("apply and save? (y/n):", "y\n"),
    ] {
        vm.wait_prompt(prompt, step).unwrap();
        qmp.type_text(keys).unwrap();
    }
    vm.wait_for("the save", step, |l| {
        l.starts_with("config: saved to slot A")
    })
    .unwrap();
    let loss = client.ping_loss("10.205.0.2", 5, "0.2").unwrap();
    assert_eq!(
        loss,
        0.0,
        "ping after the keyboard wizard; console:\n{}",
        vm.console()
    );
    vm.wait_prompt("lbscreen>", step).unwrap();
    // Let the idle loop draw the last rows, then keep the screen.
    std::thread::sleep(Duration::from_secs(2));
    let dir = tools::workspace::root()
        .join("target")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let png = dir.join(format!("first-boot-{name}.png"));
    qmp.screendump(&png, "png").unwrap();
    let ppm = tmp.path().join("screen.ppm");
    qmp.screendump(&ppm, "ppm").unwrap();
    let bytes = std::fs::read(&ppm).unwrap();
    let (w, h, rgb) = tools::qmp::read_ppm(&bytes).unwrap();
    let background = &rgb[..3];
    let ink = rgb.chunks(3).filter(|p| *p != background).count();
    assert!(
        ink * 100 > w * h,
        "the screen shows text ({ink} of {} pixels differ from the background)",
        w * h
    );
    assert!(std::fs::metadata(&png).unwrap().len() > 0);
}

#[test]
fn iso_boots_under_bios() {
    iso_boots_and_takes_the_wizard_on_the_keyboard(
        Boot::IsoBios(images().iso.clone()),
        "bios",
        "VGA text 80x25",
    );
}

#[test]
fn iso_boots_under_uefi() {
    iso_boots_and_takes_the_wizard_on_the_keyboard(
        Boot::IsoUefi(images().iso.clone()),
        "uefi",
        "framebuffer",
    );
}

/// A damaged config blob as boot module (truncated, one bit flipped, a
/// future format version): a clear console error, no virtual services, and
/// the appliance still boots and answers on the command line's address.
#[test]
fn damaged_config_blob_is_reported_and_the_appliance_still_serves() {
    let dir = std::env::temp_dir().join(format!("lbtest-{}-blob", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.bin");
    let medical = tools::workspace::root().join("lb-core/configs/medical.toml");
    tools::config_cmd::compile(&medical, &good).unwrap();
    let blob = std::fs::read(&good).unwrap();
    let mut flipped = blob.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x01;
    let mut future = blob.clone();
    future[4] = 0x7f; // format version, right after the 4-byte magic
    let cases = [
        ("truncated", blob[..blob.len() / 2].to_vec()),
        ("flipped", flipped),
        ("future", future),
    ];
    for (name, bytes) in cases {
        let path = dir.join(format!("{name}.bin"));
        std::fs::write(&path, bytes).unwrap();
        let mut lab = Lab::new().unwrap();
        let tap = lab.tap("br0").unwrap();
        let client = lab.host("client", "br0", "10.204.0.1/24", None).unwrap();
        let mut machine = Machine::new(Boot::Kernel {
            elf: images().kernel.clone(),
            cmdline: "ip=10.204.0.2/24".into(),
            module: Some(path),
        });
        machine.nics.push(Nic::virtio(Backend::Tap { ifname: tap }));
        let vm = Appliance::boot(&machine, Some(&lab)).unwrap();
        vm.wait_ready(BOOT_TIMEOUT).unwrap();
        let console = vm.console();
        assert!(
            console.lines().any(|l| l.starts_with("error: config: ")),
            "{name}: a clear config error:\n{console}"
        );
        assert!(
            console.contains("running with no virtual services"),
            "{name}:\n{console}"
        );
        let loss = client.ping_loss("10.204.0.2", 5, "0.05").unwrap();
        assert_eq!(
            loss,
            0.0,
            "{name}: still serves; console:\n{}",
            vm.console()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `crash=pagefault|stack|panic` on the command line: the appliance prints
/// the exception report (or panic message) and halts instead of resetting
/// or coming up, so a real fault in the field leaves its evidence.
#[test]
fn crash_hooks_report_the_fault_and_halt() {
    let cases = [
        (
            "pagefault",
            "EXCEPTION: page fault",
            "CR2 0x0000010000000000",
        ),
        (
            "stack",
            "EXCEPTION: page fault",
            "stack overflow: the boot stack ran into its guard page",
        ),
        (
            "panic",
            "panic at ",
            "crash test requested on the command line",
        ),
    ];
    for (hook, first, detail) in cases {
        let machine = kernel_machine(&format!("ip=10.205.0.2/24 crash={hook}"));
        let vm = Appliance::boot(&machine, None).unwrap();
        // The report's last line (a panic's message is its only line).
        let last = if hook == "panic" { detail } else { "halted." };
        vm.wait_for(last, BOOT_TIMEOUT, |l| l.contains(last))
            .unwrap();
        let console = vm.console();
        assert!(
            console.contains(detail),
            "{hook}: {detail:?} in:\n{console}"
        );
        assert!(console.contains(first), "{hook}: {first:?} in:\n{console}");
        if hook != "panic" {
            assert!(console.contains("RIP "), "{hook}: registers:\n{console}");
        }
        assert!(
            !console.contains("ready in"),
            "{hook}: the appliance must not come up:\n{console}"
        );
    }
}
