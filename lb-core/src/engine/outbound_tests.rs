//! Outbound SNAT: the real servers' own connections leave from the VIP.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, TcpPacket};

use super::*;
use crate::config::{ErrorKind, parse_toml, validate};
use crate::frame::{ETHERNET_HEADER_LEN, TcpFlags, build};

const EXT: usize = 0;
const INT: usize = 1;
const GW: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const VNA1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);
const VNA2: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 12);
/// A modality beyond the gateway, and a workstation on the VIP's subnet.
const MODALITY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const WORKSTATION: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 60);
const SYN: u8 = TcpFlags::SYN;
const ACK: u8 = TcpFlags::ACK;
const SYN_ACK: u8 = TcpFlags::SYN | TcpFlags::ACK;
const PSH_ACK: u8 = 0x18;

/// The engine tests' configuration with `outbound_snat` on the NAT
/// service DICOM-NAT (VIP 192.0.2.11:104, servers VNA1, VNA2).
fn config() -> Config {
    let text = include_str!("../../testdata/l4.toml").replace(
        "label = \"DICOM-NAT\"",
        "label = \"DICOM-NAT\"\noutbound_snat = true",
    );
    let c = parse_toml(&text).expect("test config parses");
    validate(&c).expect("test config is valid");
    c
}

fn engine_with(c: &Config, f: impl FnOnce(&mut Capacities)) -> Engine {
    let mut caps = Capacities::from_config(c);
    caps.conntrack = 1024;
    caps.persistence = 256;
    f(&mut caps);
    Engine::new(c, caps).unwrap()
}

fn engine() -> Engine {
    engine_with(&config(), |_| {})
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn tcp(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, flags: u8) -> Vec<u8> {
    build::tcp(
        Endpoint::new(src, sp),
        Endpoint::new(dst, dp),
        flags,
        b"C-STORE",
    )
}

fn key(frame: &[u8]) -> FlowKey {
    match frame::classify(frame) {
        Ok(Class::L4(p)) => p.key,
        other => panic!("not L4: {other:?}"),
    }
}

fn tcp_checksums_ok(frame: &[u8]) -> bool {
    let ip = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).unwrap();
    let (s, d) = (
        IpAddress::Ipv4(ip.src_addr()),
        IpAddress::Ipv4(ip.dst_addr()),
    );
    ip.verify_checksum()
        && ip.next_header() == IpProtocol::Tcp
        && TcpPacket::new_checked(ip.payload())
            .unwrap()
            .verify_checksum(&s, &d)
}

/// VNA1 opens a connection to `to:104`; returns the source port the VIP
/// sends from.
fn open(e: &mut Engine, to: Ipv4Addr, sport: u16, now: Instant) -> u16 {
    let mut f = tcp(VNA1, sport, to, 104, SYN);
    let d = e.process(INT, &mut f, now);
    let hop = if to == MODALITY { GW } else { to };
    assert_eq!(
        d,
        Decision::Forward {
            nic: EXT,
            next_hop: hop
        }
    );
    let k = key(&f);
    assert_eq!(k.src.addr, VIP, "leaves with the VIP as its source");
    assert_eq!(k.dst, Endpoint::new(to, 104), "destination unchanged");
    assert!(tcp_checksums_ok(&f));
    k.src.port
}

