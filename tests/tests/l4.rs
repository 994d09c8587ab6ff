//! Layer 4 virtual services end to end: DR, NAT and SNAT through the booted
//! appliance with real DICOM peers (dcmtk's storescu/echoscu as modalities,
//! storescp as PACS real servers, an association replaying echoscu's PDUs
//! left idle) and a UDP service.
//!
//! Each test runs one scenario (see `tests::l4`):
//! 1. an association is opened and left idle for 130 s, then used again;
//! 2. two clients send 25 studies each (one in five over 1 MiB), one on port
//!    104 and one on 11112 of a multi-port VIP with source-IP persistence:
//!    every data set arrives byte-identical exactly once, each client's
//!    studies all on one PACS, which saw the client's own address (DR, NAT)
//!    or the appliance's (SNAT);
//!    Then bulk TCP with the hosts' default offloads (64 KiB super-frames
//!    with partial checksums): 160 MiB each way through a VIP, count and
//!    SHA-256 checked end to end, the NIC counters showing super-frames forwarded
//!    whole (DR, SNAT) or cut in software for an offload-less internal NIC
//!    (NAT); then two 12 MiB studies byte-identical;
//! 3. 30 associations to a VIP without persistence, weights 2:1 (weighted
//!    round robin), split 20:10;
//! 4. a UDP datagram round-trips through a UDP VIP;
//! 5. after the idle association ended, PACS1's storescp is killed: once its
//!    health check marked it down (interval 1 s, fall 2), every new
//!    association succeeds, on PACS2;
//! 6. PACS1's storescp is started again: once its check passes (rise 1), the
//!    2:1 split resumes.

use std::time::Duration;
use tests::dicom::{Study, write_studies};
use tests::l4::{Method, Plan, Scenario, bulk_transfer, check_sent, holder, single_holder};
use tests::peers::{Process, echoscu, storescu};

fn associations_received(s: &Scenario, pacs: usize) -> usize {
    // Both the first storescp's log and, once restarted, the second one's.
    ["log", "restarted.log"]
        .iter()
        .map(|suffix| s.tmp.path().join(format!("pacs{pacs}-104.{suffix}")))
        .map(|log| std::fs::read_to_string(log).unwrap_or_default())
        .map(|text| text.matches("Association Acknowledged").count())
        .sum()
}

