//! Engine tests: every forwarding method end to end on hand-built frames.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use proptest::prelude::*;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use super::*;
use crate::config::parse_toml;
use crate::frame::build;
use crate::frame::{ETHERNET_HEADER_LEN, TcpFlags};

const EXT: usize = 0;
const INT: usize = 1;
const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const LB_INT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const LOCAL_CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const DR_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NAT_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const SNAT_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const UDP_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 13);
const L7_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 14);
const DR_RS: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 21), Ipv4Addr::new(192, 0, 2, 22)];
const NAT_RS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 0, 11), Ipv4Addr::new(10, 1, 0, 12)];
const SNAT_RS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 0, 21), Ipv4Addr::new(10, 1, 0, 22)];
const UDP_RS: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 31);

const SYN: u8 = TcpFlags::SYN;
const ACK: u8 = TcpFlags::ACK;
const PSH_ACK: u8 = 0x18;

/// Services 0 DR, 1 NAT (persistent, server port 11112), 2 SNAT, 3 NAT UDP
/// without persistence, 4 layer 7.
const CONFIG: &str = include_str!("../../testdata/l4.toml");

fn config() -> Config {
    let c = parse_toml(CONFIG).expect("test config parses");
    crate::config::validate(&c).expect("test config is valid");
    c
}

fn engine() -> Engine {
    engine_with(|_| {})
}

fn engine_with(f: impl FnOnce(&mut Capacities)) -> Engine {
    let c = config();
    let mut caps = Capacities::from_config(&c);
    caps.conntrack = 1024;
    caps.persistence = 256;
    f(&mut caps);
    Engine::new(&c, caps).unwrap()
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn tcp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, flags: u8) -> Vec<u8> {
    build::tcp(
        Endpoint::new(src, sp),
        Endpoint::new(dst, dp),
        flags,
        b"payload",
    )
}

fn udp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16) -> Vec<u8> {
    build::udp(Endpoint::new(src, sp), Endpoint::new(dst, dp), b"<14>hello")
}

/// The 5-tuple of a frame, as classified.
fn key(frame: &[u8]) -> FlowKey {
    match frame::classify(frame) {
        Ok(Class::L4(p)) => p.key,
        other => panic!("not L4: {other:?}"),
    }
}

fn ttl(frame: &[u8]) -> u8 {
    frame[ETHERNET_HEADER_LEN + 8]
}

/// Full verification of the IPv4 and TCP/UDP checksums with smoltcp.
fn checksums_ok(frame: &[u8]) -> bool {
    let ip = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).unwrap();
    let (s, d) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    ip.verify_checksum()
        && match ip.next_header() {
            IpProtocol::Tcp => TcpPacket::new_checked(ip.payload())
                .unwrap()
                .verify_checksum(&s, &d),
            IpProtocol::Udp => UdpPacket::new_checked(ip.payload())
                .unwrap()
                .verify_checksum(&s, &d),
            IpProtocol::Icmp => frame::checksum::sum(ip.payload()) == 0xffff,
            _ => false,
        }
}

fn ep(a: Ipv4Addr, p: u16) -> Endpoint {
    Endpoint::new(a, p)
}

#[test]
fn dr_forwards_unchanged_to_the_server() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, DR_VIP, 104, SYN);
    let before = f.clone();
    let d = e.process(EXT, &mut f, t(0));
    let Decision::Forward { nic, next_hop } = d else {
        panic!("{d:?}")
    };
    assert_eq!(nic, EXT, "DR leaves on the segment of the real servers");
    assert!(DR_RS.contains(&next_hop));
    assert_eq!(f, before, "DR changes no byte; the caller writes the MACs");
    // The rest of the flow goes to the same server, TTL kept.
    for i in 0..5 {
        let mut f = tcp(CLIENT, 40000, DR_VIP, 104, PSH_ACK);
        assert_eq!(
            e.process(EXT, &mut f, t(10 + i)),
            Decision::Forward { nic: EXT, next_hop }
        );
        assert_eq!(ttl(&f), 64);
    }
    // Round robin: the next client goes to the other server.
    let mut f = tcp(CLIENT, 40001, DR_VIP, 11112, SYN);
    let Decision::Forward {
        next_hop: other, ..
    } = e.process(EXT, &mut f, t(20))
    else {
        panic!()
    };
    assert_ne!(other, next_hop);
    let stats = e.service_stats(0).unwrap();
    assert_eq!(stats.service.connections, 2);
    assert_eq!(stats.service.packets, 7);
}

#[test]
fn nat_rewrites_destination_inbound_and_source_on_replies() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    let d = e.process(EXT, &mut f, t(0));
    let Decision::Forward { nic: INT, next_hop } = d else {
        panic!("{d:?}")
    };
    assert!(NAT_RS.contains(&next_hop));
    let k = key(&f);
    assert_eq!(k.src, ep(CLIENT, 40000), "NAT keeps the client's address");
    assert_eq!(k.dst, ep(next_hop, 11112));
    assert_eq!(ttl(&f), 63);
    assert!(checksums_ok(&f));

    // The server answers the client; the reply leaves towards the gateway
    // with the VIP as source.
    let mut r = tcp(next_hop, 11112, CLIENT, 40000, SYN | ACK);
    assert_eq!(
        e.process(INT, &mut r, t(1)),
        Decision::Forward {
            nic: EXT,
            next_hop: GW
        }
    );
    let k = key(&r);
    assert_eq!(k.src, ep(NAT_VIP, 104));
    assert_eq!(k.dst, ep(CLIENT, 40000));
    assert!(checksums_ok(&r));

    // A client on the external subnet is reached directly.
    let mut f = tcp(LOCAL_CLIENT, 5000, NAT_VIP, 104, SYN);
    let Decision::Forward { next_hop: rs, .. } = e.process(EXT, &mut f, t(2)) else {
        panic!()
    };
    let mut r = tcp(rs, 11112, LOCAL_CLIENT, 5000, SYN | ACK);
    assert_eq!(
        e.process(INT, &mut r, t(3)),
        Decision::Forward {
            nic: EXT,
            next_hop: LOCAL_CLIENT
        }
    );
}

#[test]
fn snat_rewrites_both_ends_and_reverses_replies() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, SNAT_VIP, 2575, SYN);
    let d = e.process(EXT, &mut f, t(0));
    let Decision::Forward { nic: INT, next_hop } = d else {
        panic!("{d:?}")
    };
    let k = key(&f);
    assert_eq!(
        k.src.addr, LB_INT,
        "SNAT hides the client behind the appliance"
    );
    assert_eq!(k.dst, ep(next_hop, 2575));
    assert!(checksums_ok(&f));
    let srv = SNAT_RS.iter().position(|a| *a == next_hop).unwrap();
    let ports = e.snat_ports(2, srv).unwrap();
    assert!(ports.is_allocated(k.src.port));
    assert_eq!(ports.in_use(), 1);

    let mut r = tcp(next_hop, 2575, LB_INT, k.src.port, SYN | ACK);
    assert_eq!(
        e.process(INT, &mut r, t(1)),
        Decision::Forward {
            nic: EXT,
            next_hop: GW
        }
    );
    let rk = key(&r);
    assert_eq!((rk.src, rk.dst), (ep(SNAT_VIP, 2575), ep(CLIENT, 40000)));
    assert!(checksums_ok(&r));

    // Two clients using the same source port get different SNAT ports.
    let mut g = tcp(LOCAL_CLIENT, 40000, SNAT_VIP, 2575, SYN);
    e.process(EXT, &mut g, t(2));
    let mut h = tcp(Ipv4Addr::new(198, 51, 100, 8), 40000, SNAT_VIP, 2575, SYN);
    e.process(EXT, &mut h, t(3));
    let (kg, kh) = (key(&g), key(&h));
    assert!(kg.dst != k.dst || kg.src.port != k.src.port);
    assert!(kh.dst != kg.dst || kh.src.port != kg.src.port);
}

