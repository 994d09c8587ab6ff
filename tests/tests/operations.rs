//! The guide's operations (§10) at the console, with real DICOM peers:
//! drain during a store (the running association completes, new ones go
//! to the other PACS, `online` brings it back, both survive a reboot), and
//! a live apply of a pasted config that adds and removes services while an
//! idle association through an unchanged service survives it.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tests::console::Appliance;
use tests::dicom::{received, studies, write_studies};
use tests::images;
use tests::lab::{Host, Lab};
use tests::peers::{Process, TempDir, echoscu, storescu};
use tools::qemu::{Backend, Boot, Machine, Nic};

const STEP: Duration = Duration::from_secs(30);

/// The lab's subnet (third octet per test), VIPs and PACS addresses.
struct Net(u8);

impl Net {
    fn ip(&self, host: u8) -> String {
        format!("10.207.{}.{host}", self.0)
    }
    fn vip(&self, n: u8) -> String {
        self.ip(100 + n)
    }
}

/// A DR service `label` on VIP `vip` port 104 over the PACS hosts `pacs`.
fn service(net: &Net, label: &str, vip: u8, pacs: &[(&str, u8)]) -> String {
    let mut t = format!(
        "\n[[virtual_service]]\nlabel = \"{label}\"\nvip = \"{}\"\nports = \"104\"\nforwarding = \"dr\"\nscheduler = \"rr\"\ncheck_type = \"none\"\n",
        net.vip(vip)
    );
    for (name, host) in pacs {
        t += &format!(
            "\n[[virtual_service.real_server]]\nlabel = \"{name}\"\nip = \"{}\"\n",
            net.ip(*host)
        );
    }
    t
}

fn network(net: &Net) -> String {
    format!(
        "[network]\nhostname = \"lbops\"\n[[network.interface]]\nname = \"eth0\"\naddress = \"{}\"\nprefix = 24\n",
        net.ip(2)
    )
}

/// Associations a PACS acknowledged so far.
fn associations(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("Association Acknowledged")
        .count()
}

/// Field order is drop order: storescp ends before its namespace goes.
struct Pacs {
    _scp: Process,
    _host: Host,
    dir: PathBuf,
    log: PathBuf,
}

fn boot(lab: &mut Lab, disk: &Path, module: Option<PathBuf>) -> Appliance {
    let tap = lab.tap("br0").unwrap();
    let mut m = Machine::new(Boot::Kernel {
        elf: images().kernel.clone(),
        cmdline: String::new(),
        module,
    });
    m.nics.push(Nic::virtio(Backend::Tap { ifname: tap }));
    m.disks.push(disk.to_path_buf());
    let vm = Appliance::boot(&m, Some(lab)).unwrap();
    vm.wait_ready(Duration::from_secs(90)).unwrap();
    vm
}

fn command(vm: &mut Appliance, line: &str, expect: &str) -> String {
    let from = vm.mark();
    vm.wait_prompt("lbops>", STEP).unwrap();
    vm.send_line(line).unwrap();
    vm.wait_from(from, expect, STEP, |l| l.contains(expect))
        .unwrap()
}

/// `echoscu` `n` times through `vip`; how many each PACS took.
fn spread(client: &Host, vip: &str, pacs: &[Pacs], n: usize) -> [usize; 2] {
    let before = [associations(&pacs[0].log), associations(&pacs[1].log)];
    for _ in 0..n {
        assert!(echoscu(client, vip, 104).unwrap(), "echo through {vip}");
    }
    [
        associations(&pacs[0].log) - before[0],
        associations(&pacs[1].log) - before[1],
    ]
}

/// A lab with a modality and two PACS (storescp, one process per
/// association as a PACS does) set up for direct routing of `vips`, the
/// appliance's config (`toml`) compiled, and a blank config disk.
struct Site {
    pacs: Vec<Pacs>,
    client: Host,
    tmp: TempDir,
    disk: PathBuf,
    blob: PathBuf,
    lab: Lab,
}

