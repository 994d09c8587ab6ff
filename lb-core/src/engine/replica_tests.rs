//! Replication between two engines: a flow taken over by the other
//! appliance is forwarded byte for byte as before (same server, same NAT
//! and SNAT translation), persistence holds, the backup refuses new flows
//! but forwards known ones, and bad records are refused and counted.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::config::parse_toml;
use crate::frame::TcpFlags;
use crate::frame::build;

const EXT: usize = 0;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const DR_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NAT_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const SNAT_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const UDP_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 13);
const FLOATING: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const SYN: u8 = TcpFlags::SYN;
const ACK: u8 = TcpFlags::ACK;
const PSH_ACK: u8 = 0x18;
const FIN_ACK: u8 = 0x11;

fn engine(own_int: Ipv4Addr) -> Engine {
    let mut c = parse_toml(include_str!("../../testdata/l4.toml")).unwrap();
    c.network.interfaces[1].address = Some(own_int);
    let mut caps = Capacities::from_config(&c);
    caps.conntrack = 1024;
    caps.persistence = 256;
    let mut e = Engine::new(&c, caps).unwrap();
    // Both appliances send SNAT from the pair's floating address.
    e.set_snat_source(1, Some(FLOATING));
    e.set_journal(64);
    e
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn tcp(src: Endpoint, dst: Endpoint, flags: u8) -> Vec<u8> {
    build::tcp(src, dst, flags, b"C-STORE-RQ data")
}

fn key(frame: &[u8]) -> FlowKey {
    match crate::frame::classify(frame) {
        Ok(crate::frame::Class::L4(p)) => p.key,
        other => panic!("not L4: {other:?}"),
    }
}

/// Opens a TCP flow from `client` to `vip:port` through `e` (SYN, the
/// server's SYN-ACK when replies pass the appliance, the client's ACK) and
/// returns the translated 5-tuple of the client's packets.
fn open(e: &mut Engine, client: Endpoint, vip: Endpoint, now: Instant) -> FlowKey {
    let mut f = tcp(client, vip, SYN);
    assert!(matches!(
        e.process(EXT, &mut f, now),
        Decision::Forward { .. }
    ));
    let out = key(&f);
    if out.dst.addr != vip.addr {
        let mut r = tcp(out.dst, out.src, SYN | ACK);
        assert!(matches!(
            e.process(1, &mut r, now),
            Decision::Forward { .. }
        ));
    }
    let mut f = tcp(client, vip, ACK);
    assert!(matches!(
        e.process(EXT, &mut f, now),
        Decision::Forward { .. }
    ));
    out
}

fn drain(from: &mut Engine, to: &mut Engine, now: Instant) -> usize {
    let mut n = 0;
    while let Some(r) = from.journal() {
        to.import(&r, now).expect("imports");
        n += 1;
    }
    n
}

fn same_forwarding(a: &mut Engine, b: &mut Engine, nic: usize, frame: &[u8], now: Instant) {
    let (mut fa, mut fb) = (frame.to_vec(), frame.to_vec());
    let da = a.process(nic, &mut fa, now);
    let db = b.process(nic, &mut fb, now);
    assert!(matches!(da, Decision::Forward { .. }), "{da:?}");
    assert_eq!(da, db);
    assert_eq!(fa, fb, "the same bytes leave either appliance");
}

#[test]
fn journaled_flows_are_forwarded_the_same_by_the_other_appliance() {
    let mut a = engine(Ipv4Addr::new(10, 1, 0, 2));
    let mut b = engine(Ipv4Addr::new(10, 1, 0, 3));
    b.set_standby(true);
    let now = t(1000);
    let mut flows = Vec::new();
    for (i, vip) in [(DR_VIP, 104), (NAT_VIP, 104), (SNAT_VIP, 2575)]
        .iter()
        .enumerate()
    {
        for c in 0..3u16 {
            let client = Endpoint::new(CLIENT, 40000 + c + 10 * i as u16);
            let vip = Endpoint::new(vip.0, vip.1);
            let out = open(&mut a, client, vip, now);
            flows.push((client, vip, out));
        }
    }
    // Flows (9) and NAT persistence bindings (one client: 1).
    assert_eq!(drain(&mut a, &mut b, now), 10);
    assert_eq!(b.conntrack().len(), 9);
    assert_eq!(b.persistence().len(), 1);
    let later = t(5000);
    for (client, vip, out) in &flows {
        // Client's data and the server's replies, both ways.
        same_forwarding(&mut a, &mut b, EXT, &tcp(*client, *vip, PSH_ACK), later);
        if out.dst.addr != vip.addr {
            same_forwarding(&mut a, &mut b, 1, &tcp(out.dst, out.src, PSH_ACK), later);
        }
    }
    // SNAT ports are held on the other appliance too.
    for srv in 0..2 {
        let (pa, pb) = (a.snat_ports(2, srv).unwrap(), b.snat_ports(2, srv).unwrap());
        assert_eq!(pa.in_use(), pb.in_use());
    }
    // The backup refuses new flows but not known ones.
    let mut f = tcp(
        Endpoint::new(CLIENT, 50000),
        Endpoint::new(DR_VIP, 104),
        SYN,
    );
    assert_eq!(
        b.process(EXT, &mut f, later),
        Decision::Drop(DropReason::Standby)
    );
    // Taken over: new flows of the persistent client go to its server.
    b.set_standby(false);
    let nat_server = flows[3].2.dst;
    let out = open(
        &mut b,
        Endpoint::new(CLIENT, 50001),
        Endpoint::new(NAT_VIP, 104),
        later,
    );
    assert_eq!(
        out.dst, nat_server,
        "persistence kept the client on its server"
    );
}

#[test]
fn closing_and_udp_flows_are_journaled_half_open_ones_are_not() {
    let mut a = engine(Ipv4Addr::new(10, 1, 0, 2));
    let mut b = engine(Ipv4Addr::new(10, 1, 0, 3));
    let now = t(0);
    let client = Endpoint::new(CLIENT, 41000);
    let vip = Endpoint::new(DR_VIP, 104);
    let mut f = tcp(client, vip, SYN);
    a.process(EXT, &mut f, now);
    assert_eq!(a.journal_len(), 0, "a half-open flow is not sent");
    let mut f = tcp(client, vip, ACK);
    a.process(EXT, &mut f, now);
    assert_eq!(a.journal_len(), 1);
    let mut f = tcp(client, vip, FIN_ACK);
    a.process(EXT, &mut f, now);
    assert_eq!(a.journal_len(), 2);
    drain(&mut a, &mut b, now);
    let (id, _) = b
        .conntrack()
        .get(&key(&tcp(client, vip, ACK)), now)
        .unwrap();
    assert_eq!(b.conntrack().flow(id).unwrap().state, TcpState::Closing);
    // UDP: at the first datagram.
    let mut u = build::udp(
        Endpoint::new(CLIENT, 5000),
        Endpoint::new(UDP_VIP, 514),
        b"x",
    );
    a.process(EXT, &mut u, now);
    assert_eq!(a.journal_len(), 1);
}

#[test]
fn a_full_refresh_rebuilds_a_new_backup() {
    let mut a = engine(Ipv4Addr::new(10, 1, 0, 2));
    let now = t(0);
    for c in 0..40u16 {
        let vip = [(DR_VIP, 104), (NAT_VIP, 104), (SNAT_VIP, 2575)][usize::from(c % 3)];
        open(
            &mut a,
            Endpoint::new(CLIENT, 42000 + c),
            Endpoint::new(vip.0, vip.1),
            now,
        );
    }
    // A half-open flow stays behind.
    let mut f = tcp(
        Endpoint::new(CLIENT, 49999),
        Endpoint::new(DR_VIP, 104),
        SYN,
    );
    a.process(EXT, &mut f, now);
    let mut b = engine(Ipv4Addr::new(10, 1, 0, 3));
    let later = t(60_000);
    let mut records = Vec::new();
    let mut at = Some(0);
    while let Some(from) = at {
        at = a.export_flows(from, 7, later, &mut |r| records.push(r));
    }
    let mut at = Some(0);
    while let Some(from) = at {
        at = a.export_persistence(from, 5, later, &mut |r| records.push(r));
    }
    assert_eq!(records.len(), 41, "40 flows and one persistence binding");
    for r in &records {
        b.import(r, later).unwrap();
    }
    // Importing twice changes nothing.
    for r in &records {
        b.import(r, later).unwrap();
    }
    assert_eq!(b.conntrack().len(), 40);
    assert_eq!(b.replica_stats().replaced, 0);
    // Expiry carried over: the flows live as long as on `a`.
    let key0 = key(&tcp(
        Endpoint::new(CLIENT, 42000),
        Endpoint::new(DR_VIP, 104),
        ACK,
    ));
    let (ia, _) = a.conntrack().get(&key0, later).unwrap();
    let (ib, _) = b.conntrack().get(&key0, later).unwrap();
    assert_eq!(
        a.conntrack().flow(ia).unwrap().expires,
        b.conntrack().flow(ib).unwrap().expires
    );
}

#[test]
fn the_masters_record_replaces_a_conflicting_local_flow() {
    let mut a = engine(Ipv4Addr::new(10, 1, 0, 2));
    let mut b = engine(Ipv4Addr::new(10, 1, 0, 3));
    let now = t(0);
    let client = Endpoint::new(CLIENT, 43000);
    // Both scheduled the same client (round robin) but `b` saw another
    // flow first, so its server differs.
    open(
        &mut b,
        Endpoint::new(CLIENT, 43999),
        Endpoint::new(DR_VIP, 104),
        now,
    );
    b.clear_journal();
    open(&mut b, client, Endpoint::new(DR_VIP, 104), now);
    open(&mut a, client, Endpoint::new(DR_VIP, 104), now);
    drain(&mut a, &mut b, now);
    assert_eq!(b.replica_stats().replaced, 1);
    same_forwarding(
        &mut a,
        &mut b,
        EXT,
        &tcp(client, Endpoint::new(DR_VIP, 104), PSH_ACK),
        now,
    );
}

#[test]
fn bad_records_are_refused_and_counted() {
    let mut b = engine(Ipv4Addr::new(10, 1, 0, 3));
    let now = t(0);
    let flow = FlowRecord {
        original: FlowKey {
            proto: Protocol::Tcp,
            src: Endpoint::new(CLIENT, 1),
            dst: Endpoint::new(DR_VIP, 104),
        },
        server: Endpoint::new(Ipv4Addr::new(192, 0, 2, 21), 104),
        snat: None,
        state: TcpState::Established,
        remaining: Duration::from_secs(10),
        established: Duration::from_secs(7200),
    };
    assert_eq!(b.import(&Record::Flow(flow), now), Ok(()));
    let cases = [
        (
            FlowRecord {
                remaining: Duration::from_millis(0),
                ..flow
            },
            ImportError::Expired,
        ),
        (
            FlowRecord {
                state: TcpState::Handshake,
                ..flow
            },
            ImportError::BadRecord,
        ),
        (
            FlowRecord {
                state: TcpState::Udp,
                ..flow
            },
            ImportError::BadRecord,
        ),
        (
            FlowRecord {
                server: Endpoint::new(Ipv4Addr::new(192, 0, 2, 99), 104),
                ..flow
            },
            ImportError::UnknownServer,
        ),
        (
            FlowRecord {
                original: FlowKey {
                    dst: Endpoint::new(DR_VIP, 105),
                    ..flow.original
                },
                ..flow
            },
            ImportError::UnknownService,
        ),
        (
            FlowRecord {
                original: FlowKey {
                    dst: Endpoint::new(SNAT_VIP, 2575),
                    ..flow.original
                },
                server: Endpoint::new(Ipv4Addr::new(10, 1, 0, 21), 2575),
                ..flow
            },
            ImportError::BadRecord,
        ),
    ];
    for (r, want) in cases {
        assert_eq!(b.import(&Record::Flow(r), now), Err(want), "{r:?}");
        assert!(b.replica_stats().refused[want.index()] > 0);
    }
    // A SNAT port held here by another flow to that server.
    let snat = FlowRecord {
        original: FlowKey {
            dst: Endpoint::new(SNAT_VIP, 2575),
            ..flow.original
        },
        server: Endpoint::new(Ipv4Addr::new(10, 1, 0, 21), 2575),
        snat: Some(Endpoint::new(FLOATING, 30000)),
        ..flow
    };
    assert!(b.snat_ports.iter_mut().all(|p| p.take(30000)));
    assert_eq!(
        b.import(&Record::Flow(snat), now),
        Err(ImportError::PortInUse)
    );
    let persist = PersistRecord {
        vip: Endpoint::new(DR_VIP, 104),
        proto: Protocol::Tcp,
        client: CLIENT,
        server: Endpoint::new(Ipv4Addr::new(192, 0, 2, 21), 0),
        remaining: Duration::from_secs(10),
    };
    // DR-DICOM has no persistence here.
    assert_eq!(
        b.import(&Record::Persist(persist), now),
        Err(ImportError::UnknownService)
    );
}

proptest! {
    /// Whatever the traffic on the master, after the journal and one full
    /// refresh the backup forwards every live flow exactly as the master.
    #[test]
    fn backup_matches_master(
        ops in proptest::collection::vec((0usize..4, 0u16..30, any::<bool>()), 1..60),
        journal_cap in 1usize..16,
    ) {
        let mut a = engine(Ipv4Addr::new(10, 1, 0, 2));
        a.set_journal(journal_cap);
        let mut b = engine(Ipv4Addr::new(10, 1, 0, 3));
        b.set_standby(true);
        let vips = [(DR_VIP, 104), (NAT_VIP, 104), (SNAT_VIP, 2575), (DR_VIP, 11112)];
        let mut now = 0;
        let mut open_flows = alloc::collections::BTreeMap::new();
        for (v, port, close) in ops {
            now += 10;
            let client = Endpoint::new(CLIENT, 44000 + port);
            let vip = Endpoint::new(vips[v].0, vips[v].1);
            if close && open_flows.contains_key(&(client, vip)) {
                let mut f = tcp(client, vip, FIN_ACK);
                a.process(EXT, &mut f, t(now));
                open_flows.remove(&(client, vip));
            } else if !open_flows.keys().any(|(c, _)| *c == client) {
                let out = open(&mut a, client, vip, t(now));
                open_flows.insert((client, vip), out);
            }
            // The journal is drained now and then (it may overflow).
            if now % 70 == 0 {
                while let Some(r) = a.journal() {
                    let _ = b.import(&r, t(now));
                }
            }
        }
        let mut at = Some(0);
        while let Some(from) = at {
            at = a.export_flows(from, 16, t(now), &mut |r| { let _ = b.import(&r, t(now)); });
        }
        for ((client, vip), out) in open_flows {
            same_forwarding(&mut a, &mut b, EXT, &tcp(client, vip, PSH_ACK), t(now + 1));
            if out.dst.addr != vip.addr {
                same_forwarding(&mut a, &mut b, 1, &tcp(out.dst, out.src, PSH_ACK), t(now + 1));
            }
        }
    }
}