#[test]
fn a_real_servers_connection_leaves_from_the_vip_and_its_replies_come_back() {
    let mut e = engine();
    let port = open(&mut e, MODALITY, 40000, t(0));
    assert!(
        frame::ports::DEFAULT_RANGE.contains(&port) && port != 104,
        "port {port} from the SNAT range, not a service port of the VIP"
    );
    // The modality answers the VIP; VNA1 gets it from the modality.
    let mut f = tcp(MODALITY, 104, VIP, port, SYN_ACK);
    assert_eq!(
        e.process(EXT, &mut f, t(1)),
        Decision::Forward {
            nic: INT,
            next_hop: VNA1
        }
    );
    assert_eq!(
        key(&f),
        FlowKey {
            proto: Protocol::Tcp,
            src: Endpoint::new(MODALITY, 104),
            dst: Endpoint::new(VNA1, 40000),
        }
    );
    assert!(tcp_checksums_ok(&f));
    // Data both ways keeps the translation.
    for i in 0..3 {
        let mut f = tcp(VNA1, 40000, MODALITY, 104, PSH_ACK);
        assert!(matches!(
            e.process(INT, &mut f, t(2 + i)),
            Decision::Forward { nic: EXT, .. }
        ));
        assert_eq!(key(&f).src, Endpoint::new(VIP, port));
        let mut f = tcp(MODALITY, 104, VIP, port, ACK);
        assert!(matches!(
            e.process(EXT, &mut f, t(2 + i)),
            Decision::Forward { nic: INT, .. }
        ));
    }
    // Counted as the service's outbound flow, not as a client connection
    // of VNA1 (scheduling) and without persistence for VNA1's address.
    let stats = e.service_stats(1).unwrap();
    assert_eq!(stats.outbound, 1);
    assert_eq!(stats.service.connections, 0);
    assert_eq!(e.server_state(1, 0).unwrap().active, 0);
    assert_eq!(e.persistence().len(), 0);
    assert_eq!(e.conntrack().len(), 1);
    // A second connection gets another port; so does VNA2's.
    let other = open(&mut e, WORKSTATION, 40001, t(10));
    assert_ne!(other, port);
    let mut f = tcp(VNA2, 40000, MODALITY, 104, SYN);
    assert!(matches!(
        e.process(INT, &mut f, t(11)),
        Decision::Forward { nic: EXT, .. }
    ));
    let third = key(&f).src;
    assert_eq!(third.addr, VIP);
    assert!(third.port != port && third.port != other);
}

#[test]
fn without_outbound_snat_or_for_own_addresses_nothing_is_translated() {
    // The plain configuration: the server's SYN goes to the stack as before.
    let plain = parse_toml(include_str!("../../testdata/l4.toml")).unwrap();
    let mut e = engine_with(&plain, |_| {});
    let mut f = tcp(VNA1, 40000, MODALITY, 104, SYN);
    assert_eq!(e.process(INT, &mut f, t(0)), Decision::ToStack);

    let mut e = engine();
    // To the appliance itself (management, DNS) or to a VIP on a port no
    // service has: not outbound.
    for dst in [Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(192, 0, 2, 12)] {
        let mut f = tcp(VNA1, 40000, dst, 9999, SYN);
        let before = f.clone();
        assert_eq!(e.process(INT, &mut f, t(0)), Decision::ToStack);
        assert_eq!(f, before);
    }
    // A segment in the middle of nothing does not start a flow.
    let mut f = tcp(VNA1, 40000, MODALITY, 104, PSH_ACK);
    assert_eq!(e.process(INT, &mut f, t(0)), Decision::ToStack);
    // Nor does a server that is not in an outbound service.
    let mut f = tcp(Ipv4Addr::new(10, 1, 0, 31), 40000, MODALITY, 104, SYN);
    assert_eq!(e.process(INT, &mut f, t(0)), Decision::ToStack);
    assert_eq!(e.conntrack().len(), 0);
}

#[test]
fn ports_are_bounded_counted_and_given_back_at_expiry() {
    // Two ports in the range, one of them the VIP's service port: one
    // outbound flow at a time.
    let c = config();
    let mut e = engine_with(&c, |caps| caps.snat_ports = 104..=105);
    assert_eq!(open(&mut e, MODALITY, 40000, t(0)), 105);
    let mut f = tcp(VNA1, 40001, MODALITY, 104, SYN);
    assert_eq!(
        e.process(INT, &mut f, t(1)),
        Decision::Drop(DropReason::PortsExhausted)
    );
    assert_eq!(e.drops().get(DropReason::PortsExhausted), 1);
    assert_eq!(
        e.service_stats(1)
            .unwrap()
            .service
            .drops
            .get(DropReason::PortsExhausted),
        1
    );
    // The half-open flow expires (handshake timeout); its port is free.
    let later = t(c.l4.tcp_handshake_timeout.duration().millis() + 1000);
    e.expire(later, 4096);
    assert_eq!(e.conntrack().len(), 0);
    assert_eq!(open(&mut e, MODALITY, 40002, later), 105);
}