fn site(net: &Net, toml: &str, vips: &[u8]) -> Site {
    let tmp = TempDir::new("ops").unwrap();
    let disk = tmp.path().join("config.img");
    tools::disk_cmd::create(&disk, 4).unwrap();
    let file = tmp.path().join("config.toml");
    std::fs::write(&file, toml).unwrap();
    let blob = tmp.path().join("config.bin");
    tools::config_cmd::compile(&file, &blob).unwrap();
    let mut lab = Lab::new().unwrap();
    let client = lab
        .host("modality", "br0", &format!("{}/24", net.ip(11)), None)
        .unwrap();
    let mut pacs = Vec::new();
    for i in 0..2u8 {
        let host = lab
            .host(
                &format!("pacs{i}"),
                "br0",
                &format!("{}/24", net.ip(21 + i)),
                None,
            )
            .unwrap();
        // Direct routing: the VIPs on loopback, never answered for by ARP.
        for v in vips {
            host.exec(&[
                "ip",
                "addr",
                "add",
                &format!("{}/32", net.vip(*v)),
                "dev",
                "lo",
            ])
            .unwrap();
        }
        for (k, v) in [("arp_ignore", "1"), ("arp_announce", "2")] {
            for dev in ["all", "eth0"] {
                host.exec(&[
                    "sysctl",
                    "-q",
                    "-w",
                    &format!("net.ipv4.conf.{dev}.{k}={v}"),
                ])
                .unwrap();
            }
        }
        let dir = tmp.sub(&format!("pacs{i}")).unwrap();
        let log = tmp.path().join(format!("pacs{i}.log"));
        let d = dir.display().to_string();
        let scp = Process::spawn(
            &host,
            &[
                "storescp", "-v", "--fork", "-ts", "600", "-dhl", "-aet", "PACS", "+B", "-od", &d,
                "104",
            ],
            &log,
        )
        .unwrap();
        tests::peers::wait_listening(&host, 104, Duration::from_secs(10)).unwrap();
        pacs.push(Pacs {
            _scp: scp,
            _host: host,
            dir,
            log,
        });
    }
    Site {
        pacs,
        client,
        tmp,
        disk,
        blob,
        lab,
    }
}

#[test]
fn drain_during_a_store_survives_reboot() {
    let net = Net(7);
    let toml = network(&net)
        + &service(
            &net,
            "DICOM-Modalities",
            0,
            &[("DICOM1", 21), ("DICOM2", 22)],
        );
    let Site {
        pacs,
        client,
        tmp,
        disk,
        blob,
        mut lab,
    } = site(&net, &toml, &[0]);
    let vip = net.vip(0);
    let vip = vip.as_str();
    let mut vm = boot(&mut lab, &disk, Some(blob));
    // A long store: 30 studies, one in three over 1 MiB, in one association.
    let study_list = studies(30, 3, 77);
    let files = write_studies(&tmp.path().join("studies"), &study_list).unwrap();
    let store = std::thread::scope(|scope| {
        let running = scope.spawn(|| storescu(&client, vip, 104, &files));
        // Once it is under way on DICOM1 (round robin's first choice),
        // drain DICOM1.
        let deadline = std::time::Instant::now() + STEP;
        while associations(&pacs[0].log) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the store never reached DICOM1"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        command(&mut vm, "drain DICOM-Modalities/DICOM1", "config: saved");
        // New associations meanwhile all go to DICOM2 (round robin would
        // otherwise alternate).
        assert_eq!(
            spread(&client, vip, &pacs, 4),
            [0, 4],
            "new associations avoid a drained server"
        );
        running.join().unwrap().unwrap()
    });
    assert!(
        store.status.success(),
        "the running association completes: {}{}",
        String::from_utf8_lossy(&store.stdout),
        String::from_utf8_lossy(&store.stderr)
    );
    let got = received(&[&pacs[0].dir]).unwrap();
    for s in &study_list {
        assert_eq!(
            got.get(&s.dataset),
            Some(&1),
            "study {} on DICOM1 once, byte for byte",
            s.sop_instance_uid
        );
    }
    drop(vm);

    // Reboot from the disk alone: still drained.
    let mut vm = boot(&mut lab, &disk, None);
    let console = vm.console();
    assert!(console.contains("from the store"), "{console}");
    let line = command(&mut vm, "status", "rs DICOM1");
    assert!(line.contains(" drain "), "{line}");
    assert_eq!(
        spread(&client, vip, &pacs, 3),
        [0, 3],
        "still drained after the reboot"
    );
    command(&mut vm, "online DICOM-Modalities/DICOM1", "config: saved");
    let back = spread(&client, vip, &pacs, 4);
    assert_eq!(back, [2, 2], "DICOM1 back in the rotation");
    drop(vm);

    // And online survives the next reboot.
    let mut vm = boot(&mut lab, &disk, None);
    let line = command(&mut vm, "status", "rs DICOM1");
    assert!(line.contains(" online "), "{line}");
    let again = spread(&client, vip, &pacs, 4);
    assert_eq!(again, [2, 2], "DICOM1 in the rotation after the reboot");
}

