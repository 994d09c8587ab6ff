//! VRRP: keepalived's adverts parsed and re-encoded byte for byte, bad
//! frames refused with their reason, and the RFC 5798 state machine.

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use proptest::prelude::*;

use super::router::*;
use super::wire::*;
use crate::time::{Duration, Instant};

fn hex(s: &str) -> Vec<u8> {
    let s = s.trim();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const MCAST: &str = include_str!("../../testdata/vrrp/keepalived-mcast.hex");
const UNICAST: &str = include_str!("../../testdata/vrrp/keepalived-unicast.hex");
const THREE: &str = include_str!("../../testdata/vrrp/keepalived-three.hex");
const V2: &str = include_str!("../../testdata/vrrp/v2-checksum.hex");

const VIP0: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 100);
const KA: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);

#[test]
fn keepalived_multicast_advert() {
    let f = hex(MCAST);
    let a = parse_frame(&f, ChecksumMode::Rfc).unwrap();
    assert_eq!(a.src, KA);
    assert_eq!(a.dst, MULTICAST_GROUP);
    assert_eq!(
        a.repr,
        Repr {
            vrid: 51,
            priority: 100,
            max_advert_interval: 10,
            addrs: vec![VIP0, Ipv4Addr::new(10, 99, 0, 101)],
        }
    );
    // The pseudo-header is part of its checksum: v2 mode refuses it.
    assert_eq!(parse_frame(&f, ChecksumMode::V2), Err(Error::BadChecksum));
}

#[test]
fn keepalived_unicast_advert() {
    let f = hex(UNICAST);
    let a = parse_frame(&f, ChecksumMode::Rfc).unwrap();
    assert_eq!((a.src, a.dst), (KA, Ipv4Addr::new(10, 99, 0, 3)));
    assert_eq!((a.repr.vrid, a.repr.priority), (52, 120));
    assert_eq!(a.repr.max_advert_interval, 100);
    assert_eq!(a.repr.addrs, vec![VIP0]);
}

#[test]
fn checksum_without_pseudo_header() {
    let f = hex(THREE);
    let rfc = parse_frame(&f, ChecksumMode::Rfc).unwrap();
    assert_eq!(
        (
            rfc.repr.vrid,
            rfc.repr.priority,
            rfc.repr.max_advert_interval
        ),
        (53, 200, 50)
    );
    assert_eq!(rfc.repr.addrs.len(), 3);
    let f = hex(V2);
    assert_eq!(parse_frame(&f, ChecksumMode::Rfc), Err(Error::BadChecksum));
    let v2 = parse_frame(&f, ChecksumMode::V2).unwrap();
    assert_eq!(v2.repr, rfc.repr);
}

/// Our encoder writes the VRRP part exactly as keepalived does.
#[test]
fn encoder_matches_keepalived_bytes() {
    for (text, mode) in [
        (MCAST, ChecksumMode::Rfc),
        (UNICAST, ChecksumMode::Rfc),
        (THREE, ChecksumMode::Rfc),
        (V2, ChecksumMode::V2),
    ] {
        let f = hex(text);
        let a = parse_frame(&f, mode).unwrap();
        let mut dst_mac = [0u8; 6];
        dst_mac.copy_from_slice(&f[..6]);
        let to = Addressing {
            src_mac: a.src_mac,
            dst_mac,
            src: a.src,
            dst: a.dst,
        };
        let mut out = vec![0u8; frame_len(&a.repr)];
        assert!(emit_frame(&mut out, &to, &a.repr, mode));
        // Same VRRP bytes (the IP header differs only in its ID field).
        assert_eq!(out[34..], f[34..34 + a.repr.buffer_len()]);
        assert_eq!(out[..18], f[..18]);
        assert_eq!(out[20..24], f[20..24]);
        assert_eq!(parse_frame(&out, mode).unwrap(), a);
    }
}

fn advert_frame(repr: &Repr, src: Ipv4Addr, dst: Ipv4Addr, mode: ChecksumMode) -> Vec<u8> {
    let to = Addressing {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: MULTICAST_MAC,
        src,
        dst,
    };
    // Padded to the Ethernet minimum, as on the wire.
    let mut f = vec![0u8; frame_len(repr).max(60)];
    assert!(emit_frame(&mut f, &to, repr, mode));
    f
}

fn repr(priority: u8) -> Repr {
    Repr {
        vrid: 7,
        priority,
        max_advert_interval: 10,
        addrs: vec![VIP0],
    }
}

