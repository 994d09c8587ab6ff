//! The frame path on whole frames: ARP, ICMP, VIP traffic, own-address
//! traffic, originated packets, health changes, address changes.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use proptest::prelude::*;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet,
};

use super::*;
use crate::config::from_toml;
use crate::flow::Endpoint;
use crate::frame::{build, classify};
use crate::health::FailReason;

const MAC0: [u8; 6] = [2, 0, 0, 0, 0, 0xa0];
const MAC1: [u8; 6] = [2, 0, 0, 0, 0, 0xa1];
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xc1];
const GW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x99];
const RS_MAC: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 0xd1], [2, 0, 0, 0, 0, 0xd2]];
const OWN0: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const OWN1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const FAR_CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const DR_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NAT_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const L7_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 14);
const DR_RS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 21), Ipv4Addr::new(192, 0, 2, 22)];
const NAT_RS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 0, 11), Ipv4Addr::new(10, 1, 0, 12)];

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// The engine tests' configuration: services 0 DR, 1 NAT (persistent,
/// server port 11112), 2 SNAT, 3 NAT UDP without a check, 4 layer 7.
const CONFIG: &str = include_str!("../../testdata/l4.toml");

fn setup(config: Option<Config>) -> Setup {
    Setup {
        config,
        macs: alloc::vec![MAC0, MAC1],
        addrs: alloc::vec![Some((OWN0, 24)), Some((OWN1, 16))],
        gateway: Some(GW),
        hash_seed: 7,
        memory: 64 << 20,
        now: Instant(0),
        boot_id: 1,
    }
}

fn datapath() -> Datapath {
    Datapath::new(setup(Some(from_toml(CONFIG).expect("test config"))))
}

fn arp_frame(arp: Arp) -> Vec<u8> {
    let mut f = alloc::vec![0u8; MIN_FRAME];
    assert!(arp.emit(&mut f));
    f
}

/// A frame from `mac` to `to_mac`.
fn from(mac: [u8; 6], to_mac: [u8; 6], mut f: Vec<u8>) -> Vec<u8> {
    f[..6].copy_from_slice(&to_mac);
    f[6..12].copy_from_slice(&mac);
    f
}

fn syn(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> Vec<u8> {
    build::tcp(
        Endpoint::new(src, sport),
        Endpoint::new(dst, dport),
        SYN,
        b"",
    )
}

/// Teaches the path `ip` is at `mac` (an ARP reply to us on `nic`).
fn learn(dp: &mut Datapath, tx: &mut Recorder, nic: usize, ip: Ipv4Addr, mac: [u8; 6]) {
    let us = if nic == 0 { (MAC0, OWN0) } else { (MAC1, OWN1) };
    let reply = Arp::request(us.0, us.1, ip).reply(mac, ip);
    let mut f = arp_frame(reply);
    assert_eq!(
        dp.on_frame(nic, &mut f, Instant(1), tx),
        Verdict::PassToStack
    );
}

#[test]
fn answers_arp_for_a_vip_on_its_own_nic_only() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    let mut req = arp_frame(Arp::request(CLIENT_MAC, CLIENT, DR_VIP));
    assert_eq!(
        dp.on_frame(0, &mut req, Instant(5), &mut tx),
        Verdict::Transmit(0)
    );
    let reply = Arp::parse(&req).expect("reply in place");
    assert!(!reply.request);
    assert_eq!((reply.sender_mac, reply.sender_ip), (MAC0, DR_VIP));
    assert_eq!((reply.target_mac, reply.target_ip), (CLIENT_MAC, CLIENT));
    assert_eq!(&req[..6], &CLIENT_MAC);
    assert_eq!(dp.stats.vip_arp_replies, 1);
    // The requester was learnt.
    assert_eq!(dp.arp.lookup(CLIENT, Instant(6)), Some(CLIENT_MAC));
    // Layer 7 VIPs are the appliance's too.
    let mut l7 = arp_frame(Arp::request(CLIENT_MAC, CLIENT, L7_VIP));
    assert_eq!(
        dp.on_frame(0, &mut l7, Instant(5), &mut tx),
        Verdict::Transmit(0)
    );
    // Not on eth1, not for the stack's own address, not gratuitous ones.
    let mut other_nic = arp_frame(Arp::request(MAC1, NAT_RS[0], DR_VIP));
    assert_eq!(
        dp.on_frame(1, &mut other_nic, Instant(5), &mut tx),
        Verdict::PassToStack
    );
    let mut own = arp_frame(Arp::request(CLIENT_MAC, CLIENT, OWN0));
    assert_eq!(
        dp.on_frame(0, &mut own, Instant(5), &mut tx),
        Verdict::PassToStack
    );
    // Someone else announcing the VIP is not answered (and is counted as a
    // conflict).
    let mut garp = arp_frame(Arp::gratuitous(CLIENT_MAC, DR_VIP));
    assert_eq!(
        dp.on_frame(0, &mut garp, Instant(5), &mut tx),
        Verdict::PassToStack
    );
    assert_eq!(dp.stats.arp_conflicts, 1);
    assert!(tx.frames.is_empty(), "nothing else sent: {:?}", tx.frames);
}