#[test]
fn snat_port_is_freed_when_the_flow_expires() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, SNAT_VIP, 2575, SYN);
    let Decision::Forward { next_hop, .. } = e.process(EXT, &mut f, t(0)) else {
        panic!()
    };
    let srv = SNAT_RS.iter().position(|a| *a == next_hop).unwrap();
    assert_eq!(e.snat_ports(2, srv).unwrap().in_use(), 1);
    // Handshake timeout (60 s) passes without an answer.
    let mut removed = 0;
    for _ in 0..100 {
        removed += e.expire(t(61_000), 64);
    }
    assert!(removed >= 1);
    assert_eq!(e.snat_ports(2, srv).unwrap().in_use(), 0);
    assert_eq!(e.server_state(2, srv).unwrap().active, 0);
}

#[test]
fn snat_port_exhaustion_is_counted() {
    let mut e = engine_with(|c| c.snat_ports = 5000..=5001);
    let mut forwarded = 0;
    let mut exhausted = 0;
    // Round robin alternates servers: each has two ports. Every handshake
    // completes, so no port can be taken back from a half-open flow.
    for i in 0..6u16 {
        let mut f = tcp(CLIENT, 1000 + i, SNAT_VIP, 2575, SYN);
        match e.process(EXT, &mut f, t(u64::from(i))) {
            Decision::Forward { .. } => {
                forwarded += 1;
                assert!((5000..=5001).contains(&key(&f).src.port));
                let mut ack = tcp(CLIENT, 1000 + i, SNAT_VIP, 2575, ACK);
                assert!(matches!(
                    e.process(EXT, &mut ack, t(u64::from(i))),
                    Decision::Forward { .. }
                ));
            }
            Decision::Drop(DropReason::PortsExhausted) => exhausted += 1,
            d => panic!("{d:?}"),
        }
    }
    assert_eq!((forwarded, exhausted), (4, 2));
    assert_eq!(e.conntrack().stats.early_drop, 0);
    assert_eq!(e.drops().get(DropReason::PortsExhausted), 2);
    assert_eq!(
        e.service_stats(2)
            .unwrap()
            .service
            .drops
            .get(DropReason::PortsExhausted),
        2
    );
}

/// A spoofed SYN flood at a SNAT VIP takes a source port per fake
/// handshake; once a server's ports are all taken, a new flow takes one
/// back from a half-open flow to that server, so real clients still get
/// through and established flows keep theirs.
#[test]
fn snat_ports_taken_by_a_syn_flood_go_back_to_real_clients() {
    let mut e = engine_with(|c| c.snat_ports = 5000..=5063);
    // A real client, established on one server (round robin: the next
    // SYN goes to the other one).
    let mut f = tcp(CLIENT, 40000, SNAT_VIP, 2575, SYN);
    let Decision::Forward { next_hop, .. } = e.process(EXT, &mut f, t(0)) else {
        panic!()
    };
    let srv = SNAT_RS.iter().position(|a| *a == next_hop).unwrap();
    let established = key(&f).src.port;
    let mut ack = tcp(CLIENT, 40000, SNAT_VIP, 2575, ACK);
    assert!(matches!(
        e.process(EXT, &mut ack, t(0)),
        Decision::Forward { .. }
    ));
    // 1 000 spoofed SYNs: far more than both servers' 128 ports.
    for n in 0..1000u32 {
        let src = Ipv4Addr::from(0x0b00_0000 + n);
        let mut syn = tcp(src, 1024 + n as u16, SNAT_VIP, 2575, SYN);
        assert!(
            matches!(e.process(EXT, &mut syn, t(1)), Decision::Forward { .. }),
            "{n}: a port is taken back from a half-open flow"
        );
    }
    assert_eq!(e.snat_ports(2, srv).unwrap().in_use(), 64);
    assert!(e.conntrack().stats.early_drop >= 1000 - 127);
    assert_eq!(e.drops().get(DropReason::PortsExhausted), 0);
    // The established flow kept its port and still forwards.
    assert!(e.snat_ports(2, srv).unwrap().is_allocated(established));
    let mut data = tcp(CLIENT, 40000, SNAT_VIP, 2575, PSH_ACK);
    assert!(matches!(
        e.process(EXT, &mut data, t(2)),
        Decision::Forward { .. }
    ));
    assert_eq!(key(&data).src.port, established);
    // New real clients get through, to either server.
    for port in 41000..41010 {
        let mut f = tcp(CLIENT, port, SNAT_VIP, 2575, SYN);
        assert!(matches!(
            e.process(EXT, &mut f, t(3)),
            Decision::Forward { .. }
        ));
    }
    // Every port but the established flow's is held by a handshake.
    assert_eq!(e.conntrack().half_open(), 127);
}

#[test]
fn udp_nat_with_and_without_checksum() {
    let mut e = engine();
    let mut f = udp(CLIENT, 5000, UDP_VIP, 514);
    assert_eq!(
        e.process(EXT, &mut f, t(0)),
        Decision::Forward {
            nic: INT,
            next_hop: UDP_RS
        }
    );
    assert!(checksums_ok(&f));
    let mut f = udp(CLIENT, 5001, UDP_VIP, 514);
    let at = ETHERNET_HEADER_LEN + 20 + 6;
    f[at..at + 2].copy_from_slice(&[0, 0]);
    assert!(matches!(
        e.process(EXT, &mut f, t(1)),
        Decision::Forward { .. }
    ));
    assert_eq!(&f[at..at + 2], &[0, 0], "no checksum stays no checksum");
    assert_eq!(key(&f).dst, ep(UDP_RS, 514));
}

#[test]
fn tcp_without_syn_and_without_flow_is_dropped() {
    let mut e = engine();
    for flags in [ACK, PSH_ACK, TcpFlags::RST, SYN | ACK, TcpFlags::FIN | ACK] {
        let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, flags);
        assert_eq!(
            e.process(EXT, &mut f, t(0)),
            Decision::Drop(DropReason::NoFlow)
        );
    }
    assert_eq!(
        e.service_stats(1)
            .unwrap()
            .service
            .drops
            .get(DropReason::NoFlow),
        5
    );
    assert_eq!(e.conntrack().len(), 0);
}

