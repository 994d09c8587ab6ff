use super::*;
use crate::flow::Endpoint;
use core::net::Ipv4Addr;
use proptest::prelude::*;

const HOUR: Duration = Duration::from_secs(3600);
const TWO_HOURS: Duration = Duration::from_secs(7200);

fn key(client: u32, cport: u16) -> FlowKey {
    FlowKey {
        proto: Protocol::Tcp,
        src: Endpoint::new(Ipv4Addr::from(0xc0a8_0000 | client), cport),
        dst: Endpoint::new(Ipv4Addr::new(10, 12, 1, 100), 104),
    }
}

/// NAT reply key: real server → client.
fn nat_reply(k: FlowKey, rip: Ipv4Addr) -> FlowKey {
    FlowKey {
        proto: k.proto,
        src: Endpoint::new(rip, k.dst.port),
        dst: k.src,
    }
}

fn none() -> impl FnMut(&Flow) {
    |_| {}
}

const SYN: Option<TcpFlags> = Some(TcpFlags(TcpFlags::SYN));
const ACK: Option<TcpFlags> = Some(TcpFlags(TcpFlags::ACK));
const FIN: Option<TcpFlags> = Some(TcpFlags(TcpFlags::FIN | TcpFlags::ACK));
const RST: Option<TcpFlags> = Some(TcpFlags(TcpFlags::RST));

#[test]
fn entry_and_table_memory() {
    assert_eq!(core::mem::size_of::<Flow>(), 48);
    assert_eq!(core::mem::size_of::<IndexSlot>(), 8);
    let t: ConnTable = ConnTable::new(1 << 16, Timeouts::default(), 1);
    assert_eq!(t.bytes_per_flow(), 48 + 4 + 32);
    // Worst case of rounding the index up to a power of two.
    let t: ConnTable = ConnTable::new((1 << 16) + 1, Timeouts::default(), 1);
    assert!(t.bytes_per_flow() <= 128, "{}", t.bytes_per_flow());
}

#[test]
fn nat_flow_is_found_both_ways() {
    let mut t: ConnTable = ConnTable::new(64, Timeouts::default(), 7);
    let k = key(1, 40000);
    let r = nat_reply(k, Ipv4Addr::new(10, 12, 1, 150));
    let id = t
        .insert(k, Some(r), 2, 1, TWO_HOURS, Instant(0), &mut none())
        .unwrap();
    assert_eq!(t.get(&k, Instant(1)), Some((id, Direction::Original)));
    assert_eq!(t.get(&r, Instant(1)), Some((id, Direction::Reply)));
    assert_eq!(t.get(&k.reversed(), Instant(1)), None);
    let f = t.flow(id).unwrap();
    assert_eq!((f.service, f.server, f.state), (2, 1, TcpState::Handshake));
    // Same key again: refused while live.
    assert_eq!(
        t.insert(k, None, 0, 0, HOUR, Instant(2), &mut none()),
        Err(InsertError::KeyInUse {
            id,
            dir: Direction::Original
        })
    );
    // A SNAT port already used as another flow's reply key.
    assert_eq!(
        t.insert(key(2, 1), Some(r), 0, 0, HOUR, Instant(2), &mut none()),
        Err(InsertError::KeyInUse {
            id,
            dir: Direction::Reply
        })
    );
    assert_eq!(t.stats.key_in_use, 2);
    t.check_invariants();
}

#[test]
fn dr_flow_has_no_reply_index() {
    let mut t: ConnTable = ConnTable::new(8, Timeouts::default(), 7);
    let k = key(1, 40000);
    let id = t
        .insert(k, None, 0, 0, TWO_HOURS, Instant(0), &mut none())
        .unwrap();
    assert!(!t.flow(id).unwrap().has_reply_key());
    assert_eq!(t.get(&k.reversed(), Instant(0)), None);
    t.check_invariants();
}