#[test]
fn announces_every_vip_on_its_nic() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    dp.announce_vips(&mut tx);
    let sent: Vec<_> = tx
        .frames
        .iter()
        .map(|(nic, f)| (*nic, f.len(), Arp::parse(f).expect("ARP")))
        .collect();
    assert_eq!(sent.len(), 5);
    for (nic, len, a) in sent {
        assert_eq!((nic, len), (0, MIN_FRAME));
        assert!(a.request && a.sender_ip == a.target_ip && a.sender_mac == MAC0);
    }
}

#[test]
fn dr_waits_for_arp_then_forwards_with_the_servers_mac() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    let mut f = from(CLIENT_MAC, MAC0, syn(CLIENT, 40000, DR_VIP, 104));
    let original = f.clone();
    assert_eq!(
        dp.on_frame(0, &mut f, Instant(10), &mut tx),
        Verdict::Consumed
    );
    // One ARP request for the first real server, from our address.
    assert_eq!(tx.frames.len(), 1);
    let (nic, req) = &tx.frames[0];
    let a = Arp::parse(req).expect("ARP request");
    assert_eq!(*nic, 0);
    assert!(a.request);
    assert_eq!(
        (a.sender_mac, a.sender_ip, a.target_ip),
        (MAC0, OWN0, DR_RS[0])
    );
    // The answer releases the queued SYN, unchanged but for its MACs.
    tx.frames.clear();
    learn(&mut dp, &mut tx, 0, DR_RS[0], RS_MAC[0]);
    assert_eq!(tx.frames.len(), 1);
    let (nic, out) = &tx.frames[0];
    assert_eq!(*nic, 0);
    assert_eq!(&out[..6], &RS_MAC[0]);
    assert_eq!(&out[6..12], &MAC0);
    assert_eq!(&out[12..original.len()], &original[12..]);
    assert!(
        out[original.len()..].iter().all(|&b| b == 0),
        "zero padding"
    );
    // Later segments of the flow leave at once, rewritten in place.
    tx.frames.clear();
    let mut ack = from(
        CLIENT_MAC,
        MAC0,
        build::tcp(
            Endpoint::new(CLIENT, 40000),
            Endpoint::new(DR_VIP, 104),
            ACK,
            b"data",
        ),
    );
    assert_eq!(
        dp.on_frame(0, &mut ack, Instant(20), &mut tx),
        Verdict::Transmit(0)
    );
    assert_eq!(&ack[..6], &RS_MAC[0]);
    assert!(tx.frames.is_empty());
}

#[test]
fn nat_forwards_to_the_internal_nic_and_replies_back_to_the_client() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    learn(&mut dp, &mut tx, 1, NAT_RS[0], RS_MAC[0]);
    learn(&mut dp, &mut tx, 1, NAT_RS[1], RS_MAC[1]);
    learn(&mut dp, &mut tx, 0, CLIENT, CLIENT_MAC);
    let mut f = from(CLIENT_MAC, MAC0, syn(CLIENT, 40001, NAT_VIP, 104));
    assert_eq!(
        dp.on_frame(0, &mut f, Instant(10), &mut tx),
        Verdict::Transmit(1)
    );
    assert_eq!(&f[6..12], &MAC1);
    let Ok(crate::frame::Class::L4(pkt)) = classify(&f) else {
        panic!("a TCP segment")
    };
    let server = pkt.key.dst.addr;
    assert!(NAT_RS.contains(&server));
    let mut reply = from(
        RS_MAC[0],
        MAC1,
        build::tcp(
            Endpoint::new(server, 11112),
            Endpoint::new(CLIENT, 40001),
            SYN | ACK,
            b"",
        ),
    );
    assert_eq!(
        dp.on_frame(1, &mut reply, Instant(11), &mut tx),
        Verdict::Transmit(0)
    );
    assert_eq!(&reply[..6], &CLIENT_MAC);
    let Ok(crate::frame::Class::L4(back)) = classify(&reply) else {
        panic!("a TCP segment")
    };
    assert_eq!(back.key.src, Endpoint::new(NAT_VIP, 104));
}