#[test]
fn not_l4_service_traffic_goes_to_the_stack() {
    let mut e = engine();
    // The appliance's own address, an unknown port of a VIP.
    for (dst, port) in [
        (L7_VIP, 80),
        (Ipv4Addr::new(192, 0, 2, 1), 22),
        (NAT_VIP, 80),
    ] {
        let mut f = tcp(CLIENT, 40000, dst, port, SYN);
        let before = f.clone();
        assert_eq!(e.process(EXT, &mut f, t(0)), Decision::ToStack);
        assert_eq!(f, before);
    }
    // Ping of a VIP, ARP.
    let mut f = build::icmp(CLIENT, DR_VIP, 8, 0, b"ping");
    assert_eq!(e.process(EXT, &mut f, t(0)), Decision::ToStack);
    let mut f = tcp(CLIENT, 1, DR_VIP, 104, SYN);
    f[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(e.process(EXT, &mut f, t(0)), Decision::ToStack);
}

#[test]
fn malformed_frames_and_unknown_nic_are_counted() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    f[ETHERNET_HEADER_LEN + 10] ^= 0xff;
    assert_eq!(
        e.process(EXT, &mut f, t(0)),
        Decision::Drop(DropReason::BadIpChecksum)
    );
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    assert_eq!(
        e.process(7, &mut f, t(0)),
        Decision::Drop(DropReason::UnknownInterface)
    );
    assert_eq!(
        e.process(EXT, &mut [0u8; 3], t(0)),
        Decision::Drop(DropReason::TruncatedEthernet)
    );
    assert_eq!(e.drops().total(), 3);
}

#[test]
fn fragments_of_l4_services_are_dropped() {
    let mut e = engine();
    let mut f = udp(CLIENT, 5000, UDP_VIP, 514);
    crate::frame::testutil::set_ip_field(&mut f, |ip| ip.set_more_frags(true));
    assert_eq!(
        e.process(EXT, &mut f, t(0)),
        Decision::Drop(DropReason::Fragment)
    );
    // From a NAT real server (a reply in pieces).
    let mut f = udp(UDP_RS, 514, CLIENT, 5000);
    crate::frame::testutil::set_ip_field(&mut f, |ip| ip.set_frag_offset(8));
    assert_eq!(
        e.process(INT, &mut f, t(0)),
        Decision::Drop(DropReason::Fragment)
    );
    // For the appliance itself: the stack reassembles.
    let mut f = udp(CLIENT, 5000, Ipv4Addr::new(192, 0, 2, 1), 53);
    crate::frame::testutil::set_ip_field(&mut f, |ip| ip.set_more_frags(true));
    assert_eq!(e.process(EXT, &mut f, t(0)), Decision::ToStack);
}

#[test]
fn ttl_is_decremented_by_nat_and_kept_by_dr() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    crate::frame::testutil::set_ip_field(&mut f, |ip| ip.set_hop_limit(1));
    assert_eq!(
        e.process(EXT, &mut f, t(0)),
        Decision::Drop(DropReason::TtlExpired)
    );
    assert_eq!(
        e.conntrack().len(),
        0,
        "no flow for a packet that cannot pass"
    );
    let mut f = tcp(CLIENT, 40000, DR_VIP, 104, SYN);
    crate::frame::testutil::set_ip_field(&mut f, |ip| ip.set_hop_limit(1));
    assert!(matches!(
        e.process(EXT, &mut f, t(0)),
        Decision::Forward { .. }
    ));
    assert_eq!(ttl(&f), 1);
}

#[test]
fn persistence_sends_a_client_back_to_its_server() {
    let mut e = engine();
    let mut first = None;
    for port in 40000..40010 {
        let mut f = tcp(CLIENT, port, NAT_VIP, 104, SYN);
        let Decision::Forward { next_hop, .. } = e.process(EXT, &mut f, t(u64::from(port))) else {
            panic!()
        };
        assert_eq!(
            *first.get_or_insert(next_hop),
            next_hop,
            "round robin overridden by persistence"
        );
        // The client completes its handshake: that binds it.
        let mut ack = tcp(CLIENT, port, NAT_VIP, 104, ACK);
        assert!(matches!(
            e.process(EXT, &mut ack, t(u64::from(port))),
            Decision::Forward { .. }
        ));
    }
    // Another client is balanced to the other server.
    let mut f = tcp(LOCAL_CLIENT, 1, NAT_VIP, 104, SYN);
    let Decision::Forward { next_hop, .. } = e.process(EXT, &mut f, t(50_000)) else {
        panic!()
    };
    assert_ne!(Some(next_hop), first);
}

#[test]
fn server_down_loses_persistence_and_new_flows_but_keeps_flows() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    let Decision::Forward { next_hop: rs, .. } = e.process(EXT, &mut f, t(0)) else {
        panic!()
    };
    let srv = NAT_RS.iter().position(|a| *a == rs).unwrap();
    assert!(e.set_server_health(1, srv, false));
    // The established flow continues.
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, PSH_ACK);
    assert_eq!(
        e.process(EXT, &mut f, t(1)),
        Decision::Forward {
            nic: INT,
            next_hop: rs
        }
    );
    // A new flow of the same client moves to the other server.
    for p in 1..5 {
        let mut f = tcp(CLIENT, 40000 + p, NAT_VIP, 104, SYN);
        let Decision::Forward { next_hop, .. } = e.process(EXT, &mut f, t(2)) else {
            panic!()
        };
        assert_ne!(next_hop, rs);
    }
    // Both down: nothing to pick.
    e.set_server_health(1, 1 - srv, false);
    let mut f = tcp(CLIENT, 50000, NAT_VIP, 104, SYN);
    assert_eq!(
        e.process(EXT, &mut f, t(3)),
        Decision::Drop(DropReason::NoRealServer)
    );
    assert!(!e.set_server_health(1, 9, true));
}

#[test]
fn halt_drops_the_servers_flows_and_frees_ports() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, SNAT_VIP, 2575, SYN);
    let Decision::Forward { next_hop: rs, .. } = e.process(EXT, &mut f, t(0)) else {
        panic!()
    };
    let srv = SNAT_RS.iter().position(|a| *a == rs).unwrap();
    assert!(e.set_server_admin(2, srv, AdminState::Halt));
    assert_eq!(e.snat_ports(2, srv).unwrap().in_use(), 0);
    assert_eq!(e.server_state(2, srv).unwrap().active, 0);
    let mut f = tcp(CLIENT, 40000, SNAT_VIP, 2575, PSH_ACK);
    assert!(matches!(e.process(EXT, &mut f, t(1)), Decision::Drop(_)));
    // New flows avoid it.
    for p in 1..5 {
        let mut f = tcp(CLIENT, 40000 + p, SNAT_VIP, 2575, SYN);
        let Decision::Forward { next_hop, .. } = e.process(EXT, &mut f, t(2)) else {
            panic!()
        };
        assert_ne!(next_hop, rs);
    }
}