#[test]
fn padded_frame_parses_and_bad_ones_say_why() {
    let good = advert_frame(&repr(100), KA, MULTICAST_GROUP, ChecksumMode::Rfc);
    assert_eq!(good.len(), 60);
    assert!(is_vrrp(&good));
    assert!(parse_frame(&good, ChecksumMode::Rfc).is_ok());

    let with = |at: usize, v: u8, fix_ip: bool| {
        let mut f = good.clone();
        f[at] = v;
        if fix_ip {
            crate::frame::build::fix_ip_checksum(&mut f);
        }
        parse_frame(&f, ChecksumMode::Rfc)
    };
    // TTL 64: came through a router.
    assert_eq!(with(22, 64, true), Err(Error::BadTtl));
    // IP header checksum broken.
    assert_eq!(with(24, 0, false), Err(Error::BadIpHeader));
    // Version 2, type 2.
    assert_eq!(with(34, 0x21, false), Err(Error::BadVersion));
    assert_eq!(with(34, 0x32, false), Err(Error::BadType));
    // Priority changed without the checksum.
    assert_eq!(with(36, 99, false), Err(Error::BadChecksum));
    // Count says two addresses, the IP length holds one.
    assert_eq!(with(37, 2, false), Err(Error::Truncated));
    // A fragment.
    assert_eq!(with(20, 0x20, true), Err(Error::Fragment));
    // Another protocol.
    assert_eq!(with(23, 17, true), Err(Error::NotVrrp));
    // Cut short.
    assert_eq!(
        parse_frame(&good[..30], ChecksumMode::Rfc),
        Err(Error::BadIpHeader)
    );
    assert_eq!(
        parse_frame(&good[..10], ChecksumMode::Rfc),
        Err(Error::Truncated)
    );
    // An IP length longer than the advert: bytes that are not padding.
    let mut long = good.clone();
    long[17] += 4;
    crate::frame::build::fix_ip_checksum(&mut long);
    assert_eq!(parse_frame(&long, ChecksumMode::Rfc), Err(Error::BadLength));
}

#[test]
fn unicast_accepts_the_old_multicast_pseudo_header() {
    // keepalived before 1.3.6 put the group address in the pseudo-header of
    // unicast adverts.
    let peer = Ipv4Addr::new(10, 99, 0, 3);
    let mut f = advert_frame(&repr(100), KA, MULTICAST_GROUP, ChecksumMode::Rfc);
    f[30..34].copy_from_slice(&peer.octets());
    crate::frame::build::fix_ip_checksum(&mut f);
    let a = parse_frame(&f, ChecksumMode::Rfc).unwrap();
    assert_eq!(a.dst, peer);
}

proptest! {
    #[test]
    fn encode_parse_roundtrip(
        vrid: u8, priority: u8, interval in 1u16..=MAX_INTERVAL_CS,
        addrs in proptest::collection::vec(any::<u32>(), 0..40),
        v2: bool, unicast: bool,
    ) {
        let mode = if v2 { ChecksumMode::V2 } else { ChecksumMode::Rfc };
        let r = Repr {
            vrid,
            priority,
            max_advert_interval: interval,
            addrs: addrs.into_iter().map(Ipv4Addr::from).collect(),
        };
        let dst = if unicast { Ipv4Addr::new(10, 0, 0, 9) } else { MULTICAST_GROUP };
        let f = advert_frame(&r, KA, dst, mode);
        let a = parse_frame(&f, mode).unwrap();
        prop_assert_eq!(a.repr, r);
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200), v2: bool) {
        let mode = if v2 { ChecksumMode::V2 } else { ChecksumMode::Rfc };
        let _ = parse_frame(&bytes, mode);
        let mut f = advert_frame(&repr(100), KA, MULTICAST_GROUP, mode);
        for (i, b) in bytes.iter().enumerate() {
            let at = 14 + i % (f.len() - 14);
            f[at] ^= b;
        }
        let _ = parse_frame(&f, mode);
    }
}

// --- state machine ---

const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);