#[test]
fn own_address_traffic_goes_to_the_stack() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    let mut ping = from(
        CLIENT_MAC,
        MAC0,
        build::icmp(CLIENT, OWN0, 8, 0, &[0, 1, 0, 1, 0xaa]),
    );
    assert_eq!(
        dp.on_frame(0, &mut ping, Instant(1), &mut tx),
        Verdict::PassToStack
    );
    let mut ssh = from(CLIENT_MAC, MAC0, syn(CLIENT, 40000, OWN0, 22));
    assert_eq!(
        dp.on_frame(0, &mut ssh, Instant(1), &mut tx),
        Verdict::PassToStack
    );
    assert!(tx.frames.is_empty());
    // A layer 7 VIP is the engine's: it answers the SYN itself (an ARP
    // request for the client first, the SYN-ACK waiting for its answer).
    let mut l7 = from(CLIENT_MAC, MAC0, syn(CLIENT, 40000, L7_VIP, 443));
    assert_eq!(
        dp.on_frame(0, &mut l7, Instant(1), &mut tx),
        Verdict::Consumed
    );
    assert!(!tx.frames.is_empty());
}

#[test]
fn routed_traffic_it_does_not_serve_gets_net_unreachable_rate_limited() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    let query = from(
        RS_MAC[0],
        MAC1,
        build::udp(
            Endpoint::new(NAT_RS[0], 5353),
            Endpoint::new(Ipv4Addr::new(9, 9, 9, 9), 53),
            b"who is 192.0.2.50",
        ),
    );
    let mut f = query.clone();
    assert_eq!(
        dp.on_frame(1, &mut f, Instant(1), &mut tx),
        Verdict::Consumed
    );
    assert_eq!(tx.frames.len(), 1);
    let (nic, out) = &tx.frames[0];
    assert_eq!(*nic, 1);
    let eth = EthernetFrame::new_checked(&out[..]).unwrap();
    assert_eq!((eth.dst_addr().0, eth.src_addr().0), (RS_MAC[0], MAC1));
    assert_eq!(eth.ethertype(), EthernetProtocol::Ipv4);
    let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (OWN1, NAT_RS[0]));
    assert_eq!(ip.next_header(), IpProtocol::Icmp);
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(matches!(
        Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()),
        Ok(Icmpv4Repr::DstUnreachable { .. })
    ));
    for _ in 0..1000 {
        let mut f = query.clone();
        dp.on_frame(1, &mut f, Instant(2), &mut tx);
    }
    assert_eq!(
        dp.stats.unreachable_sent,
        u64::from(unreachable::PER_SECOND)
    );
}

#[test]
fn malformed_frames_are_dropped_and_counted_by_reason() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    let mut bad = from(CLIENT_MAC, MAC0, syn(CLIENT, 40000, DR_VIP, 104));
    bad[14 + 10] ^= 0xff; // IPv4 header checksum
    assert_eq!(
        dp.on_frame(0, &mut bad, Instant(1), &mut tx),
        Verdict::Consumed
    );
    assert_eq!(
        dp.engine
            .drops()
            .get(crate::frame::DropReason::BadIpChecksum),
        1
    );
    let mut mid = from(
        CLIENT_MAC,
        MAC0,
        build::tcp(
            Endpoint::new(CLIENT, 1),
            Endpoint::new(DR_VIP, 104),
            ACK,
            b"",
        ),
    );
    assert_eq!(
        dp.on_frame(0, &mut mid, Instant(1), &mut tx),
        Verdict::Consumed
    );
    assert_eq!(dp.engine.drops().get(crate::frame::DropReason::NoFlow), 1);
    for len in 0..20 {
        let mut short = alloc::vec![0x08u8; len];
        dp.on_frame(0, &mut short, Instant(1), &mut tx);
    }
    assert!(tx.frames.is_empty());
}