#[test]
fn drained_server_keeps_flows_but_gets_no_new_ones() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, DR_VIP, 104, SYN);
    let Decision::Forward { next_hop: rs, .. } = e.process(EXT, &mut f, t(0)) else {
        panic!()
    };
    let srv = DR_RS.iter().position(|a| *a == rs).unwrap();
    e.set_server_admin(0, srv, AdminState::Drain);
    let mut f = tcp(CLIENT, 40000, DR_VIP, 104, ACK);
    assert_eq!(
        e.process(EXT, &mut f, t(1)),
        Decision::Forward {
            nic: EXT,
            next_hop: rs
        }
    );
    for p in 1..5 {
        let mut f = tcp(CLIENT, 40000 + p, DR_VIP, 104, SYN);
        let Decision::Forward { next_hop, .. } = e.process(EXT, &mut f, t(2)) else {
            panic!()
        };
        assert_ne!(next_hop, rs);
    }
}

/// Sets up a NAT flow and returns (client-side key, server-side key, server).
fn nat_flow(e: &mut Engine) -> (FlowKey, FlowKey, Ipv4Addr) {
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    let original = key(&f);
    let Decision::Forward { next_hop, .. } = e.process(EXT, &mut f, t(0)) else {
        panic!()
    };
    (original, key(&f), next_hop)
}

#[test]
fn icmp_error_from_server_side_reaches_the_client_as_from_the_vip() {
    let mut e = engine();
    let (_, inside, rs) = nat_flow(&mut e);
    // A router on the inside says "fragmentation needed" about C -> RS.
    let quoted = tcp(
        inside.src.addr,
        inside.src.port,
        inside.dst.addr,
        inside.dst.port,
        PSH_ACK,
    );
    let mut f = build::icmp(
        Ipv4Addr::new(10, 1, 0, 254),
        CLIENT,
        3,
        4,
        &quoted[ETHERNET_HEADER_LEN..],
    );
    assert_eq!(
        e.process(INT, &mut f, t(1)),
        Decision::Forward {
            nic: EXT,
            next_hop: GW
        }
    );
    assert!(checksums_ok(&f));
    let Ok(Class::IcmpError(err)) = frame::classify(&f) else {
        panic!()
    };
    assert_eq!(err.ip.src, NAT_VIP);
    assert_eq!(err.ip.dst, CLIENT);
    assert_eq!(err.quoted.key.src, ep(CLIENT, 40000));
    assert_eq!(err.quoted.key.dst, ep(NAT_VIP, 104));
    let _ = rs;
}

#[test]
fn icmp_error_from_client_side_reaches_the_snat_server() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, SNAT_VIP, 2575, SYN);
    let Decision::Forward { next_hop: rs, .. } = e.process(EXT, &mut f, t(0)) else {
        panic!()
    };
    let inside = key(&f);
    // What the client saw: VIP -> C. Its router says "port unreachable".
    let quoted = tcp(SNAT_VIP, 2575, CLIENT, 40000, SYN | ACK);
    let mut f = build::icmp(
        GW,
        SNAT_VIP,
        3,
        3,
        &quoted[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + 28],
    );
    assert_eq!(
        e.process(EXT, &mut f, t(1)),
        Decision::Forward {
            nic: INT,
            next_hop: rs
        }
    );
    assert!(checksums_ok(&f));
    let Ok(Class::IcmpError(err)) = frame::classify(&f) else {
        panic!()
    };
    assert_eq!((err.ip.src, err.ip.dst), (LB_INT, rs));
    assert_eq!(err.quoted.key, inside.reversed());
}

#[test]
fn icmp_error_about_dr_server_reply_goes_to_that_server() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, DR_VIP, 104, SYN);
    let Decision::Forward { next_hop: rs, .. } = e.process(EXT, &mut f, t(0)) else {
        panic!()
    };
    let quoted = tcp(DR_VIP, 104, CLIENT, 40000, SYN | ACK);
    let mut f = build::icmp(GW, DR_VIP, 3, 4, &quoted[ETHERNET_HEADER_LEN..]);
    let before = f.clone();
    assert_eq!(
        e.process(EXT, &mut f, t(1)),
        Decision::Forward {
            nic: EXT,
            next_hop: rs
        }
    );
    assert_eq!(f, before);
}

#[test]
fn icmp_error_about_unknown_flow_goes_to_the_stack() {
    let mut e = engine();
    let quoted = tcp(Ipv4Addr::new(192, 0, 2, 1), 22, CLIENT, 40000, ACK);
    let mut f = build::icmp(
        GW,
        Ipv4Addr::new(192, 0, 2, 1),
        3,
        4,
        &quoted[ETHERNET_HEADER_LEN..],
    );
    assert_eq!(e.process(EXT, &mut f, t(0)), Decision::ToStack);
}

#[test]
fn conntrack_full_is_counted_and_leaks_no_port() {
    let mut e = engine_with(|c| c.conntrack = 2);
    let mut outcomes = Vec::new();
    for p in 0..6u16 {
        let mut f = tcp(CLIENT, 1000 + p, SNAT_VIP, 2575, SYN);
        outcomes.push(e.process(EXT, &mut f, t(0)));
        // Established flows are never evicted to make room.
        let mut ack = tcp(CLIENT, 1000 + p, SNAT_VIP, 2575, ACK);
        e.process(EXT, &mut ack, t(0));
    }
    let full = outcomes
        .iter()
        .filter(|d| **d == Decision::Drop(DropReason::ConnTableFull))
        .count();
    assert!(full >= 1, "{outcomes:?}");
    assert!(e.conntrack().len() <= 2);
    let in_use: u32 = (0..2).map(|s| e.snat_ports(2, s).unwrap().in_use()).sum();
    assert_eq!(in_use as usize, e.conntrack().len());
}

proptest! {
    /// Random bytes on any interface never panic, and neither does feeding
    /// the engine's own output back in.
    #[test]
    fn random_frames_never_panic(
        nic in 0usize..3,
        mut bytes in proptest::collection::vec(any::<u8>(), 0..200),
        fix in any::<bool>(),
    ) {
        let mut e = engine();
        if fix && bytes.len() > 14 {
            bytes[12] = 0x08;
            bytes[13] = 0x00;
            crate::frame::build::fix_ip_checksum(&mut bytes);
        }
        let _ = e.process(nic, &mut bytes, t(0));
        let _ = e.process(nic ^ 1, &mut bytes, t(1));
    }

    /// Valid packets with random headers into every service: forwarded
    /// frames always carry valid checksums.
    #[test]
    fn forwarded_frames_have_valid_checksums(
        svc in 0usize..4, sport in any::<u16>(), client in any::<[u8; 4]>(),
        payload in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut e = engine();
        let (vip, port, is_udp) = [(DR_VIP, 104, false), (NAT_VIP, 104, false), (SNAT_VIP, 2575, false), (UDP_VIP, 514, true)][svc];
        let c = Ipv4Addr::from(client);
        let s = Endpoint::new(c, sport);
        let mut f = if is_udp { build::udp(s, ep(vip, port), &payload) } else { build::tcp(s, ep(vip, port), SYN, &payload) };
        if let Decision::Forward { .. } = e.process(EXT, &mut f, t(0)) {
            prop_assert!(checksums_ok(&f));
        }
    }

    /// A flow maps to one real server for its whole life, whatever else
    /// happens meanwhile (other flows, health changes of other servers,
    /// persistence).
    #[test]
    fn a_flow_keeps_its_server(
        ops in proptest::collection::vec((0usize..4, 0u8..6, 0u8..4, 0usize..2, any::<bool>()), 1..120),
    ) {
        let mut e = engine();
        let mut pinned: std::collections::BTreeMap<(usize, u8), Ipv4Addr> = Default::default();
        let mut now = 0;
        for (svc, client, op, srv, up) in ops {
            now += 100;
            // Health and drain changes, never halt: established flows stay.
            match op {
                0 => {
                    e.set_server_health(svc, srv, up);
                    continue;
                }
                1 => {
                    e.set_server_admin(svc, srv, if up { AdminState::Online } else { AdminState::Drain });
                    continue;
                }
                _ => {}
            }
            let (vip, port, is_udp) = [(DR_VIP, 104, false), (NAT_VIP, 104, false), (SNAT_VIP, 2575, false), (UDP_VIP, 514, true)][svc];
            let c = Ipv4Addr::new(198, 51, 100, client % 3);
            let sport = 30000 + u16::from(client);
            let first = !pinned.contains_key(&(svc, client));
            let mut f = if is_udp {
                udp(c, sport, vip, port)
            } else {
                tcp(c, sport, vip, port, if first { SYN } else { PSH_ACK })
            };
            match e.process(EXT, &mut f, t(now)) {
                Decision::Forward { next_hop, .. } => {
                    let server = if svc == 0 { next_hop } else { key(&f).dst.addr };
                    let was = *pinned.entry((svc, client)).or_insert(server);
                    prop_assert_eq!(was, server);
                }
                Decision::Drop(DropReason::NoRealServer) => prop_assert!(first),
                d => prop_assert!(false, "unexpected {:?}", d),
            }
        }
    }
}