#[test]
fn icmp_errors_about_outbound_packets_reach_the_server() {
    let mut e = engine();
    let port = open(&mut e, MODALITY, 40000, t(0));
    // A router beyond says "fragmentation needed" about VIP:port -> modality.
    let quoted = tcp(VIP, port, MODALITY, 104, PSH_ACK);
    let mut f = build::icmp(GW, VIP, 3, 4, &quoted[ETHERNET_HEADER_LEN..]);
    assert_eq!(
        e.process(EXT, &mut f, t(1)),
        Decision::Forward {
            nic: INT,
            next_hop: VNA1
        }
    );
    let Ok(Class::IcmpError(err)) = frame::classify(&f) else {
        panic!()
    };
    assert_eq!(err.ip.dst, VNA1);
    assert_eq!(err.quoted.key.src, Endpoint::new(VNA1, 40000));
    assert_eq!(err.quoted.key.dst, Endpoint::new(MODALITY, 104));
    // An error from inside about the modality's packet to VNA1 tells the
    // modality, from the VIP (the server's address stays inside).
    let quoted = tcp(MODALITY, 104, VNA1, 40000, ACK);
    let mut f = build::icmp(VNA1, MODALITY, 3, 3, &quoted[ETHERNET_HEADER_LEN..]);
    assert!(matches!(
        e.process(INT, &mut f, t(2)),
        Decision::Forward { nic: EXT, .. }
    ));
    let Ok(Class::IcmpError(err)) = frame::classify(&f) else {
        panic!()
    };
    assert_eq!(err.ip.src, VIP);
    assert_eq!(err.quoted.key.dst, Endpoint::new(VIP, port));
}

#[test]
fn halt_ends_outbound_flows_and_refuses_new_ones() {
    let c = config();
    let mut e = engine_with(&c, |caps| caps.snat_ports = 105..=105);
    open(&mut e, MODALITY, 40000, t(0));
    e.set_server_admin(1, 0, AdminState::Halt);
    assert_eq!(e.conntrack().len(), 0);
    let mut f = tcp(VNA1, 40001, MODALITY, 104, SYN);
    assert_eq!(
        e.process(INT, &mut f, t(1)),
        Decision::Drop(DropReason::ServerHalted)
    );
    // The port came back: VNA2 gets it.
    let mut f = tcp(VNA2, 40000, MODALITY, 104, SYN);
    assert!(matches!(
        e.process(INT, &mut f, t(2)),
        Decision::Forward { .. }
    ));
    assert_eq!(key(&f).src, Endpoint::new(VIP, 105));
}

#[test]
fn live_apply_keeps_outbound_flows_and_their_ports() {
    let c = config();
    let mut e = engine_with(&c, |caps| caps.snat_ports = 105..=106);
    let port = open(&mut e, MODALITY, 40000, t(0));
    e.apply(&c, &c).unwrap();
    let mut f = tcp(MODALITY, 104, VIP, port, SYN_ACK);
    assert!(matches!(
        e.process(EXT, &mut f, t(1)),
        Decision::Forward { nic: INT, .. }
    ));
    // The port is still taken: the next flow gets the other one.
    assert_ne!(open(&mut e, MODALITY, 40001, t(2)), port);
    assert_eq!(e.service_stats(1).unwrap().outbound, 2);
}

#[test]
fn outbound_snat_is_refused_where_it_cannot_work() {
    let text = include_str!("../../testdata/l4.toml").replace(
        "label = \"DICOM-DR\"",
        "label = \"DICOM-DR\"\noutbound_snat = true",
    );
    let errs = validate(&parse_toml(&text).unwrap()).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.kind == ErrorKind::BadOutboundSnat && e.path.ends_with("outbound_snat")),
        "{errs:?}"
    );
    // VNA1 in a second NAT service on another VIP, both with outbound SNAT.
    let text = include_str!("../../testdata/l4.toml")
        .replace(
            "label = \"DICOM-NAT\"",
            "label = \"DICOM-NAT\"\noutbound_snat = true",
        )
        .replace(
            "label = \"SYSLOG\"",
            "label = \"SYSLOG\"\noutbound_snat = true",
        )
        .replace("ip = \"10.1.0.31\"", "ip = \"10.1.0.11\"");
    let errs = validate(&parse_toml(&text).unwrap()).unwrap_err();
    assert!(
        errs.iter()
            .any(|e| e.kind == ErrorKind::BadOutboundSnat && e.message.contains("10.1.0.11")),
        "{errs:?}"
    );
}