#[test]
fn originated_packets_are_routed_and_wait_for_arp() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    let synack = build::tcp(
        Endpoint::new(L7_VIP, 443),
        Endpoint::new(FAR_CLIENT, 40000),
        SYN | ACK,
        b"",
    );
    let ip_len = synack.len() - 14;
    let packet = |b: &mut [u8]| b.copy_from_slice(&synack[14..]);
    // Beyond the subnets: through the gateway, whose MAC is not known yet.
    assert_eq!(
        dp.send_ipv4(&mut tx, FAR_CLIENT, ip_len, Instant(1), packet),
        Sent::Queued
    );
    assert_eq!(tx.frames.len(), 1, "an ARP request for the gateway");
    assert_eq!(Arp::parse(&tx.frames[0].1).map(|a| a.target_ip), Some(GW));
    tx.frames.clear();
    learn(&mut dp, &mut tx, 0, GW, GW_MAC);
    assert_eq!(tx.frames.len(), 1, "released");
    let out = &tx.frames[0].1;
    assert_eq!((&out[..6], &out[6..12]), (&GW_MAC[..], &MAC0[..]));
    let Ok(crate::frame::Class::L4(pkt)) = classify(out) else {
        panic!("a valid TCP segment: {out:?}")
    };
    assert_eq!(pkt.key.dst, Endpoint::new(FAR_CLIENT, 40000));
    assert_eq!(out.len(), MIN_FRAME, "padded");
    // Known now: straight out.
    tx.frames.clear();
    assert_eq!(
        dp.send_ipv4(&mut tx, FAR_CLIENT, ip_len, Instant(2), packet),
        Sent::Sent
    );
    assert_eq!(tx.frames.len(), 1);
    assert_eq!(dp.stats.originated, 2);
    // No route once the gateway is gone.
    dp.set_gateway(None);
    assert_eq!(
        dp.send_ipv4(&mut tx, FAR_CLIENT, ip_len, Instant(3), packet),
        Sent::Dropped
    );
    assert_eq!(dp.stats.originate_no_route, 1);
    // A full transmit queue is counted.
    learn(&mut dp, &mut tx, 0, CLIENT, CLIENT_MAC);
    tx.refuse = true;
    assert_eq!(
        dp.send_ipv4(&mut tx, CLIENT, ip_len, Instant(3), packet),
        Sent::Dropped
    );
    assert!(dp.stats.tx_full >= 1);
}

#[test]
fn unanswered_arp_is_retried_on_tick_then_given_up() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    let mut f = from(CLIENT_MAC, MAC0, syn(CLIENT, 40000, DR_VIP, 104));
    dp.on_frame(0, &mut f, Instant(0), &mut tx);
    for t in 1..=5u64 {
        dp.tick(Instant(t * arp::RETRY_MS), &mut tx);
    }
    let requests = tx
        .frames
        .iter()
        .filter(|(_, f)| Arp::parse(f).is_some())
        .count();
    assert_eq!(requests, usize::from(arp::MAX_TRIES));
    assert_eq!(dp.arp.stats.unanswered, 1);
}

#[test]
fn a_failed_check_takes_the_server_out_of_rotation() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    assert_eq!(dp.check_count(), 7, "every server but the UDP service's");
    // Servers without a check are up at once.
    assert_eq!(
        dp.engine.server_state(3, 0).map(|s| s.health),
        Some(crate::schedule::Health::Up)
    );
    let now = Instant(5_000);
    let mut jobs = Vec::new();
    while let Some(j) = dp.next_check(now) {
        jobs.push(j);
    }
    assert_eq!(jobs.len(), 7);
    for j in &jobs {
        let nic = if DR_RS.contains(&j.job.ip) { 0 } else { 1 };
        assert_eq!(j.nic, nic, "the stack on {}'s subnet", j.job.ip);
    }
    let pacs1 = jobs.iter().find(|j| j.job.ip == DR_RS[0]).unwrap();
    let pacs2 = jobs.iter().find(|j| j.job.ip == DR_RS[1]).unwrap();
    dp.check_done(pacs2.job.index, CheckVerdict::Pass, None, now);
    dp.check_done(
        pacs1.job.index,
        CheckVerdict::Fail(FailReason::ConnectFailed),
        None,
        now,
    );
    assert_eq!(
        dp.health().reason(0, 0).as_deref(),
        Some("TCP connect failed")
    );
    // The on-link check targets were asked for by ARP at the next tick,
    // once; again only after ARP_WARM_INTERVAL.
    let mut warm = Recorder::default();
    dp.tick(now, &mut warm);
    let asked: Vec<Ipv4Addr> = warm
        .frames
        .iter()
        .filter_map(|(_, f)| Arp::parse(f))
        .filter(|a| a.request)
        .map(|a| a.target_ip)
        .collect();
    for j in &jobs {
        assert!(
            asked.contains(&j.job.ip),
            "{} asked for: {asked:?}",
            j.job.ip
        );
    }
    let mut again = Recorder::default();
    dp.tick(now, &mut again);
    assert!(again.frames.is_empty(), "each target once per tick");
    let events: Vec<_> = core::iter::from_fn(|| dp.events.pop()).collect();
    assert!(
        events.iter().any(|(sev, cat, l)| *sev == Severity::Warning
            && *cat == Category::Health
            && l.contains("PACS1")
            && l.contains("down (TCP connect failed)")),
        "{events:?}"
    );
    assert_eq!(
        dp.check_failure(0, 0).as_deref(),
        Some("TCP connect failed")
    );
    learn(&mut dp, &mut tx, 0, DR_RS[1], RS_MAC[1]);
    for port in 0..10 {
        let mut f = from(CLIENT_MAC, MAC0, syn(CLIENT, 41000 + port, DR_VIP, 104));
        assert_eq!(
            dp.on_frame(0, &mut f, Instant(6_000), &mut tx),
            Verdict::Transmit(0)
        );
        assert_eq!(&f[..6], &RS_MAC[1], "every new flow on PACS2");
    }
}