#[test]
fn persistence_lasts_its_timeout_after_the_clients_last_packet() {
    const HOUR: u64 = 3_600_000;
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    let Decision::Forward {
        next_hop: sticky, ..
    } = e.process(EXT, &mut f, t(0))
    else {
        panic!()
    };
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, ACK);
    assert!(matches!(
        e.process(EXT, &mut f, t(1)),
        Decision::Forward { .. }
    ));
    // A long association: traffic every 100 s for two hours, well past the
    // one-hour persistence timeout.
    let mut now = 0;
    while now < 2 * HOUR {
        now += 100_000;
        let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, PSH_ACK);
        assert_eq!(
            e.process(EXT, &mut f, t(now)),
            Decision::Forward {
                nic: INT,
                next_hop: sticky
            }
        );
    }
    // Two other clients move round robin past `sticky`: unpinned, the next
    // new flow would go to the other server.
    for (i, c) in [
        Ipv4Addr::new(198, 51, 100, 20),
        Ipv4Addr::new(198, 51, 100, 21),
    ]
    .into_iter()
    .enumerate()
    {
        let mut f = tcp(c, 1000, NAT_VIP, 104, SYN);
        assert!(matches!(
            e.process(EXT, &mut f, t(now + 1 + i as u64)),
            Decision::Forward { .. }
        ));
    }
    // Almost an hour after the client's last packet, its new association
    // still goes to its server.
    let mut f = tcp(CLIENT, 40001, NAT_VIP, 104, SYN);
    let d = e.process(EXT, &mut f, t(now + HOUR - 1000));
    assert_eq!(
        d,
        Decision::Forward {
            nic: INT,
            next_hop: sticky
        }
    );
    // Once the persistence has expired (and the first association is gone),
    // the client is balanced afresh.
    let later = now + 3 * HOUR;
    e.expire(t(later), 4096);
    let mut f = tcp(Ipv4Addr::new(198, 51, 100, 22), 1000, NAT_VIP, 104, SYN);
    let Decision::Forward { next_hop: a, .. } = e.process(EXT, &mut f, t(later)) else {
        panic!()
    };
    let mut f = tcp(CLIENT, 40002, NAT_VIP, 104, SYN);
    let Decision::Forward { next_hop: b, .. } = e.process(EXT, &mut f, t(later + 1)) else {
        panic!()
    };
    assert_ne!(a, b, "round robin, no persistence left");
}

#[test]
fn persistence_refresh_period() {
    assert_eq!(refresh_period_shift(Duration::from_secs(3600)), 17); // 131 s
    assert_eq!(refresh_period_shift(Duration::from_secs(1)), 10);
    assert_eq!(refresh_period_shift(Duration::from_millis(0)), 10);
    let p = 1u64 << refresh_period_shift(Duration::from_secs(300));
    assert!(p <= 300_000 / 16 && p > 300_000 / 32);
}

#[test]
fn icmp_port_unreachable_from_snat_server_reaches_the_client() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, SNAT_VIP, 2575, SYN);
    let Decision::Forward { next_hop: rs, .. } = e.process(EXT, &mut f, t(0)) else {
        panic!()
    };
    // The server itself answers the appliance's packet with an error.
    let mut err = build::icmp(rs, LB_INT, 3, 3, &f[ETHERNET_HEADER_LEN..]);
    assert_eq!(
        e.process(INT, &mut err, t(1)),
        Decision::Forward {
            nic: EXT,
            next_hop: GW
        }
    );
    assert!(checksums_ok(&err));
    let Ok(Class::IcmpError(x)) = frame::classify(&err) else {
        panic!()
    };
    assert_eq!((x.ip.src, x.ip.dst), (SNAT_VIP, CLIENT));
    assert_eq!(x.quoted.key, key(&tcp(CLIENT, 40000, SNAT_VIP, 2575, SYN)));
    // The quote is now exactly what the client sent, checksums included.
    let mut sent = tcp(CLIENT, 40000, SNAT_VIP, 2575, SYN);
    crate::frame::testutil::set_ip_field(&mut sent, |ip| ip.set_hop_limit(63));
    assert_eq!(
        &err[ETHERNET_HEADER_LEN + 28..],
        &sent[ETHERNET_HEADER_LEN..]
    );
}

#[test]
fn icmp_error_from_client_side_about_nat_reply_reaches_the_server() {
    let mut e = engine();
    let (_, inside, rs) = nat_flow(&mut e);
    // The client's host says the reply VIP:104 -> C:40000 was unwelcome.
    let reply = tcp(NAT_VIP, 104, CLIENT, 40000, SYN | ACK);
    let mut err = build::icmp(CLIENT, NAT_VIP, 3, 3, &reply[ETHERNET_HEADER_LEN..]);
    assert_eq!(
        e.process(EXT, &mut err, t(1)),
        Decision::Forward {
            nic: INT,
            next_hop: rs
        }
    );
    assert!(checksums_ok(&err));
    let Ok(Class::IcmpError(x)) = frame::classify(&err) else {
        panic!()
    };
    // NAT keeps the client's address as the error's source.
    assert_eq!((x.ip.src, x.ip.dst), (CLIENT, rs));
    assert_eq!(x.quoted.key, inside.reversed());
}

