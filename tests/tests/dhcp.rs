//! DHCP end to end: dnsmasq in a namespace on each side leases the
//! appliance its eth0 (external) and eth1 (internal) addresses; NAT and SNAT
//! virtual services work through the leased addresses, and when the server
//! hands eth0 a different address at renewal, the appliance follows it.
//!
//! dnsmasq pins each NIC's address by MAC (`dhcp-host`), so the NAT real
//! server can use the appliance's leased internal address as its gateway.
//! The lease is dnsmasq's shortest (2 min): the appliance renews after one
//! minute; a restarted dnsmasq with another reservation refuses the old
//! address (`dhcp-authoritative`), and the appliance takes the new one.

use std::path::Path;
use std::time::Duration;
use tests::dicom::{studies, write_studies};
use tests::l4::{check_sent, storescp_recording};
use tests::lab::{Host, Lab};
use tests::peers::{Process, TempDir, echoscu, storescu};
use tools::console::Appliance;
use tools::qemu::{Backend, Nic};

const NET: &str = "10.232";
const MAC0: &str = "52:54:00:23:20:01";
const MAC1: &str = "52:54:00:23:20:02";

fn config() -> String {
    format!(
        r#"[network]
hostname = "lbdhcp"

[[network.interface]]
name = "eth0"
dhcp = true

[[network.interface]]
name = "eth1"
dhcp = true
role = "internal"

[[virtual_service]]
label = "NAT"
vip = "{NET}.0.100"
ports = 104
forwarding = "nat"
check_interval = 1
check_timeout = 1
check_rise = 1

[[virtual_service.real_server]]
label = "PACS-INT"
ip = "{NET}.1.21"

[[virtual_service]]
label = "SNAT"
vip = "{NET}.0.101"
ports = 104
forwarding = "snat"
check_interval = 1
check_timeout = 1
check_rise = 1

[[virtual_service.real_server]]
label = "PACS-EXT"
ip = "{NET}.0.31"
"#
    )
}

/// dnsmasq serving `subnet`.0/24 on `host`'s eth0, `mac` pinned to `pinned`.
fn dnsmasq(
    host: &Host,
    tmp: &Path,
    tag: &str,
    subnet: &str,
    mac: &str,
    pinned: &str,
    router: bool,
) -> Process {
    let leases = tmp.join(format!("{tag}.leases"));
    let range = format!("--dhcp-range={subnet}.50,{subnet}.60,255.255.255.0,2m");
    let pin = format!("--dhcp-host={mac},{pinned}");
    let router_opt = format!("--dhcp-option=3,{subnet}.1");
    let no_router = "--dhcp-option=3".to_string();
    let leasefile = format!("--dhcp-leasefile={}", leases.display());
    let argv = [
        "dnsmasq",
        "--no-daemon",
        "--user=root",
        "--port=0",
        "--interface=eth0",
        "--bind-interfaces",
        "--dhcp-authoritative",
        "--log-dhcp",
        "--no-resolv",
        "--no-hosts",
        &range,
        &pin,
        if router { &router_opt } else { &no_router },
        &leasefile,
    ];
    Process::spawn(host, &argv, &tmp.join(format!("{tag}.log"))).expect("dnsmasq")
}

/// Stores one study through `vip` and returns the peer address the PACS
/// recorded for it.
fn store_one(
    client: &Host,
    vip: &str,
    tmp: &Path,
    peers_log: &Path,
    seed: u64,
    vm: &Appliance,
) -> String {
    let files = write_studies(&tmp.join(format!("s{seed}")), &studies(1, 100, seed)).unwrap();
    let before = std::fs::read_to_string(peers_log).unwrap_or_default();
    check_sent(
        storescu(client, vip, 104, &files).unwrap(),
        &format!("storescu through {vip}; console:\n{}", vm.console()),
    )
    .unwrap();
    let after = std::fs::read_to_string(peers_log).unwrap_or_default();
    after[before.len()..]
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no peer recorded for {vip}"))
        .to_string()
}