#[test]
fn an_address_change_moves_routing_and_unreachable_source() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    // eth1 loses its address (a lost lease): the NAT servers are reached
    // through the gateway now.
    dp.set_address(1, None);
    let mut f = from(CLIENT_MAC, MAC0, syn(CLIENT, 40000, NAT_VIP, 104));
    assert_eq!(
        dp.on_frame(0, &mut f, Instant(1), &mut tx),
        Verdict::Consumed
    );
    let a = Arp::parse(&tx.frames[0].1).expect("ARP");
    assert_eq!((tx.frames[0].0, a.target_ip), (0, GW));
    dp.set_gateway(None);
    let mut f = from(CLIENT_MAC, MAC0, syn(CLIENT, 40001, NAT_VIP, 104));
    assert_eq!(
        dp.on_frame(0, &mut f, Instant(1), &mut tx),
        Verdict::Consumed
    );
    assert_eq!(dp.engine.drops().get(crate::frame::DropReason::NoRoute), 1);
    tx.frames.clear();
    // A new lease on another subnet.
    let moved = Ipv4Addr::new(10, 1, 7, 7);
    dp.set_address(1, Some((moved, 16)));
    assert_eq!(dp.address(1), Some((moved, 16)));
    let mut f = from(CLIENT_MAC, MAC0, syn(CLIENT, 40002, NAT_VIP, 104));
    assert_eq!(
        dp.on_frame(0, &mut f, Instant(2), &mut tx),
        Verdict::Consumed
    );
    let a = tx
        .frames
        .iter()
        .find_map(|(_, f)| Arp::parse(f))
        .expect("ARP");
    assert_eq!(a.sender_ip, moved, "requests come from the new address");
}

#[test]
fn a_rejected_config_runs_with_no_services_but_routes_every_nic() {
    let mut dp = Datapath::new(setup(None));
    assert_eq!(dp.vip_count(), 0);
    assert_eq!(dp.check_count(), 0);
    let mut tx = Recorder::default();
    let mut f = from(CLIENT_MAC, MAC0, syn(CLIENT, 40000, OWN0, 22));
    assert_eq!(
        dp.on_frame(0, &mut f, Instant(1), &mut tx),
        Verdict::PassToStack
    );
    assert_eq!(dp.engine.route(NAT_RS[0]), Some((1, NAT_RS[0])));
}

#[test]
fn tables_are_limited_to_the_memory_there_is() {
    let config = from_toml(CONFIG).unwrap();
    let mut caps = Capacities::from_config(&config);
    let line = limit_to_memory(&mut caps, 8 << 20).expect("limited");
    assert!(line.starts_with("l4: tables limited by RAM"), "{line}");
    assert_eq!(caps.conntrack, (8 << 20) / 4 / FLOW_BYTES);
    assert!(line.contains("l7: limited by RAM"), "{line}");
    assert_eq!(caps.l7_connections, (8 << 20) / 4 / 256);
    let mut small = Capacities::from_config(&config);
    small.conntrack = 10;
    small.persistence = 10;
    small.l7_connections = 10;
    small.l7_hold_bytes = 1024;
    assert!(limit_to_memory(&mut small, 8 << 20).is_none());
    let mut s = setup(Some(config));
    s.memory = 1 << 20;
    let mut dp = Datapath::new(s);
    assert!(dp.log.pop().is_some_and(|l| l.contains("limited by RAM")));
}