#[test]
fn tcp_state_timeouts() {
    let to = Timeouts::default();
    let mut t: ConnTable = ConnTable::new(8, to, 7);
    let k = key(1, 40000);
    let r = nat_reply(k, Ipv4Addr::new(10, 0, 0, 1));
    let t0 = Instant::from_secs(10);
    let id = t
        .insert(k, Some(r), 0, 0, TWO_HOURS, t0, &mut none())
        .unwrap();
    assert_eq!(
        t.touch(id, Direction::Original, SYN, t0),
        Some(TcpState::Handshake)
    );
    assert_eq!(t.flow(id).unwrap().expires, t0.add(to.handshake));
    // SYN-ACK from the server does not establish; the client's ACK does.
    let synack = Some(TcpFlags(TcpFlags::SYN | TcpFlags::ACK));
    assert_eq!(
        t.touch(id, Direction::Reply, synack, t0),
        Some(TcpState::Handshake)
    );
    assert_eq!(
        t.touch(id, Direction::Original, ACK, t0),
        Some(TcpState::Established)
    );
    assert_eq!(t.flow(id).unwrap().expires, t0.add(TWO_HOURS));
    // An idle DICOM association of 1 h survives.
    let idle = t0.add(HOUR);
    assert_eq!(t.get(&k, idle), Some((id, Direction::Original)));
    assert_eq!(
        t.touch(id, Direction::Reply, FIN, idle),
        Some(TcpState::Closing)
    );
    assert_eq!(t.flow(id).unwrap().expires, idle.add(to.closing));
    assert_eq!(
        t.get(&k, idle.add(to.closing)),
        None,
        "closing flow expires"
    );
    // RST: short.
    assert_eq!(
        t.touch(id, Direction::Original, RST, idle),
        Some(TcpState::Reset)
    );
    assert_eq!(t.flow(id).unwrap().expires, idle.add(to.reset));
    // Port reuse: a new SYN restarts the handshake on the same server.
    assert_eq!(
        t.touch(id, Direction::Original, SYN, idle),
        Some(TcpState::Handshake)
    );
    assert_eq!(t.flow(id).unwrap().server, 0);
}

#[test]
fn mid_stream_pickup_becomes_established() {
    let mut t: ConnTable = ConnTable::new(8, Timeouts::default(), 7);
    let id = t
        .insert(key(1, 1), None, 0, 0, TWO_HOURS, Instant(0), &mut none())
        .unwrap();
    assert_eq!(
        t.touch(id, Direction::Original, ACK, Instant(0)),
        Some(TcpState::Established)
    );
}

#[test]
fn udp_flows_use_the_udp_timeout() {
    let to = Timeouts::default();
    let mut t: ConnTable = ConnTable::new(8, to, 7);
    let mut k = key(1, 5000);
    k.proto = Protocol::Udp;
    let id = t
        .insert(k, None, 0, 0, TWO_HOURS, Instant(0), &mut none())
        .unwrap();
    assert_eq!(
        t.touch(id, Direction::Original, None, Instant(5)),
        Some(TcpState::Udp)
    );
    assert_eq!(t.flow(id).unwrap().expires, Instant(5).add(to.udp));
    // Same ports over TCP are another flow.
    assert_eq!(t.get(&key(1, 5000), Instant(6)), None);
}

#[test]
fn full_table_refuses_new_flows_and_keeps_old_ones() {
    let mut t: ConnTable = ConnTable::new(4, Timeouts::default(), 7);
    for p in 0..4 {
        let id = t
            .insert(key(1, p), None, 0, 0, HOUR, Instant(0), &mut none())
            .unwrap();
        // Established: never evicted.
        t.touch(id, Direction::Original, ACK, Instant(0));
    }
    assert_eq!(t.half_open(), 0);
    assert_eq!(
        t.insert(key(1, 99), None, 0, 0, HOUR, Instant(1), &mut none()),
        Err(InsertError::Full)
    );
    assert_eq!(t.stats.refused_full, 1);
    assert_eq!(t.stats.early_drop, 0);
    for p in 0..4 {
        assert!(t.get(&key(1, p), Instant(1)).is_some());
    }
    t.check_invariants();
}

#[test]
fn half_open_flows_are_capped_and_evicted_before_established_ones() {
    let cap = 64;
    let mut t = ConnTable::new(cap, Timeouts::default(), 7);
    assert_eq!(t.half_open_limit(), cap / HALF_OPEN_SHARE);
    // Legitimate clients complete their handshakes.
    let mut established = Vec::new();
    for p in 0..40u16 {
        let id = t
            .insert(key(1, p), None, 0, 0, HOUR, Instant(0), &mut none())
            .unwrap();
        t.touch(id, Direction::Original, ACK, Instant(0));
        established.push(key(1, p));
    }
    // A spoofed SYN flood: every source different, none ever ACKs.
    let mut evicted = 0;
    for n in 0..10_000u32 {
        let k = key(1000 + n, 1);
        let r = t.insert(k, None, 0, 1, HOUR, Instant(1), &mut |f: &Flow| {
            assert_eq!(f.state, TcpState::Handshake, "only half-open flows go");
            evicted += 1;
        });
        assert!(r.is_ok(), "{n}: {r:?}");
        assert!(t.half_open() <= t.half_open_limit());
    }
    assert_eq!(t.stats.early_drop, evicted);
    assert!(evicted >= 10_000 - cap as u64);
    for k in &established {
        assert!(t.get(k, Instant(2)).is_some(), "established {k:?} kept");
    }
    // A legitimate client's new handshake still gets in, and completes.
    let id = t
        .insert(key(2, 7), None, 0, 0, HOUR, Instant(2), &mut none())
        .unwrap();
    assert_eq!(
        t.touch(id, Direction::Original, ACK, Instant(2)),
        Some(TcpState::Established)
    );
    t.check_invariants();
}