/// `config paste` of a config that removes one service and adds another:
/// an idle association through the unchanged service survives the apply
/// (and is used again after it), the new VIP serves at once, the removed
/// one no longer does, and the change is saved.
#[test]
fn live_apply_keeps_an_idle_association_through_an_unchanged_service() {
    let net = Net(8);
    let keep = service(&net, "DICOM-Keep", 0, &[("PACS1", 21)]);
    let gone = service(&net, "DICOM-Gone", 1, &[("PACS2", 22)]);
    let added = service(&net, "DICOM-New", 2, &[("PACS2", 22)]);
    let before = network(&net) + &keep + &gone;
    let after = network(&net) + &keep + &added;
    let Site {
        pacs,
        client,
        tmp,
        disk,
        blob,
        mut lab,
    } = site(&net, &before, &[0, 1, 2]);
    let mut vm = boot(&mut lab, &disk, Some(blob));
    assert_eq!(
        spread(&client, &net.vip(1), &pacs, 1),
        [0, 1],
        "the old service serves"
    );

    // An association through the service that stays, idle across the apply.
    let peer = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/dicom_idle_echo.py");
    let mut idle = Process::spawn(
        &client,
        &[
            "python3",
            &peer.display().to_string(),
            &net.vip(0),
            "104",
            "--idle",
            "20",
        ],
        &tmp.path().join("idle.log"),
    )
    .unwrap();
    let deadline = std::time::Instant::now() + STEP;
    while associations(&pacs[0].log) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the idle association never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Paste the new config over the serial console.
    vm.wait_prompt("lbops>", STEP).unwrap();
    vm.send_line("config paste").unwrap();
    vm.wait_for("the paste prompt", STEP, |l| {
        l.starts_with("Paste the TOML config")
    })
    .unwrap();
    for line in after.lines() {
        vm.send_line(line).unwrap();
    }
    vm.send_line(".").unwrap();
    vm.wait_prompt("apply and save? (y/n):", STEP).unwrap();
    let console = vm.console();
    assert!(
        console.contains("DICOM-Gone: removed") || console.contains("DICOM-Gone"),
        "the changes are shown:\n{console}"
    );
    let from = vm.mark();
    vm.send_line("y").unwrap();
    vm.wait_from(from, "the apply", STEP, |l| {
        l.starts_with("config: applied from the console")
    })
    .unwrap();
    vm.wait_from(from, "the save", STEP, |l| {
        l.starts_with("config: saved to slot")
    })
    .unwrap();

    // The new VIP serves at once; the removed one does not.
    assert_eq!(
        spread(&client, &net.vip(2), &pacs, 2),
        [0, 2],
        "the new service serves"
    );
    assert!(
        !tests::peers::echoscu(&client, &net.vip(1), 104).unwrap(),
        "the removed service's VIP no longer serves"
    );
    // The idle association outlived the apply and answered again on it.
    let status = idle.wait_timeout(Duration::from_secs(60)).unwrap();
    let log = std::fs::read_to_string(tmp.path().join("idle.log")).unwrap_or_default();
    assert!(
        status.success(),
        "the idle association survived the apply: {log}\n{}",
        vm.console()
    );
    // And the change was saved: the next boot runs it, from the disk alone.
    drop(vm);
    let vm = boot(&mut lab, &disk, None);
    let console = vm.console();
    assert!(
        console.contains("config: 2 virtual service(s) from the store"),
        "{console}"
    );
    assert_eq!(spread(&client, &net.vip(2), &pacs, 1), [0, 1]);
}