fn scenario(method: Method, third_octet: u8) {
    let s = Scenario::start(Plan::new(method, third_octet)).unwrap();
    let plan = &s.plan;
    let (vip_p, vip_s, vip_u) = (plan.vip_persistent(), plan.vip_spread(), plan.vip_udp());
    s.wait_service(&vip_p, 104).unwrap();
    s.wait_service(&vip_s, 104).unwrap();

    // 1. An association left idle for longer than two minutes.
    let mut idle = Process::spawn(
        &s.clients[1],
        &[
            "python3",
            &Scenario::peers_script("dicom_idle_echo.py"),
            &vip_p,
            "104",
            "--idle",
            "130",
        ],
        &s.tmp.path().join("idle.log"),
    )
    .unwrap();

    // 2. Studies from two clients on the two ports of the persistent VIP.
    let (studies0, files0) = s.studies_for(0, 25, 1).unwrap();
    let (studies1, files1) = s.studies_for(1, 25, 2).unwrap();
    std::thread::scope(|scope| {
        let a = scope.spawn(|| storescu(&s.clients[0], &vip_p, 104, &files0));
        let b = scope.spawn(|| storescu(&s.clients[1], &vip_p, 11112, &files1));
        check_sent(
            a.join().unwrap().unwrap(),
            "storescu from client 0 to port 104",
        )
        .unwrap();
        check_sent(
            b.join().unwrap().unwrap(),
            "storescu from client 1 to port 11112",
        )
        .unwrap();
    });
    let arrivals = s.arrivals().unwrap();
    let peers = s.peer_addresses().unwrap();
    for (c, studies) in [(0, &studies0), (1, &studies1)] {
        let home = single_holder(&arrivals, studies)
            .unwrap_or_else(|e| panic!("persistence keeps client {c} on one PACS: {e}"));
        let seen = &peers[home];
        let expected = match method {
            Method::Snat => plan.appliance(),
            _ => plan.client(c),
        };
        let from_expected = seen.iter().filter(|a| **a == expected).count();
        assert!(
            from_expected >= studies.len(),
            "PACS{} saw {expected} for client {c}'s studies; it recorded {seen:?}",
            home + 1
        );
    }
    if method == Method::Snat {
        assert!(
            peers.iter().flatten().all(|a| *a == plan.appliance()),
            "SNAT real servers see only the appliance: {peers:?}"
        );
    }

    // 2b. Bulk TCP with the hosts' default offloads: 64 KiB super-frames
    // with partial checksums enter the appliance and leave it whole (DR,
    // SNAT) or cut into checksummed segments for an internal NIC without
    // offloads (NAT). Exact bytes both ways, then two 12 MiB studies
    // byte-identical.
    let mut s = s;
    for reverse in [false, true] {
        bulk_transfer(&s.clients[0], &s.plan.vip_bulk(), 160 << 20, reverse)
            .unwrap_or_else(|e| panic!("{e:#}; {}", s.context()));
    }
    let eth0 = s.nic_counters(0).unwrap();
    assert!(
        eth0["rx-super"] > 0,
        "eth0 received TCP super-frames: {eth0:?}"
    );
    if method == Method::Nat {
        let eth1 = s.nic_counters(1).unwrap();
        assert!(
            eth1["segmented"] > 0 && eth1["sw-csum"] > 0,
            "super-frames cut and checksummed for the offload-less eth1: {eth1:?}"
        );
    } else {
        assert!(
            eth0["tx-super"] > 0,
            "super-frames left eth0 whole: {eth0:?}"
        );
    }
    let big = vec![
        Study::new(900, 77, 4096, 3072),
        Study::new(901, 78, 3072, 4096),
    ];
    let big_files = write_studies(&s.tmp.path().join("big"), &big).unwrap();
    check_sent(
        storescu(&s.clients[0], &vip_p, 104, &big_files).unwrap(),
        "storescu of two 12 MiB studies",
    )
    .unwrap();
    let arrivals = s.arrivals().unwrap();
    for st in &big {
        holder(&arrivals, st).unwrap();
    }

    // 3. Without persistence, new associations follow the weights 2:1.
    let before = [associations_received(&s, 0), associations_received(&s, 1)];
    for _ in 0..30 {
        assert!(
            echoscu(&s.clients[0], &vip_s, 104).unwrap(),
            "echo through {vip_s}; {}",
            s.context()
        );
    }
    let spread = [
        associations_received(&s, 0) - before[0],
        associations_received(&s, 1) - before[1],
    ];
    assert_eq!(
        spread,
        [20, 10],
        "weighted round robin 2:1 over 30 associations"
    );

    // 4. UDP round trip.
    let out = s.clients[0]
        .command(&[
            "python3",
            &Scenario::peers_script("udp_query.py"),
            &vip_u,
            "7777",
            "hello-udp",
        ])
        .output()
        .unwrap();
    let reply = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "UDP reply through {vip_u}; {}",
        s.context()
    );
    assert!(
        reply.contains(&format!("{vip_u}:7777 ECHO")),
        "reply from the VIP: {reply}"
    );
    assert!(
        reply.trim_end().ends_with(":hello-udp"),
        "payload intact: {reply}"
    );

    // 1, continued: the idle association is still usable.
    let status = idle.wait_timeout(Duration::from_secs(200)).unwrap();
    let idle_log = std::fs::read_to_string(s.tmp.path().join("idle.log")).unwrap_or_default();
    assert!(
        status.success(),
        "idle association survived 130 s: {idle_log}\n{}",
        s.context()
    );

    // 5. A dead PACS gets no new associations once its check marks it down.
    for p in s.pacs[0].storescp.iter_mut() {
        p.stop();
    }
    std::thread::sleep(Duration::from_secs(5));
    let before = associations_received(&s, 1);
    for _ in 0..10 {
        assert!(
            echoscu(&s.clients[0], &vip_s, 104).unwrap(),
            "echo after PACS1 died; {}",
            s.context()
        );
    }
    assert_eq!(associations_received(&s, 1) - before, 10, "all on PACS2");

    // 6. A recovered PACS comes back once its check passes again (rise 1).
    s.restart_storescp(0).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let before = [associations_received(&s, 0), associations_received(&s, 1)];
    for _ in 0..30 {
        assert!(
            echoscu(&s.clients[0], &vip_s, 104).unwrap(),
            "echo after PACS1 came back; {}",
            s.context()
        );
    }
    let spread = [
        associations_received(&s, 0) - before[0],
        associations_received(&s, 1) - before[1],
    ];
    // The scheduler's state after the outage may shift the first few picks.
    assert_eq!(
        spread[0] + spread[1],
        30,
        "every association acknowledged: {spread:?}"
    );
    assert!(
        (16..=24).contains(&spread[0]),
        "PACS1 back in the 2:1 rotation: {spread:?}"
    );
}