#[test]
fn one_source_cannot_take_every_half_open_slot() {
    let mut t = ConnTable::new(1 << 14, Timeouts::default(), 7);
    let limit = t.source_limit();
    assert!(limit < t.half_open_limit());
    for p in 0..limit as u16 {
        t.insert(key(9, p), None, 0, 0, HOUR, Instant(0), &mut none())
            .unwrap();
    }
    assert_eq!(
        t.insert(key(9, 60000), None, 0, 0, HOUR, Instant(0), &mut none()),
        Err(InsertError::SourceLimit)
    );
    assert_eq!(t.stats.source_limited, 1);
    // Others are not affected, and the source gets room back as its
    // handshakes complete.
    t.insert(key(10, 1), None, 0, 0, HOUR, Instant(0), &mut none())
        .unwrap();
    let (id, dir) = t.get(&key(9, 0), Instant(0)).unwrap();
    t.touch(id, dir, ACK, Instant(0));
    t.insert(key(9, 60000), None, 0, 0, HOUR, Instant(0), &mut none())
        .unwrap();
    // UDP flows have no handshake and no such limit.
    let mut u = key(9, 1);
    u.proto = Protocol::Udp;
    t.insert(u, None, 0, 0, HOUR, Instant(0), &mut none())
        .unwrap();
    t.check_invariants();
}

#[test]
fn expired_flows_are_reclaimed_by_an_insert_into_a_full_table() {
    let mut t = ConnTable::new(4, Timeouts::default(), 7);
    for p in 0..4 {
        let mut k = key(1, p);
        k.proto = Protocol::Udp;
        t.insert(k, None, 0, 0, HOUR, Instant(0), &mut none())
            .unwrap();
    }
    // Once they expire, the insert reclaims them and reports each to the
    // caller.
    let mut reclaimed = 0;
    let later = Instant(0).add(t.timeouts().udp);
    t.insert(key(1, 99), None, 0, 0, HOUR, later, &mut |_: &Flow| {
        reclaimed += 1
    })
    .unwrap();
    assert_eq!(reclaimed, 4);
    assert_eq!(t.stats.early_drop, 0);
    t.check_invariants();
}

#[test]
fn expired_same_key_is_replaced_and_reported() {
    let mut t: ConnTable = ConnTable::new(4, Timeouts::default(), 7);
    let k = key(1, 1);
    t.insert(k, None, 0, 3, HOUR, Instant(0), &mut none())
        .unwrap();
    let later = Instant(0).add(t.timeouts().handshake);
    let mut seen = Vec::new();
    let id = t
        .insert(k, None, 0, 1, HOUR, later, &mut |f: &Flow| {
            seen.push(f.server)
        })
        .unwrap();
    assert_eq!(seen, [3]);
    assert_eq!(t.flow(id).unwrap().server, 1);
    assert_eq!(t.len(), 1);
}

#[test]
fn remove_server_drops_only_its_flows() {
    let mut t: ConnTable = ConnTable::new(256, Timeouts::default(), 7);
    for p in 0..200u16 {
        let k = key(u32::from(p), p);
        let r = nat_reply(k, Ipv4Addr::new(10, 0, 0, (p % 4) as u8 + 1));
        let id = t
            .insert(k, Some(r), p % 2, p % 4, HOUR, Instant(0), &mut none())
            .unwrap();
        t.touch(id, Direction::Original, ACK, Instant(0));
    }
    let mut counts = [0u32; 4];
    let n = t.remove_server(1, 3, &mut |f: &Flow| counts[f.server as usize] += 1);
    assert_eq!(n, 50);
    assert_eq!(counts, [0, 0, 0, 50]);
    t.check_invariants();
    assert_eq!(t.remove_service(0, &mut none()), 100);
    assert_eq!(t.len(), 50);
    t.check_invariants();
}

#[test]
fn sweep_is_bounded_and_finds_everything() {
    let mut t: ConnTable = ConnTable::new(1000, Timeouts::default(), 7);
    for p in 0..1000u16 {
        let mut k = key(1, p);
        if p % 2 == 1 {
            k.proto = Protocol::Udp;
        }
        let id = t
            .insert(k, None, 0, 0, HOUR, Instant(0), &mut none())
            .unwrap();
        if p % 2 == 0 {
            t.touch(id, Direction::Original, ACK, Instant(0));
        }
    }
    let later = Instant(0).add(t.timeouts().udp);
    let mut total = 0;
    for _ in 0..16 {
        let n = t.expire(later, 64, &mut none());
        assert!(n <= 64);
        total += n;
    }
    assert_eq!(total, 500);
    assert_eq!(t.len(), 500);
    t.check_invariants();
}