#[test]
fn no_route_to_the_server_creates_no_flow() {
    let mut e = engine();
    // The internal interface loses its address (DHCP lease gone), and
    // there is no gateway to fall back on.
    assert!(e.set_interface_address(INT, None));
    e.set_gateway(None);
    for (vip, port) in [(NAT_VIP, 104), (SNAT_VIP, 2575)] {
        let mut f = tcp(CLIENT, 40000, vip, port, SYN);
        assert_eq!(
            e.process(EXT, &mut f, t(0)),
            Decision::Drop(DropReason::NoRoute)
        );
    }
    assert_eq!(e.conntrack().len(), 0);
    assert_eq!(
        e.snat_ports(2, 0).unwrap().in_use() + e.snat_ports(2, 1).unwrap().in_use(),
        0
    );
    assert!(e.set_interface_address(INT, Some((LB_INT, 16))));
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    assert!(matches!(
        e.process(EXT, &mut f, t(1)),
        Decision::Forward { nic: INT, .. }
    ));
}

#[test]
fn ethernet_padding_is_carried_through_untouched() {
    let mut e = engine();
    let mut f = build::udp(ep(CLIENT, 5000), ep(UDP_VIP, 514), b"x");
    let ip_end = f.len();
    f.resize(60, 0xa5); // short frame padded by the sender's NIC
    assert_eq!(
        e.process(EXT, &mut f, t(0)),
        Decision::Forward {
            nic: INT,
            next_hop: UDP_RS
        }
    );
    assert!(f[ip_end..].iter().all(|&b| b == 0xa5));
    let ip = Ipv4Packet::new_checked(&f[ETHERNET_HEADER_LEN..ip_end]).unwrap();
    let (s, d) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    assert!(ip.verify_checksum());
    assert!(
        UdpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum(&s, &d)
    );
}

/// A TCP super-frame of `segments` full segments of 1448 bytes whose
/// checksum is partial, as a host with offloads hands it over.
fn super_frame(src: Endpoint, dst: Endpoint, segments: usize) -> (Vec<u8>, Offload) {
    let payload: Vec<u8> = (0..1448 * segments).map(|i| (i % 251) as u8).collect();
    let mut f = build::tcp(src, dst, PSH_ACK, &payload);
    let o = build::partial(&mut f, Some(1448));
    (f, o)
}

/// Finishes a forwarded frame's partial checksum as the egress NIC would.
fn complete(frame: &mut [u8], o: &Offload) {
    let frame::L4Checksum::Partial { start, offset } = o.checksum else {
        panic!("partial expected")
    };
    frame::offload::complete_checksum(frame, start, offset).unwrap();
}

#[test]
fn super_frames_keep_partial_checksums_through_every_method() {
    for (vip, port) in [(DR_VIP, 104), (NAT_VIP, 104), (SNAT_VIP, 2575)] {
        let mut e = engine();
        let mut syn = tcp(CLIENT, 40000, vip, port, SYN);
        let Decision::Forward { next_hop, .. } = e.process(EXT, &mut syn, t(0)) else {
            panic!("SYN to {vip}")
        };
        let translated = key(&syn);
        let (mut f, o) = super_frame(ep(CLIENT, 40000), ep(vip, port), 40);
        let d = e.process_offloaded(EXT, &mut f, &o, t(1));
        assert!(
            matches!(d, Decision::Forward { next_hop: h, .. } if h == next_hop),
            "{d:?}"
        );
        assert_eq!(key(&f), translated, "same rewrite as the flow's SYN");
        complete(&mut f, &o);
        assert!(
            checksums_ok(&f),
            "{vip}: checksums after the NIC finished them"
        );
        let svc = e.service_for(ep(vip, port), Protocol::Tcp).unwrap();
        let stats = &e.service_stats(svc).unwrap().service;
        assert_eq!(stats.packets, 1 + 40, "a super-frame counts its segments");
        // The SYN (20 + 24 bytes of headers, 7 of payload), then 40 segments.
        assert_eq!(stats.bytes, 51 + 40 * (40 + 1448));
    }
}

#[test]
fn partial_checksums_survive_nat_replies() {
    let mut e = engine();
    let mut syn = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    let Decision::Forward { next_hop: rs, .. } = e.process(EXT, &mut syn, t(0)) else {
        panic!()
    };
    let (mut r, o) = super_frame(ep(rs, 11112), ep(CLIENT, 40000), 3);
    assert!(matches!(
        e.process_offloaded(INT, &mut r, &o, t(1)),
        Decision::Forward { nic: EXT, .. }
    ));
    assert_eq!(
        (key(&r).src, key(&r).dst),
        (ep(NAT_VIP, 104), ep(CLIENT, 40000))
    );
    complete(&mut r, &o);
    assert!(checksums_ok(&r));
}

#[test]
fn offload_metadata_that_does_not_fit_is_dropped() {
    let mut e = engine();
    let mut syn = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    e.process(EXT, &mut syn, t(0));
    let (mut f, mut o) = super_frame(ep(CLIENT, 40000), ep(NAT_VIP, 104), 2);
    o.checksum = frame::L4Checksum::Partial {
        start: 20,
        offset: 16,
    };
    assert_eq!(
        e.process_offloaded(EXT, &mut f, &o, t(1)),
        Decision::Drop(DropReason::BadOffload)
    );
    let mut u = udp(CLIENT, 5000, UDP_VIP, 514);
    let mut o = build::partial(&mut u, Some(100));
    assert_eq!(
        e.process_offloaded(EXT, &mut u, &o, t(2)),
        Decision::Drop(DropReason::BadOffload),
        "only TCP is segmented"
    );
    o.gso = None;
    assert!(matches!(
        e.process_offloaded(EXT, &mut u, &o, t(3)),
        Decision::Forward { .. }
    ));
    complete(&mut u, &o);
    assert!(checksums_ok(&u));
    assert_eq!(e.drops().get(DropReason::BadOffload), 2);
}

/// A spoofed SYN flood at a persistent NAT VIP: the fake clients never
/// complete a handshake, so they get no persistence entry, cannot evict a
/// real client's, and take only half-open slots; the real client keeps its
/// server and its established flow.
#[test]
fn spoofed_syn_flood_leaves_persistence_and_established_flows_alone() {
    let mut e = engine_with(|c| {
        c.conntrack = 1024;
        c.persistence = 64;
    });
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    let Decision::Forward {
        next_hop: server, ..
    } = e.process(EXT, &mut f, t(0))
    else {
        panic!()
    };
    let mut ack = tcp(CLIENT, 40000, NAT_VIP, 104, ACK);
    assert!(matches!(
        e.process(EXT, &mut ack, t(1)),
        Decision::Forward { .. }
    ));
    assert_eq!(e.persistence().len(), 1);
    for n in 0..20_000u32 {
        let src = Ipv4Addr::from(0x0b00_0000 + n);
        let mut syn = tcp(src, 1024 + (n % 60_000) as u16, NAT_VIP, 104, SYN);
        assert!(
            matches!(e.process(EXT, &mut syn, t(2)), Decision::Forward { .. }),
            "a half-open slot is always found by evicting another"
        );
    }
    assert_eq!(e.persistence().len(), 1, "no fake client was remembered");
    assert!(e.conntrack().half_open() <= e.conntrack().half_open_limit());
    assert!(e.conntrack().stats.early_drop > 0);
    // The real client's established flow is still there, and its new
    // associations go to its server.
    let mut data = tcp(CLIENT, 40000, NAT_VIP, 104, ACK);
    assert_eq!(
        e.process(EXT, &mut data, t(3)),
        Decision::Forward {
            nic: INT,
            next_hop: server
        }
    );
    for port in 41000..41010 {
        let mut f = tcp(CLIENT, port, NAT_VIP, 104, SYN);
        assert_eq!(
            e.process(EXT, &mut f, t(4)),
            Decision::Forward {
                nic: INT,
                next_hop: server
            }
        );
    }
}

