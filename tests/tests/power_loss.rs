//! Power loss while the appliance saves a large configuration: QEMU is
//! killed at a random moment of `save` (started by `drain`/`online`, which
//! persist) and the disk is then read back with the appliance's own store
//! code and booted again. Every time, the configuration is exactly the one
//! before the save or the one being saved — never neither, never a mix —
//! and the next boot runs with exactly that.

use lb_core::config::{AdminState, Config, parse_toml};
use std::path::Path;
use std::time::{Duration, Instant};
use tests::console::Appliance;
use tests::images;
use tests::lab::Lab;
use tests::peers::TempDir;
use tools::qemu::{Backend, Boot, Machine, Nic};

const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// 256 services of 64 real servers with long labels: about 1 MiB stored,
/// so a save takes many writes.
fn big_config() -> Config {
    let mut toml = String::from(
        "[network]\nhostname = \"lbbig\"\n[[network.interface]]\nname = \"eth0\"\naddress = \"10.206.0.2\"\nprefix = 16\n",
    );
    for s in 0..256u32 {
        toml += &format!(
            "[[virtual_service]]\nlabel = \"SERVICE-{s:03}-WITH-A-LONG-LABEL\"\nvip = \"10.206.{}.{}\"\nports = 104\nforwarding = \"dr\"\ncheck_type = \"none\"\n",
            1 + s / 200,
            1 + s % 200
        );
        for r in 0..64u32 {
            toml += &format!(
                "[[virtual_service.real_server]]\nlabel = \"REALSERVER-{s:03}-{r:02}-LONG-NAME\"\nip = \"10.206.{}.{}\"\n",
                100 + r / 200,
                1 + r % 200
            );
        }
    }
    let c = parse_toml(&toml).unwrap();
    lb_core::config::validate(&c).unwrap();
    c
}

fn boot(disk: &Path, module: Option<std::path::PathBuf>) -> (Lab, Appliance) {
    let mut lab = Lab::new().unwrap();
    let tap = lab.tap("br0").unwrap();
    let mut m = Machine::new(Boot::Kernel {
        elf: images().kernel.clone(),
        cmdline: String::new(),
        module,
    });
    m.memory_mib = 256;
    m.nics.push(Nic::virtio(Backend::Tap { ifname: tap }));
    m.disks.push(disk.to_path_buf());
    let vm = Appliance::boot(&m, Some(&lab)).unwrap();
    vm.wait_ready(BOOT_TIMEOUT).unwrap();
    (lab, vm)
}

/// The stored config as the appliance's store code reads it.
fn stored(disk: &Path) -> (u64, Config) {
    let shown = tools::disk_cmd::show(disk).unwrap();
    let (loaded, config) = shown
        .config
        .unwrap_or_else(|| panic!("no config on the disk:\n{}", shown.status));
    (loaded.sequence, config)
}

fn power_loss(kills: usize) {
    let tmp = TempDir::new("powerloss").unwrap();
    let disk = tmp.path().join("config.img");
    tools::disk_cmd::create(&disk, 16).unwrap();
    let big = big_config();
    let blob = tmp.path().join("big.bin");
    std::fs::write(&blob, lb_core::envelope::encode(&big).unwrap()).unwrap();

    // First boot from the boot module; a full save measures how long one takes.
    let (lab, mut vm) = boot(&disk, Some(blob));
    vm.send_line("save").unwrap();
    vm.wait_for("the start of the save", Duration::from_secs(30), |l| {
        l.starts_with("store: writing")
    })
    .unwrap();
    let started = Instant::now();
    let saved = vm
        .wait_for("the save", Duration::from_secs(60), |l| {
            l.starts_with("config: saved")
        })
        .unwrap();
    let first = started.elapsed().as_millis();
    // A save as the loop below makes them (drain), timed end to end.
    let vs = &big.virtual_services[1];
    let from = vm.mark();
    let t0 = Instant::now();
    vm.send_line(&format!("drain {}/{}", vs.label, vs.real_servers[0].label))
        .unwrap();
    vm.wait_from(
        from,
        "the start of the save",
        Duration::from_secs(30),
        |l| l.starts_with("store: writing"),
    )
    .unwrap();
    let t1 = Instant::now();
    vm.wait_from(from, "the save", Duration::from_secs(60), |l| {
        l.starts_with("config: saved")
    })
    .unwrap();
    let window = t1.elapsed().as_millis().max(5) as u64;
    eprintln!(
        "a save of the big config: {saved} ({first} ms as seen from the host); drain: {} ms to the start of its save, {window} ms to its end",
        (t1 - t0).as_millis()
    );
    let mut big = big;
    big.virtual_services[1].real_servers[0].state = AdminState::Drain;
    drop(vm);
    drop(lab);
    let (mut seq, mut current) = stored(&disk);
    assert_eq!(current, big);

    let mut rng = (std::process::id() as u64) << 17 ^ 0x9E37_79B9_7F4A_7C15;
    let (mut old_kept, mut new_kept) = (0, 0);
    for k in 0..kills {
        let (lab, mut vm) = boot(&disk, None);
        let console = vm.console();
        assert!(
            console.contains(&format!("sequence {seq})")) && console.contains("from the store"),
            "boot {k} runs the stored config (sequence {seq}):\n{console}"
        );
        let vs = &current.virtual_services[0];
        let target = format!("{}/{}", vs.label, vs.real_servers[0].label);
        let state = if vs.real_servers[0].state == AdminState::Drain {
            AdminState::Online
        } else {
            AdminState::Drain
        };
        let mut next = current.clone();
        next.virtual_services[0].real_servers[0].state = state;
        let word = if state == AdminState::Drain {
            "drain"
        } else {
            "online"
        };
        let from = vm.mark();
        vm.send_line(&format!("{word} {target}")).unwrap();
        vm.wait_from(from, "the save starting", Duration::from_secs(30), |l| {
            l.starts_with("store: writing")
        })
        .unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % (window + 1)));
        drop(vm); // kills QEMU: the power goes
        drop(lab);
        let (after_seq, after) = stored(&disk);
        if after == current {
            old_kept += 1;
        } else if after == next {
            new_kept += 1;
            assert_eq!(after_seq, seq + 1);
        } else {
            panic!("kill {k}: the disk holds neither the old nor the new config");
        }
        seq = after_seq;
        current = after;
    }
    eprintln!(
        "{kills} power losses during save: old config kept {old_kept} times, new {new_kept} times"
    );
    // The last state boots.
    let (_lab, vm) = boot(&disk, None);
    assert!(vm.console().contains(&format!("sequence {seq})")));
}

#[test]
fn power_loss_during_save_keeps_old_or_new() {
    power_loss(3);
}

#[test]
#[ignore = "long: 20 boots of a 1 MiB config, each killed during save"]
fn power_loss_during_save_twenty_times() {
    power_loss(20);
}