#[derive(Clone, Debug)]
enum Op {
    /// client, port, with reply key, server
    Insert(u32, u16, bool, u16),
    Packet(u32, u16, bool, u8),
    Remove(u32, u16),
    RemoveServer(u16),
    Expire(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u32..8, 0u16..8, any::<bool>(), 0u16..4).prop_map(|(c, p, r, s)| Op::Insert(c, p, r, s)),
        4 => (0u32..8, 0u16..8, any::<bool>(), any::<u8>()).prop_map(|(c, p, r, f)| Op::Packet(c, p, r, f)),
        1 => (0u32..8, 0u16..8).prop_map(|(c, p)| Op::Remove(c, p)),
        1 => (0u16..4).prop_map(Op::RemoveServer),
        1 => (0usize..20).prop_map(Op::Expire),
        2 => prop_oneof![Just(1u64), Just(30), Just(59), Just(61), Just(300), Just(4000)].prop_map(Op::Advance),
    ]
}

proptest! {
    /// A flow maps to one real server for its whole life; the table never
    /// exceeds its capacity; every live flow stays reachable by both keys;
    /// every removal is reported exactly once (so connection counts stay
    /// exact).
    #[test]
    fn flows_keep_their_server_and_tables_stay_bounded(
        cap in 1usize..24,
        ops in proptest::collection::vec(op(), 1..300),
    ) {
        use std::collections::BTreeMap;
        let mut t: ConnTable = ConnTable::new(cap, Timeouts::default(), 99);
        let rip = Ipv4Addr::new(10, 0, 0, 9);
        // original key -> server, for flows the table says are tracked.
        let mut servers: BTreeMap<FlowKey, u16> = BTreeMap::new();
        let mut active = [0i64; 4];
        let mut now = Instant(0);
        for op in ops {
            match op {
                Op::Insert(c, p, with_reply, s) => {
                    let k = key(c, p);
                    let r = with_reply.then(|| nat_reply(k, rip));
                    let live = t.get(&k, now).is_some();
                    let res = t.insert(k, r, 0, s, TWO_HOURS, now, &mut |f: &Flow| {
                        active[f.server as usize] -= 1;
                    });
                    match res {
                        Ok(id) => {
                            prop_assert!(!live);
                            active[s as usize] += 1;
                            servers.insert(k, s);
                            prop_assert_eq!(t.flow(id).unwrap().server, s);
                        }
                        Err(InsertError::KeyInUse { .. }) => {}
                        Err(InsertError::Full) => prop_assert_eq!(t.len(), cap),
                        Err(InsertError::SourceLimit) => {
                            prop_assert!(t.source_limit() <= t.half_open())
                        }
                    }
                }
                Op::Packet(c, p, reply_dir, flags) => {
                    let k = key(c, p);
                    let probe = if reply_dir { nat_reply(k, rip) } else { k };
                    if let Some((id, dir)) = t.get(&probe, now) {
                        let f = *t.flow(id).unwrap();
                        // The same server as when the flow was created.
                        prop_assert_eq!(Some(&f.server), servers.get(&f.original));
                        prop_assert!(f.expires > now);
                        t.touch(id, dir, Some(TcpFlags(flags)), now);
                    }
                }
                Op::Remove(c, p) => {
                    if let Some((id, _)) = t.get(&key(c, p), now) {
                        prop_assert!(t.remove(id, &mut |f: &Flow| active[f.server as usize] -= 1));
                        prop_assert!(t.get(&key(c, p), now).is_none());
                    }
                }
                Op::RemoveServer(s) => {
                    t.remove_server(0, s, &mut |f: &Flow| active[f.server as usize] -= 1);
                }
                Op::Expire(b) => {
                    t.expire(now, b, &mut |f: &Flow| active[f.server as usize] -= 1);
                }
                Op::Advance(s) => now = now.add(Duration::from_secs(s)),
            }
            prop_assert!(t.len() <= cap);
            t.check_invariants();
            // Reported removals match what the table holds.
            let mut held = [0i64; 4];
            for e in 0..t.capacity() {
                if let Some(f) = t.flow(FlowId(e as u32)) {
                    held[f.server as usize] += 1;
                }
            }
            prop_assert_eq!(held, active);
        }
    }
}