/// A new TCP client is remembered only when its handshake completes.
#[test]
fn persistence_is_recorded_at_the_clients_first_ack() {
    let mut e = engine();
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    e.process(EXT, &mut f, t(0));
    assert_eq!(e.persistence().len(), 0);
    let mut ack = tcp(CLIENT, 40000, NAT_VIP, 104, ACK);
    e.process(EXT, &mut ack, t(1));
    assert_eq!(e.persistence().len(), 1);
}

/// The test config with a fallback on the NAT (server) and SNAT (local) services.
fn engine_with_fallbacks() -> Engine {
    let mut c = config();
    c.virtual_services[1].fallback = Some(crate::config::Fallback::Server {
        ip: Ipv4Addr::new(10, 1, 0, 99),
        port: Some(8080),
    });
    c.virtual_services[2].fallback = Some(crate::config::Fallback::Local);
    crate::config::validate(&c).expect("valid");
    let mut caps = Capacities::from_config(&c);
    caps.conntrack = 1024;
    caps.persistence = 256;
    Engine::new(&c, caps).unwrap()
}

#[test]
fn fallback_server_takes_new_flows_only_while_no_server_is_up() {
    let mut e = engine_with_fallbacks();
    let fb = Ipv4Addr::new(10, 1, 0, 99);
    // Servers up: the fallback is never chosen.
    for p in 0..10 {
        let mut f = tcp(CLIENT, 30000 + p, NAT_VIP, 104, SYN);
        let Decision::Forward { next_hop, .. } = e.process(EXT, &mut f, t(0)) else {
            panic!()
        };
        assert_ne!(next_hop, fb);
    }
    e.set_server_health(1, 0, false);
    e.set_server_health(1, 1, false);
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, SYN);
    assert_eq!(
        e.process(EXT, &mut f, t(1)),
        Decision::Forward {
            nic: INT,
            next_hop: fb
        }
    );
    assert_eq!(key(&f).dst, ep(fb, 8080), "NAT to the fallback's port");
    assert!(checksums_ok(&f));
    // Its replies come back as from the VIP.
    let mut r = tcp(fb, 8080, CLIENT, 40000, ACK);
    assert!(matches!(
        e.process(INT, &mut r, t(2)),
        Decision::Forward { .. }
    ));
    assert_eq!(key(&r).src, ep(NAT_VIP, 104));
    let stats = e.service_stats(1).unwrap();
    assert_eq!(stats.servers.len(), 3);
    assert_eq!(stats.servers[2].connections, 1);
    // A server comes back: new flows (of the same client, despite
    // persistence) go to it; the fallback flow continues.
    e.set_server_health(1, 1, true);
    let mut f = tcp(CLIENT, 40001, NAT_VIP, 104, SYN);
    assert_eq!(
        e.process(EXT, &mut f, t(3)),
        Decision::Forward {
            nic: INT,
            next_hop: NAT_RS[1]
        }
    );
    let mut f = tcp(CLIENT, 40000, NAT_VIP, 104, PSH_ACK);
    assert_eq!(
        e.process(EXT, &mut f, t(4)),
        Decision::Forward {
            nic: INT,
            next_hop: fb
        }
    );
}

#[test]
fn local_fallback_refuses_with_a_reset_from_the_vip() {
    let mut e = engine_with_fallbacks();
    e.set_server_health(2, 0, false);
    e.set_server_health(2, 1, false);
    let mut f = tcp(CLIENT, 40000, SNAT_VIP, 2575, SYN);
    // The client is off-link: the reset goes to the gateway.
    assert_eq!(
        e.process(EXT, &mut f, t(0)),
        Decision::Forward {
            nic: EXT,
            next_hop: GW
        }
    );
    assert_eq!(key(&f).src, ep(SNAT_VIP, 2575));
    assert_eq!(key(&f).dst, ep(CLIENT, 40000));
    assert!(checksums_ok(&f));
    assert_eq!(e.service_stats(2).unwrap().fallback_refused, 1);
    assert_eq!(e.conntrack().len(), 0, "a refusal tracks nothing");
    // Without a fallback the SYN is dropped as before.
    e.set_server_health(0, 0, false);
    e.set_server_health(0, 1, false);
    let mut f = tcp(CLIENT, 40000, DR_VIP, 104, SYN);
    assert_eq!(
        e.process(EXT, &mut f, t(1)),
        Decision::Drop(DropReason::NoRealServer)
    );
}

#[test]
fn agent_weight_changes_the_split() {
    let mut e = engine();
    // DICOM-DR is round robin; make it weighted to see weights.
    assert!(e.set_server_weight(2, 0, 0));
    for p in 0..6 {
        let mut f = tcp(CLIENT, 20000 + p, SNAT_VIP, 2575, SYN);
        let Decision::Forward { next_hop, .. } = e.process(EXT, &mut f, t(0)) else {
            panic!()
        };
        assert_eq!(next_hop, SNAT_RS[1], "weight 0 takes no new flows");
    }
    assert!(!e.set_server_weight(2, 7, 1));
}

/// The next hop the engine sends a frame of an existing flow to.
fn forwarded_to(e: &mut Engine, nic: usize, mut f: Vec<u8>, now: Instant) -> Option<Ipv4Addr> {
    match e.process(nic, &mut f, now) {
        Decision::Forward { next_hop, .. } => Some(next_hop),
        _ => None,
    }
}

/// A service the tests add: DR, one server.
const EXTRA: &str = r#"
[[virtual_service]]
label = "EXTRA"
vip = "192.0.2.15"
ports = 104
forwarding = "dr"
  [[virtual_service.real_server]]
  label = "X1"
  ip = "192.0.2.31"
"#;