fn settings(priority: u8) -> Settings {
    Settings {
        vrid: 7,
        priority,
        advert_interval_cs: 10,
        preempt: true,
        preempt_delay: Duration::from_secs(0),
        address: ME,
    }
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

#[test]
fn timers_follow_the_rfc() {
    let r = Router::new(settings(100));
    // Skew = (256-100)*100/256 ms = 60 ms (integer); down = 300 + 60.
    assert_eq!(r.skew(), Duration::from_millis(60));
    assert_eq!(r.master_down_interval(), Duration::from_millis(360));
    let r = Router::new(settings(254));
    assert_eq!(r.skew(), Duration::from_millis(0));
}

#[test]
fn alone_it_becomes_master_after_the_down_interval() {
    let mut r = Router::new(settings(100));
    let o = r.start(t(0));
    assert_eq!(
        o.transition,
        Some((State::Initialize, State::Backup, Reason::Startup))
    );
    assert_eq!(r.next_deadline(), Some(t(360)));
    assert_eq!(r.poll(t(359)), Output::default());
    let o = r.poll(t(360));
    assert_eq!(
        o.transition,
        Some((State::Backup, State::Master, Reason::MasterDown))
    );
    assert_eq!(o.advert, Some(100));
    assert!(o.announce);
    // Then one advert per interval.
    assert_eq!(r.next_deadline(), Some(t(460)));
    assert_eq!(r.poll(t(460)).advert, Some(100));
    assert_eq!(r.poll(t(500)).advert, None);
    assert_eq!(r.poll(t(560)).advert, Some(100));
}

#[test]
fn backup_stays_backup_while_a_higher_master_advertises() {
    let mut r = Router::new(settings(100));
    r.start(t(0));
    for i in 0..50 {
        let now = t(i * 100);
        assert_eq!(r.poll(now), Output::default());
        r.on_advert(PEER, &repr(150), true, now);
    }
    assert_eq!(r.state(), State::Backup);
    assert_eq!(r.master(), Some((PEER, 150)));
    // Silence: master after 3 intervals and the skew.
    let last = 4900;
    assert!(r.poll(t(last + 359)).transition.is_none());
    let o = r.poll(t(last + 360));
    assert_eq!(o.transition.map(|t| t.2), Some(Reason::MasterDown));
}

#[test]
fn priority_zero_means_take_over_after_the_skew() {
    let mut r = Router::new(settings(100));
    r.start(t(0));
    r.on_advert(PEER, &repr(150), true, t(100));
    r.on_advert(PEER, &repr(0), true, t(150));
    assert_eq!(r.next_deadline(), Some(t(210)));
    let o = r.poll(t(210));
    assert_eq!(o.transition.map(|t| t.2), Some(Reason::MasterLeft));
}

#[test]
fn master_yields_to_higher_priority_and_to_equal_priority_with_higher_address() {
    for (prio, src, yields) in [
        (150u8, PEER, true),
        (100, PEER, true), // equal priority, 10.0.0.3 > 10.0.0.2
        (100, Ipv4Addr::new(10, 0, 0, 1), false),
        (50, PEER, false),
    ] {
        let mut r = Router::new(settings(100));
        r.start(t(0));
        r.poll(t(400));
        assert!(r.is_master());
        let o = r.on_advert(src, &repr(prio), true, t(450));
        assert_eq!(r.is_master(), !yields, "prio {prio} from {src}");
        if yields {
            assert_eq!(o.transition.map(|t| t.2), Some(Reason::HigherPriority));
            assert_eq!(o.advert, None);
        } else {
            // Split brain: answer at once and pull the neighbours back.
            assert_eq!(o.advert, Some(100));
            assert!(o.announce);
            assert_eq!(r.stats.lower_master_heard, 1);
        }
    }
}

#[test]
fn preemption_waits_for_the_delay_and_the_gate() {
    let mut s = settings(200);
    s.preempt_delay = Duration::from_secs(2);
    let mut r = Router::new(s);
    r.set_preempt_ready(false);
    r.start(t(0));
    // A lower master (priority 100) advertises every 100 ms.
    let mut now = 0;
    let mut master_at = None;
    while now < 10_000 {
        if now == 5_000 {
            r.set_preempt_ready(true);
        }
        let o = r.poll(t(now));
        if let Some((_, State::Master, why)) = o.transition {
            master_at = Some((now, why));
            break;
        }
        r.on_advert(PEER, &repr(100), true, t(now));
        now += 100;
    }
    let (at, why) = master_at.expect("preempted");
    assert_eq!(why, Reason::Preempted);
    // Not before the gate opened (5 s), and within one down interval after.
    assert!((5_000..=5_000 + 400).contains(&at), "preempted at {at} ms");
}

#[test]
fn preemption_delay_counts_from_the_first_lower_advert() {
    let mut s = settings(200);
    s.preempt_delay = Duration::from_secs(3);
    let mut r = Router::new(s);
    r.start(t(0));
    let mut now = 0;
    loop {
        let o = r.poll(t(now));
        if o.transition.is_some() {
            break;
        }
        r.on_advert(PEER, &repr(100), true, t(now));
        now += 100;
        assert!(now < 10_000);
    }
    assert!((3_000..=3_400).contains(&now), "preempted at {now} ms");
}

#[test]
fn no_preempt_keeps_the_lower_master() {
    let mut s = settings(200);
    s.preempt = false;
    let mut r = Router::new(s);
    r.start(t(0));
    for i in 0..100 {
        assert!(r.poll(t(i * 100)).transition.is_none());
        r.on_advert(PEER, &repr(100), true, t(i * 100));
    }
    assert_eq!(r.state(), State::Backup);
}

#[test]
fn fault_resigns_and_recovers_as_backup() {
    let mut r = Router::new(settings(100));
    r.start(t(0));
    r.poll(t(400));
    assert!(r.is_master());
    let o = r.set_fault(true, t(500));
    assert_eq!(
        o.transition,
        Some((State::Master, State::Fault, Reason::LinkDown))
    );
    assert_eq!(o.advert, Some(0));
    assert_eq!(r.poll(t(10_000)), Output::default());
    assert!(
        r.on_advert(PEER, &repr(50), true, t(10_000))
            .transition
            .is_none()
    );
    let o = r.set_fault(false, t(11_000));
    assert_eq!(
        o.transition,
        Some((State::Fault, State::Backup, Reason::LinkUp))
    );
    // A router that starts while its link is down waits in fault.
    let mut r = Router::new(settings(100));
    r.set_fault(true, t(0));
    assert_eq!(r.start(t(0)).transition.map(|t| t.1), Some(State::Fault));
}

#[test]
fn other_vrid_and_own_adverts_are_ignored() {
    let mut r = Router::new(settings(100));
    r.start(t(0));
    let mut other = repr(250);
    other.vrid = 8;
    r.on_advert(PEER, &other, true, t(10));
    r.on_advert(ME, &repr(250), true, t(20));
    assert_eq!(r.stats.other_vrid, 1);
    assert_eq!(r.master(), None);
    assert_eq!(r.poll(t(360)).transition.map(|t| t.1), Some(State::Master));
}

#[test]
fn shutdown_of_a_master_sends_priority_zero() {
    let mut r = Router::new(settings(100));
    r.start(t(0));
    r.poll(t(400));
    let o = r.shutdown(t(500));
    assert_eq!(o.advert, Some(0));
    assert_eq!(r.state(), State::Initialize);
}

/// Two routers on one simulated link with a delay: exactly one master
/// once they settle, whatever the priorities and start times.
#[test]
fn two_routers_elect_one_master() {
    proptest!(|(pa in 1u8..=254, pb in 1u8..=254, start_b in 0u64..2000, drop_every in 0usize..5)| {
        let mut a = Router::new(Settings { address: Ipv4Addr::new(10, 0, 0, 2), ..settings(pa) });
        let mut b = Router::new(Settings { address: Ipv4Addr::new(10, 0, 0, 3), ..settings(pb) });
        a.start(t(0));
        let mut n = 0usize;
        for ms in (0..8_000u64).step_by(5) {
            if ms >= start_b {
                b.start(t(ms));
            }
            for (from, to, addr) in [(0, 1, Ipv4Addr::new(10, 0, 0, 2)), (1, 0, Ipv4Addr::new(10, 0, 0, 3))] {
                let (src, dst) = if from == 0 { (&mut a, &mut b) } else { (&mut b, &mut a) };
                let o = src.poll(t(ms));
                if let Some(p) = o.advert {
                    n += 1;
                    // Lose some adverts, never two in a row.
                    if drop_every == 0 || !n.is_multiple_of(drop_every + 2) {
                        let _ = to;
                        dst.on_advert(addr, &repr(p), true, t(ms));
                    }
                }
            }
        }
        let masters = [a.is_master(), b.is_master()];
        prop_assert_eq!(masters.iter().filter(|m| **m).count(), 1);
        // The higher priority wins; between equals, whoever is master
        // stays (a backup follows a master of equal priority).
        if pa != pb {
            prop_assert_eq!(a.is_master(), pa > pb);
        }
    });
}