/// Every frame the path sends is a whole Ethernet frame from one of our
/// MACs; a forwarded frame leaves from ours too.
fn check_outputs(v: Verdict, frame: &[u8], tx: &Recorder) {
    for (nic, f) in &tx.frames {
        assert!(*nic < 2);
        assert!(f.len() >= MIN_FRAME, "{} bytes", f.len());
        assert!(
            f[6..12] == MAC0 || f[6..12] == MAC1,
            "source MAC {:?}",
            &f[6..12]
        );
    }
    if let Verdict::Transmit(nic) = v {
        assert!(nic < 2);
        assert!(frame[6..12] == MAC0 || frame[6..12] == MAC1);
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), nic in 0usize..3) {
        let mut dp = datapath();
        let mut tx = Recorder::default();
        let mut f = bytes.clone();
        let v = dp.on_frame(nic, &mut f, Instant(1), &mut tx);
        check_outputs(v, &f, &tx);
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        which in 0usize..5,
        flips in proptest::collection::vec((0usize..80, any::<u8>()), 0..6),
        cut in 0usize..90,
    ) {
        let mut dp = datapath();
        let mut tx = Recorder::default();
        learn(&mut dp, &mut tx, 0, DR_RS[0], RS_MAC[0]);
        tx.frames.clear();
        let base = match which {
            0 => syn(CLIENT, 40000, DR_VIP, 104),
            1 => syn(CLIENT, 40000, NAT_VIP, 104),
            2 => arp_frame(Arp::request(CLIENT_MAC, CLIENT, DR_VIP)),
            3 => build::icmp(CLIENT, OWN0, 8, 0, &[1, 2, 3, 4]),
            _ => build::udp(Endpoint::new(NAT_RS[0], 1), Endpoint::new(FAR_CLIENT, 2), b"x"),
        };
        let mut f = from(CLIENT_MAC, MAC0, base);
        for (at, b) in flips {
            if let Some(x) = f.get_mut(at) {
                *x ^= b;
            }
        }
        f.truncate(f.len().saturating_sub(cut % 4 * cut));
        let v = dp.on_frame(0, &mut f, Instant(1), &mut tx);
        check_outputs(v, &f, &tx);
    }
}

#[test]
fn another_machine_claiming_a_vip_is_reported_once_a_minute_and_counted() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    let intruder = [2, 0, 0, 0, 0, 0xee];
    // A gratuitous ARP for the DR VIP from a real server that should not
    // answer for it ("the ARP problem").
    for t in [1_000u64, 2_000, 70_000] {
        let mut f = arp_frame(Arp::request(intruder, DR_VIP, DR_VIP));
        dp.on_frame(0, &mut f, Instant(t), &mut tx);
    }
    assert_eq!(dp.stats.arp_conflicts, 3);
    let events: Vec<_> = core::iter::from_fn(|| dp.events.pop()).collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].1, Category::Arp);
    assert!(
        events[0]
            .2
            .contains("192.0.2.10 is claimed by 02:00:00:00:00:ee on eth0"),
        "{events:?}"
    );
    // Our own announcements are no conflict.
    let mut f = arp_frame(Arp::request(MAC0, DR_VIP, DR_VIP));
    dp.on_frame(0, &mut f, Instant(200_000), &mut tx);
    assert_eq!(dp.stats.arp_conflicts, 3);
}

#[test]
fn a_full_connection_table_is_reported_with_what_it_refused() {
    let mut cfg = from_toml(CONFIG).unwrap();
    cfg.l4.conntrack_capacity = 1024;
    let mut dp = Datapath::new(setup(Some(cfg)));
    let mut tx = Recorder::default();
    learn(&mut dp, &mut tx, 0, DR_RS[0], RS_MAC[0]);
    learn(&mut dp, &mut tx, 0, DR_RS[1], RS_MAC[1]);
    while let Some(check) = dp.next_check(Instant(60_000)) {
        dp.check_done(check.job.index, CheckVerdict::Pass, None, Instant(60_000));
    }
    while dp.events.pop().is_some() {}
    // Many clients, each completing a handshake so the flows are not
    // early-dropped half-open ones.
    for i in 0..1500u32 {
        let client = Ipv4Addr::from(u32::from(Ipv4Addr::new(192, 0, 2, 100)) + (i % 100));
        let mut f = from(
            CLIENT_MAC,
            MAC0,
            syn(client, 20000 + (i / 100) as u16, DR_VIP, 104),
        );
        dp.on_frame(0, &mut f, Instant(61_000), &mut tx);
        let mut a = from(
            CLIENT_MAC,
            MAC0,
            build::tcp(
                Endpoint::new(client, 20000 + (i / 100) as u16),
                Endpoint::new(DR_VIP, 104),
                ACK,
                b"",
            ),
        );
        dp.on_frame(0, &mut a, Instant(61_000), &mut tx);
    }
    let refused = dp.engine.conntrack().stats.refused_full;
    assert!(refused > 0, "1500 flows into 1024 places");
    dp.tick(Instant(62_000), &mut tx);
    let events: Vec<_> = core::iter::from_fn(|| dp.events.pop()).collect();
    assert!(
        events.iter().any(|(s, c, t)| *s == Severity::Error
            && *c == Category::Table
            && t.contains(&format!("{refused} new flows refused"))),
        "{events:?}"
    );
    // Not again within the minute.
    dp.tick(Instant(63_000), &mut tx);
    assert!(dp.events.is_empty());
}