#[test]
fn live_apply_keeps_what_did_not_change_and_drains_what_was_removed() {
    let old = config();
    let mut e = engine();
    // A DR flow, a persistent NAT client, a SNAT flow; PACS2 is down.
    let dr = forwarded_to(&mut e, EXT, tcp(CLIENT, 40000, DR_VIP, 104, SYN), t(0)).unwrap();
    // Another client first, so round robin gives CLIENT the second server
    // (after the apply round robin starts over at the first).
    forwarded_to(&mut e, EXT, tcp(LOCAL_CLIENT, 9, NAT_VIP, 104, SYN), t(1)).unwrap();
    let nat = forwarded_to(&mut e, EXT, tcp(CLIENT, 40001, NAT_VIP, 104, SYN), t(1)).unwrap();
    assert_eq!(nat, NAT_RS[1]);
    // The handshake completes: the client is remembered.
    forwarded_to(&mut e, EXT, tcp(CLIENT, 40001, NAT_VIP, 104, ACK), t(1)).unwrap();
    assert_eq!(e.persistence().len(), 1);
    let mut s = tcp(CLIENT, 40002, SNAT_VIP, 2575, SYN);
    let Decision::Forward {
        next_hop: snat_rs, ..
    } = e.process(EXT, &mut s, t(2))
    else {
        panic!()
    };
    let snat_port = key(&s).src.port;
    e.set_server_health(0, 1, false);

    // New: a service in front (every index moves), HL7-SNAT removed, a
    // weight changed.
    let mut new = parse_toml(&alloc::format!("{CONFIG}{EXTRA}")).unwrap();
    let extra = new.virtual_services.pop().unwrap();
    new.virtual_services.insert(0, extra);
    new.virtual_services.retain(|v| v.label != "HL7-SNAT");
    new.virtual_services[1].real_servers[0].weight = 7;
    crate::config::validate(&new).unwrap();
    let report = e.apply(&old, &new).unwrap();
    assert_eq!(
        report.plan.services,
        [None, Some(0), Some(1), Some(3), Some(4)]
    );
    assert_eq!(report.draining, 1, "the SNAT flow drains");

    // The DR flow keeps its server; counters and health came along.
    assert_eq!(
        forwarded_to(&mut e, EXT, tcp(CLIENT, 40000, DR_VIP, 104, ACK), t(10)),
        Some(dr)
    );
    assert_eq!(e.service_stats(1).unwrap().service.connections, 1);
    assert_eq!(e.server_state(1, 1).unwrap().health, Health::Down);
    assert_eq!(e.server_state(1, 0).unwrap().weight, 7);
    // The NAT client's persistence survived the renumbering.
    let again = forwarded_to(&mut e, EXT, tcp(CLIENT, 40009, NAT_VIP, 104, SYN), t(11));
    assert_eq!(again, Some(nat));
    // The removed SNAT service's flow still runs both ways...
    let reply = tcp(snat_rs, 2575, LB_INT, snat_port, SYN | ACK);
    assert_eq!(forwarded_to(&mut e, INT, reply, t(12)), Some(GW));
    assert_eq!(
        forwarded_to(&mut e, EXT, tcp(CLIENT, 40002, SNAT_VIP, 2575, ACK), t(13)),
        Some(snat_rs)
    );
    // ...but takes nothing new: the VIP is gone.
    let mut f = tcp(CLIENT, 40003, SNAT_VIP, 2575, SYN);
    assert_eq!(e.process(EXT, &mut f, t(14)), Decision::ToStack);
    // The new service serves, its server not yet checked.
    let x = forwarded_to(
        &mut e,
        EXT,
        tcp(CLIENT, 40004, Ipv4Addr::new(192, 0, 2, 15), 104, SYN),
        t(15),
    );
    assert_eq!(x, Some(Ipv4Addr::new(192, 0, 2, 31)));
    assert_eq!(e.server_state(0, 0).unwrap().health, Health::Unknown);

    // Once the drained flow is gone, the next apply lets the service go.
    assert_eq!(e.services.len(), 6);
    for _ in 0..50 {
        e.expire(t(10_000_000), 1024);
    }
    e.apply(&new, &new).unwrap();
    assert_eq!(e.services.len(), 5);
}

#[test]
fn a_removed_server_drains_and_a_halted_one_is_cut() {
    let old = config();
    let mut e = engine();
    let first = forwarded_to(&mut e, EXT, tcp(CLIENT, 40000, DR_VIP, 104, SYN), t(0)).unwrap();
    let second = forwarded_to(&mut e, EXT, tcp(CLIENT, 40001, DR_VIP, 104, SYN), t(1)).unwrap();
    assert_ne!(first, second);
    let removed = DR_RS.iter().position(|a| *a == first).unwrap();
    let mut new = old.clone();
    new.virtual_services[0].real_servers.remove(removed);
    let report = e.apply(&old, &new).unwrap();
    assert_eq!(report.draining, 1);
    // The removed server's flow continues; every new flow goes to the other.
    assert_eq!(
        forwarded_to(&mut e, EXT, tcp(CLIENT, 40000, DR_VIP, 104, ACK), t(2)),
        Some(first)
    );
    for p in 0..10 {
        let to = forwarded_to(&mut e, EXT, tcp(CLIENT, 41000 + p, DR_VIP, 104, SYN), t(3));
        assert_eq!(to, Some(second));
    }
    // Halting the remaining server in the next config cuts its flows.
    let mut halted = new.clone();
    halted.virtual_services[0].real_servers[0].state = AdminState::Halt;
    e.apply(&new, &halted).unwrap();
    let mut f = tcp(CLIENT, 40001, DR_VIP, 104, ACK);
    assert!(matches!(e.process(EXT, &mut f, t(4)), Decision::Drop(_)));
    assert_eq!(e.server_state(0, 0).unwrap().active, 0);
}

#[test]
fn a_changed_pair_waits_for_the_next_boot() {
    let old = config();
    let mut e = engine();
    let with_pair = |priority: u8| {
        let c = parse_toml(&alloc::format!(
            "{CONFIG}\n[ha]\nvrid = 51\npriority = {priority}\n"
        ))
        .unwrap();
        crate::config::validate(&c).unwrap();
        c
    };
    let paired = with_pair(150);
    assert_eq!(e.apply(&old, &paired).unwrap().at_next_boot, ["ha"]);
    assert!(e.apply(&paired, &paired).unwrap().at_next_boot.is_empty());
    assert_eq!(
        e.apply(&paired, &with_pair(100)).unwrap().at_next_boot,
        ["ha"]
    );
}

proptest! {
    /// Whatever subset of the services a new config keeps, in whatever
    /// order: every flow open before the apply goes to the same place after
    /// it, and every server's active count matches its flows.
    #[test]
    fn apply_never_moves_a_flow(keep in proptest::collection::vec(any::<bool>(), 5), rotate in 0usize..5) {
        let old = config();
        let mut e = engine();
        let mut flows = Vec::new();
        for (i, (vip, port)) in [(DR_VIP, 104), (NAT_VIP, 104), (SNAT_VIP, 2575)].into_iter().enumerate() {
            for c in 0..4u16 {
                let sp = 30000 + (i as u16) * 100 + c;
                if let Some(to) = forwarded_to(&mut e, EXT, tcp(CLIENT, sp, vip, port, SYN), t(0)) {
                    flows.push((vip, port, sp, to));
                }
            }
        }
        let mut new = old.clone();
        let mut i = 0;
        new.virtual_services.retain(|_| { i += 1; keep[i - 1] });
        let n = new.virtual_services.len();
        if n > 0 {
            new.virtual_services.rotate_left(rotate % n);
        }
        e.apply(&old, &new).unwrap();
        for (vip, port, sp, to) in flows {
            prop_assert_eq!(forwarded_to(&mut e, EXT, tcp(CLIENT, sp, vip, port, ACK), t(1)), Some(to));
        }
        let tracked = e.conntrack().len() as u64;
        let active: u64 = e.services.iter().flat_map(|s| s.servers.iter()).map(|s| u64::from(s.active)).sum();
        prop_assert_eq!(tracked, active);
    }
}