#[test]
fn direct_routing_carries_dicom_transparently() {
    scenario(Method::Dr, 10);
}

#[test]
fn nat_carries_dicom_transparently() {
    scenario(Method::Nat, 20);
}

#[test]
fn snat_carries_dicom_from_the_appliance_address() {
    scenario(Method::Snat, 30);
}

/// Truncated headers, bad checksums, IP options, fragments and odd TCP flags
/// at the VIP and at the appliance's own address: no crash, the drops are
/// counted by reason in `status`, and the service carries on.
#[test]
fn malformed_traffic_is_counted_and_service_continues() {
    let s = Scenario::start(Plan::new(Method::Dr, 40)).unwrap();
    let plan = &s.plan;
    let vip = plan.vip_persistent();
    s.wait_service(&vip, 104).unwrap();
    let console = s.vm.console();
    let mac = console
        .lines()
        .find(|l| l.starts_with("eth0 ") && l.contains("virtio-net"))
        .and_then(|l| l.split_whitespace().nth(2))
        .expect("eth0's MAC in the banner")
        .to_string();
    let out = s.clients[0]
        .command(&[
            "python3",
            &Scenario::peers_script("malformed.py"),
            "--mac",
            &mac,
            "--vip",
            &vip,
            "--own",
            &plan.appliance(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scapy sender: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loss = s.clients[0]
        .ping_loss(&plan.appliance(), 10, "0.05")
        .unwrap();
    assert_eq!(loss, 0.0, "still answers ping; {}", s.context());
    assert!(
        echoscu(&s.clients[0], &vip, 104).unwrap(),
        "service continues; {}",
        s.context()
    );
    let mut s = s;
    s.vm.send_line("status").unwrap();
    let drops =
        s.vm.wait_for(
            "the drop counters in status",
            Duration::from_secs(10),
            |l| l.starts_with("drops:"),
        )
        .unwrap();
    let count = |reason: &str| -> u64 {
        drops
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(reason)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {reason} counter in {drops}"))
    };
    // Each of these went to the VIP and to the own address, three rounds.
    for reason in [
        "bad-ip-checksum",
        "bad-ihl",
        "bad-total-length",
        "bad-tcp-data-offset",
        "truncated-ipv4",
    ] {
        assert!(count(reason) >= 3, "{reason} counted: {drops}");
    }
    // Fragments: at the VIP only (the stack reassembles its own). The odd
    // TCP flag combinations share the 4-tuple of an earlier valid SYN, so
    // they belong to its flow rather than count as no-flow.
    assert!(count("fragment") >= 3, "fragments counted: {drops}");
    let console = s.vm.console().to_lowercase();
    for bad in ["panic", "fatal", "exception"] {
        assert!(
            !console.contains(bad),
            "no {bad} on the console:\n{console}"
        );
    }
}