/// Checksums of a TCP frame (IPv4 and TCP), with smoltcp.
fn tcp_checksums_ok(f: &[u8]) -> bool {
    let ip = Ipv4Packet::new_checked(&f[ETHERNET_HEADER_LEN..]).unwrap();
    let tcp = smoltcp::wire::TcpPacket::new_checked(ip.payload()).unwrap();
    ip.verify_checksum()
        && tcp.verify_checksum(
            &smoltcp::wire::IpAddress::Ipv4(ip.src_addr()),
            &smoltcp::wire::IpAddress::Ipv4(ip.dst_addr()),
        )
}

#[test]
fn offloaded_frames_wait_for_arp_whole_and_super_frames_are_not_queued() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    // A NAT SYN with a partial checksum towards a server nobody resolved.
    let mut f = syn(FAR_CLIENT, 40000, NAT_VIP, 104);
    let o = build::partial(&mut f, None);
    assert_eq!(
        dp.on_frame_offloaded(0, &mut f, &o, Instant(1), &mut tx),
        Verdict::Consumed
    );
    assert_eq!(dp.arp.queued(), 1);
    let server = tx
        .frames
        .iter()
        .find_map(|(_, f)| Arp::parse(f).map(|a| a.target_ip))
        .expect("an ARP request for the server");
    let srv = NAT_RS.iter().position(|s| *s == server).unwrap();
    tx.frames.clear();
    learn(&mut dp, &mut tx, 1, server, RS_MAC[srv]);
    let (nic, sent) = &tx.frames[0];
    assert_eq!((*nic, &sent[..6]), (1, &RS_MAC[srv][..]));
    assert!(tcp_checksums_ok(sent), "released whole, checksum complete");

    // Once resolved, a super-frame goes out in place, still offloaded.
    let payload: Vec<u8> = (0..1448 * 8).map(|i| i as u8).collect();
    let mut big = build::tcp(
        Endpoint::new(FAR_CLIENT, 40000),
        Endpoint::new(NAT_VIP, 104),
        ACK,
        &payload,
    );
    let o = build::partial(&mut big, Some(1448));
    assert_eq!(
        dp.on_frame_offloaded(0, &mut big, &o, Instant(2), &mut tx),
        Verdict::Transmit(1)
    );
    // A super-frame for a flow whose next hop expired is dropped, counted.
    let mut dp2 = datapath();
    let mut f = syn(FAR_CLIENT, 40001, NAT_VIP, 104);
    dp2.on_frame(0, &mut f, Instant(1), &mut tx);
    let mut big = build::tcp(
        Endpoint::new(FAR_CLIENT, 40001),
        Endpoint::new(NAT_VIP, 104),
        ACK,
        &payload,
    );
    let o = build::partial(&mut big, Some(1448));
    assert_eq!(
        dp2.on_frame_offloaded(0, &mut big, &o, Instant(2), &mut tx),
        Verdict::Consumed
    );
    assert_eq!(dp2.stats.super_frames_unqueued, 1);
}

#[test]
fn next_hop_cache_follows_a_server_that_moved() {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    for (i, rs) in DR_RS.iter().enumerate() {
        learn(&mut dp, &mut tx, 0, *rs, RS_MAC[i]);
    }
    let mut f = syn(CLIENT, 41000, DR_VIP, 104);
    assert_eq!(
        dp.on_frame(0, &mut f, Instant(10), &mut tx),
        Verdict::Transmit(0)
    );
    let first = [f[0], f[1], f[2], f[3], f[4], f[5]];
    let srv = RS_MAC.iter().position(|m| *m == first).unwrap();
    // More segments of the flow hit the cache.
    for t in 11..20 {
        let mut g = build::tcp(
            Endpoint::new(CLIENT, 41000),
            Endpoint::new(DR_VIP, 104),
            ACK,
            b"x",
        );
        assert_eq!(
            dp.on_frame(0, &mut g, Instant(t), &mut tx),
            Verdict::Transmit(0)
        );
        assert_eq!(&g[..6], &RS_MAC[srv]);
    }
    assert!(dp.next_hops.hits >= 9, "hits {}", dp.next_hops.hits);
    // The server's MAC changes (a failover of its NIC): the next frame
    // already goes to the new one.
    let moved = [2, 0, 0, 0, 0, 0xee];
    learn(&mut dp, &mut tx, 0, DR_RS[srv], moved);
    let mut g = build::tcp(
        Endpoint::new(CLIENT, 41000),
        Endpoint::new(DR_VIP, 104),
        ACK,
        b"y",
    );
    assert_eq!(
        dp.on_frame(0, &mut g, Instant(21), &mut tx),
        Verdict::Transmit(0)
    );
    assert_eq!(&g[..6], &moved);
}