/// Waits (bounded) until an association through `vip` succeeds.
fn wait_echo(client: &Host, vip: &str, vm: &Appliance) {
    for _ in 0..60 {
        if echoscu(client, vip, 104).unwrap() {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("no association through {vip}; console:\n{}", vm.console());
}

#[test]
fn nat_and_snat_through_leased_addresses_and_a_changed_lease_is_followed() {
    let tmp = TempDir::new("dhcp").unwrap();
    let mut lab = Lab::new().unwrap();
    let ext_tap = lab.tap("ext").unwrap();
    let int_tap = lab.tap("int").unwrap();
    let dx = lab
        .host("dx", "ext", &format!("{NET}.0.2/24"), None)
        .unwrap();
    let di = lab
        .host("di", "int", &format!("{NET}.1.2/24"), None)
        .unwrap();
    let client = lab
        .host("c0", "ext", &format!("{NET}.0.11/24"), None)
        .unwrap();
    // NAT: the PACS behind the appliance, whose leased internal address is its gateway.
    let pacs_int = lab
        .host(
            "rsi",
            "int",
            &format!("{NET}.1.21/24"),
            Some(&format!("{NET}.1.1")),
        )
        .unwrap();
    // SNAT, one-arm: the PACS beside the clients.
    let pacs_ext = lab
        .host("rse", "ext", &format!("{NET}.0.31/24"), None)
        .unwrap();
    let mut peers = Vec::new();
    let mut logs = Vec::new();
    for (tag, host) in [("int", &pacs_int), ("ext", &pacs_ext)] {
        let dir = tmp.sub(&format!("pacs-{tag}")).unwrap();
        let log = tmp.path().join(format!("pacs-{tag}-peers.txt"));
        peers.push(
            storescp_recording(
                host,
                104,
                &dir,
                &log,
                &tmp.path().join(format!("pacs-{tag}.log")),
            )
            .unwrap(),
        );
        logs.push(log);
    }
    let mut dhcp_ext = dnsmasq(
        &dx,
        tmp.path(),
        "ext",
        &format!("{NET}.0"),
        MAC0,
        &format!("{NET}.0.5"),
        true,
    );
    let _dhcp_int = dnsmasq(
        &di,
        tmp.path(),
        "int",
        &format!("{NET}.1"),
        MAC1,
        &format!("{NET}.1.1"),
        false,
    );

    let mut machine = tests::machine_with_config(tmp.path(), &config()).unwrap();
    for (tap, mac) in [(ext_tap, MAC0), (int_tap, MAC1)] {
        let mut nic = Nic::virtio(Backend::Tap { ifname: tap });
        nic.mac = Some(mac.into());
        machine.nics.push(nic);
    }
    let vm = Appliance::boot(&machine, Some(&lab)).unwrap();
    vm.wait_ready(Duration::from_secs(90)).unwrap();
    for (nic, addr) in [
        ("eth0", format!("{NET}.0.5/24")),
        ("eth1", format!("{NET}.1.1/24")),
    ] {
        let want = format!("{nic} leased {addr}");
        vm.wait_for(&want, Duration::from_secs(30), |l| l.starts_with(&want))
            .unwrap();
    }
    let (nat_vip, snat_vip) = (format!("{NET}.0.100"), format!("{NET}.0.101"));
    for vip in [&nat_vip, &snat_vip] {
        wait_echo(&client, vip, &vm);
    }
    // NAT keeps the client's address; SNAT shows the appliance's leased one.
    let seen = store_one(&client, &nat_vip, tmp.path(), &logs[0], 1, &vm);
    assert_eq!(
        seen,
        format!("{NET}.0.11"),
        "NAT through leased eth0 and eth1"
    );
    let seen = store_one(&client, &snat_vip, tmp.path(), &logs[1], 2, &vm);
    assert_eq!(
        seen,
        format!("{NET}.0.5"),
        "SNAT from the leased eth0 address"
    );

    // The DHCP server now reserves another address for eth0: at renewal it
    // refuses the old one and the appliance takes the new one.
    dhcp_ext.stop();
    let _dhcp_ext2 = dnsmasq(
        &dx,
        tmp.path(),
        "ext2",
        &format!("{NET}.0"),
        MAC0,
        &format!("{NET}.0.6"),
        true,
    );
    let want = format!("eth0 leased {NET}.0.6/24");
    vm.wait_for(&want, Duration::from_secs(150), |l| l.starts_with(&want))
        .unwrap();
    let loss = client.ping_loss(&format!("{NET}.0.6"), 5, "0.2").unwrap();
    assert_eq!(loss, 0.0, "answers on the new address; {}", vm.console());
    let seen = store_one(&client, &snat_vip, tmp.path(), &logs[1], 3, &vm);
    assert_eq!(seen, format!("{NET}.0.6"), "SNAT follows the new lease");
    let seen = store_one(&client, &nat_vip, tmp.path(), &logs[0], 4, &vm);
    assert_eq!(seen, format!("{NET}.0.11"), "NAT still transparent");
    drop(peers);
}