/// A live apply keeps the checks of servers that continue (their health
/// and schedule), drops those of removed ones (a check of a removed server
/// finishing late changes nothing), and adds checks for new ones.
#[test]
fn apply_config_keeps_continuing_checks_and_drops_removed_ones() {
    let mut dp = datapath();
    let now = Instant(5_000);
    let mut jobs = Vec::new();
    while let Some(j) = dp.next_check(now) {
        jobs.push(j);
    }
    let pacs = |i: usize| {
        jobs.iter()
            .find(|j| j.job.ip == DR_RS[i])
            .unwrap()
            .job
            .index
    };
    // PACS1 fails its check, PACS2 passes.
    dp.check_done(pacs(1), CheckVerdict::Pass, None, now);
    dp.check_done(
        pacs(0),
        CheckVerdict::Fail(FailReason::ConnectFailed),
        None,
        now,
    );
    let down = |dp: &Datapath, s: usize, r: usize| dp.engine.server_state(s, r).map(|st| st.health);
    assert_eq!(down(&dp, 0, 0), Some(crate::schedule::Health::Down));
    let nat_job = jobs
        .iter()
        .find(|j| j.job.ip == NAT_RS[0])
        .unwrap()
        .job
        .index;

    // New config: the NAT service is gone, everything else stays, and a
    // DR service with one checked server comes first.
    let mut new = from_toml(CONFIG).unwrap();
    new.virtual_services.remove(1);
    let mut extra = new.virtual_services[0].clone();
    extra.label = "EXTRA".into();
    extra.vip = Ipv4Addr::new(192, 0, 2, 15);
    extra.real_servers.truncate(1);
    extra.real_servers[0].label = "X1".into();
    extra.real_servers[0].ip = Ipv4Addr::new(192, 0, 2, 31);
    new.virtual_services.insert(0, extra);
    let before = dp.check_count();
    let report = dp.apply_config(new, Instant(6_000)).unwrap();
    assert_eq!(report.plan.services[1], Some(0));
    // The DR servers continue (now service 1) and keep their health.
    assert_eq!(down(&dp, 1, 0), Some(crate::schedule::Health::Down));
    assert_eq!(down(&dp, 1, 1), Some(crate::schedule::Health::Up));
    assert_eq!(
        down(&dp, 0, 0),
        Some(crate::schedule::Health::Unknown),
        "new: unchecked yet"
    );
    // Two NAT checks gone, one new.
    assert_eq!(dp.check_count(), before - 2 + 1);
    // The removed NAT server's check finishing now changes nothing.
    dp.check_done(
        nat_job,
        CheckVerdict::Fail(FailReason::ConnectFailed),
        None,
        Instant(6_001),
    );
    assert!(core::iter::from_fn(|| dp.events.pop()).all(|(_, _, l)| !l.contains("VNA")));
    // PACS1 keeps its check (same id): passes now are a recovery, not a
    // first verdict.
    let mut at = 6_000;
    let mut lines: Vec<_> = Vec::new();
    for _ in 0..10 {
        at += 60_000;
        while let Some(j) = dp.next_check(Instant(at)) {
            let verdict = if j.job.ip == DR_RS[0] {
                assert_eq!(j.job.index, pacs(0));
                CheckVerdict::Pass
            } else {
                CheckVerdict::Fail(FailReason::ConnectFailed)
            };
            dp.check_done(j.job.index, verdict, None, Instant(at));
        }
        lines.extend(core::iter::from_fn(|| dp.events.pop()).map(|(_, _, l)| l));
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("PACS1") && l.contains("recovered")),
        "{lines:?}"
    );
    assert_eq!(down(&dp, 1, 0), Some(crate::schedule::Health::Up));
}
