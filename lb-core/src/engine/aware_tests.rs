//! Protocol-aware layer 7 services in the engine: the first bytes choose
//! the route, the appliance answers unrouted clients itself (resent until
//! acknowledged, then FIN), persistence by calling AE.

use alloc::vec::Vec;

use super::l7_tests::*;
use super::*;
use crate::splice::SynOptions;
use crate::wire::dicom::{AeTitle, Associate};
use crate::wire::hl7;

const STORESCU: &[u8] = include_bytes!("../../testdata/aware/rq_storescu.bin");

const DICOM: &str = r#"
protocol_aware = "dicom"
[[virtual_service.ae_route]]
called_ae = "PACS_B"
servers = ["B"]
[[virtual_service.ae_route]]
called_ae = "PACS_A*"
servers = ["A"]
"#;

/// storescu's A-ASSOCIATE-RQ with other AE titles.
fn rq(called: &str, calling: &str) -> Vec<u8> {
    let mut b = STORESCU.to_vec();
    Associate::new_checked(&mut b[..])
        .unwrap()
        .set_called_ae(&AeTitle::new(called));
    b[26..42].copy_from_slice(&AeTitle::new(calling).0);
    b
}

/// The client's bytes `data` at offset `at` of its stream.
fn send(e: &mut Engine, cport: u16, a: u32, at: u32, data: &[u8], control: u8, now: u64) {
    let mut f = seg(
        ep(CLIENT, cport),
        ep(VIP, 2575),
        CISN.wrapping_add(1).wrapping_add(at),
        Some(a.wrapping_add(1)),
        control,
        502,
        SynOptions::default(),
        data,
    );
    assert_eq!(e.process(0, &mut f, t(now)), Decision::Consumed);
}

/// The server a connection's SYN went to (asserts exactly one SYN left).
fn syn_to(out: &[Out]) -> core::net::Ipv4Addr {
    let syns: Vec<&Out> = out.iter().filter(|o| o.seg.flags.syn()).collect();
    assert_eq!(syns.len(), 1, "{out:?}");
    syns[0].dst.addr
}

#[test]
fn called_ae_chooses_the_route_across_segments() {
    let mut e = engine(DICOM, "");
    for (port, called, want) in [(40000, "PACS_B", RS[1]), (40001, "PACS_A2", RS[0])] {
        let a = handshake(&mut e, port, 0);
        let b = rq(called, "MOD1");
        // 20 bytes: too few to route; nothing happens.
        send(&mut e, port, a, 0, &b[..20], 0, 1);
        assert!(outbox(&mut e).is_empty());
        // A later segment out of order is held but still not enough.
        send(&mut e, port, a, 40, &b[40..100], 0, 1);
        assert!(outbox(&mut e).is_empty());
        send(&mut e, port, a, 20, &b[20..40], 0x08, 2);
        assert_eq!(syn_to(&outbox(&mut e)), want, "{called}");
    }
    let s = e.l7_stats();
    assert_eq!((s.aware_routed, s.aware_refused), (2, 0));
    assert_eq!(e.l7_pairs().len(), 2);
}

#[test]
fn unknown_called_ae_gets_the_reject_then_fin() {
    let mut e = engine(DICOM, "");
    let a = handshake(&mut e, 40000, 0);
    let b = rq("NOBODY", "MOD1");
    send(&mut e, 40000, a, 0, &b[..1000], 0x08, 1);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1, "{out:?}");
    let rj = &out[0];
    assert_eq!((rj.src, rj.dst), (ep(VIP, 2575), ep(CLIENT, 40000)));
    assert_eq!(rj.payload, [3, 0, 0, 0, 0, 4, 0, 1, 1, 7]);
    assert!(rj.seg.flags.fin());
    assert_eq!(rj.seg.seq, a.wrapping_add(1));
    assert_eq!(
        rj.seg.ack,
        CISN.wrapping_add(1001),
        "the client's bytes are consumed"
    );
    // Unacknowledged: resent on the timer, never to a server.
    e.expire(t(1200), 64);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].payload, rj.payload);
    assert_eq!(out[0].seg.seq, rj.seg.seq);
    assert_eq!(e.l7_stats().answer_retransmits, 1);
    // dcmtk reads it, acknowledges it and the FIN, and closes.
    let end = a.wrapping_add(12);
    let mut f = seg(
        ep(CLIENT, 40000),
        ep(VIP, 2575),
        CISN.wrapping_add(1001),
        Some(end),
        FIN,
        502,
        SynOptions::default(),
        &[],
    );
    e.process(0, &mut f, t(1300));
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].seg.seq, end);
    assert_eq!(
        out[0].seg.ack,
        CISN.wrapping_add(1002),
        "its FIN acknowledged"
    );
    e.expire(t(10_000), 64);
    assert!(outbox(&mut e).is_empty(), "nothing more once acknowledged");
    let s = e.l7_stats();
    assert_eq!((s.aware_routed, s.aware_refused, s.connects), (0, 1, 0));
    let p = e.l7_pairs()[0];
    assert_eq!((p.routed, p.refused), (0, 1));
    assert_eq!(p.pair.unwrap().called.text(), b"NOBODY");
}

#[test]
fn not_dicom_gets_an_abort() {
    let mut e = engine(DICOM, "");
    let a = handshake(&mut e, 40000, 0);
    send(&mut e, 40000, a, 0, b"GET / HTTP/1.1\r\n\r\n", 0x08, 1);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].payload, [7, 0, 0, 0, 0, 4, 0, 0, 2, 2]);
    assert_eq!(e.l7_stats().aware_not_protocol, 1);
}

#[test]
fn an_unanswered_reject_ends_in_a_reset() {
    let mut e = engine(DICOM, "");
    let a = handshake(&mut e, 40000, 0);
    send(&mut e, 40000, a, 0, &rq("NOBODY", "M")[..100], 0x08, 1);
    outbox(&mut e);
    let mut resets = 0;
    for s in 1..200 {
        e.expire(t(s * 1000), 64);
        resets += outbox(&mut e).iter().filter(|o| o.seg.flags.rst()).count();
    }
    assert_eq!(resets, 1);
    assert_eq!(e.l7_connections().len(), 0);
}

#[test]
fn persistence_by_calling_ae_not_address() {
    // (Keys before the route tables, or TOML gives them to the last route.)
    let extra = alloc::format!("persistence = \"calling_ae\"\npersistence_timeout = 3600\n{DICOM}");
    // All titles on one route of both servers.
    let extra = extra.replace(
        "called_ae = \"PACS_A*\"\nservers = [\"A\"]",
        "called_ae = \"*\"\nservers = [\"A\", \"B\"]",
    );
    let mut e = engine(&extra, "");
    let mut got = Vec::new();
    for (i, calling) in ["MOD1", "MOD2", "MOD2", "MOD1", "MOD2"].iter().enumerate() {
        let port = 40000 + i as u16;
        let a = handshake(&mut e, port, 0);
        send(&mut e, port, a, 0, &rq("PACS", calling)[..200], 0x08, 1);
        got.push(syn_to(&outbox(&mut e)));
    }
    // rr alone would alternate; the calling AE keeps its node.
    assert_eq!(got, [got[0], got[1], got[1], got[0], got[1]]);
    assert_ne!(got[0], got[1]);
}

#[test]
fn hl7_unrouted_gets_ar() {
    let extra = r#"
protocol_aware = "hl7"
[[virtual_service.hl7_route]]
receiving_application = "LAB"
servers = ["A"]
"#;
    let mut e = engine(extra, "");
    let a = handshake(&mut e, 40000, 0);
    send(
        &mut e,
        40000,
        a,
        0,
        b"\x0bMSH|^~\\&|ADT|H|LAB|X|||ADT^A01|1|P|2.3\r",
        0x08,
        1,
    );
    assert_eq!(syn_to(&outbox(&mut e)), RS[0]);
    let a = handshake(&mut e, 40001, 0);
    let msg = b"\x0bMSH|^~\\&|ADT|H|PHARM|X|||ADT^A01|C7|P|2.3\rPID|1\r\x1c\r";
    send(&mut e, 40001, a, 0, msg, 0x08, 1);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1, "{out:?}");
    assert!(out[0].seg.flags.fin());
    let (s, end) = hl7::frame(&out[0].payload).unwrap().unwrap();
    let segs: Vec<&[u8]> = hl7::segments(&out[0].payload[s..end]).collect();
    assert!(segs[1].starts_with(b"MSA|AR|C7|"), "{segs:?}");
    assert!(segs[2].starts_with(b"ERR|MSH^1^5^103&"), "{segs:?}");
}

const ECHOSCU: &[u8] = include_bytes!("../../testdata/aware/rq_echoscu.bin");

/// A DICOM-aware connection spliced to PACS_B's server: the client's
/// A-ASSOCIATE-RQ went through and the server answered `ac`; returns
/// (our ISN, the server's SYN destination and source, the server's ISN).
fn associated(e: &mut Engine, ac: &[u8], client_acks: bool) -> (u32, Out, u32) {
    let mut rq = ECHOSCU.to_vec();
    Associate::new_checked(&mut rq[..])
        .unwrap()
        .set_called_ae(&AeTitle::new("PACS_B"));
    let a = handshake(e, 40000, 0);
    send(e, 40000, a, 0, &rq, 0x08, 1);
    let out = outbox(e);
    let syn = out.into_iter().find(|o| o.seg.flags.syn()).unwrap();
    let s_isn = 5000u32;
    let mut f = seg(
        syn.dst,
        syn.src,
        s_isn,
        Some(syn.seg.seq.wrapping_add(1)),
        SYN,
        65535,
        SynOptions::default(),
        &[],
    );
    e.process(1, &mut f, t(2));
    let released = outbox(e);
    assert!(released.iter().any(|o| o.payload == rq), "{released:?}");
    // The server acknowledges the request and answers.
    let end = CISN.wrapping_add(1 + rq.len() as u32);
    let mut f = seg(
        syn.dst,
        syn.src,
        s_isn + 1,
        Some(end),
        0x08,
        65535,
        SynOptions::default(),
        ac,
    );
    e.process(1, &mut f, t(3));
    let fwd = e.drain_outgoing().count();
    assert_eq!(fwd, 0, "forwarded frames are not originated");
    if client_acks {
        let seen = a.wrapping_add(1 + ac.len() as u32);
        let mut f = seg(
            ep(CLIENT, 40000),
            ep(VIP, 2575),
            end,
            Some(seen),
            0,
            502,
            SynOptions::default(),
            &[],
        );
        e.process(0, &mut f, t(4));
    }
    (a, syn, s_isn)
}

/// An A-ASSOCIATE-AC-like PDU of `n` body bytes.
fn pdu(t: u8, n: usize) -> Vec<u8> {
    let mut b = alloc::vec![t, 0];
    b.extend_from_slice(&(n as u32).to_be_bytes());
    b.extend(core::iter::repeat_n(0x20, n));
    b
}

#[test]
fn idle_association_ends_with_a_abort_to_both_sides() {
    let mut e = engine(DICOM, "");
    let ac = pdu(2, 90);
    let (a, syn, s_isn) = associated(&mut e, &ac, true);
    // client_timeout is 5 s.
    e.expire(t(6_000), 64);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 2, "{out:?}");
    let abort = [7, 0, 0, 0, 0, 4, 0, 0, 2, 0];
    let to_client = out.iter().find(|o| o.dst == ep(CLIENT, 40000)).unwrap();
    assert_eq!(to_client.payload, abort);
    assert!(to_client.seg.flags.fin() && !to_client.seg.flags.rst());
    assert_eq!(to_client.seg.seq, a.wrapping_add(1 + ac.len() as u32));
    let to_server = out.iter().find(|o| o.dst == syn.dst).unwrap();
    assert_eq!(to_server.payload, abort);
    assert!(to_server.seg.flags.fin() && !to_server.seg.flags.rst());
    assert_eq!(
        to_server.seg.seq,
        CISN.wrapping_add(1 + ECHOSCU.len() as u32)
    );
    assert_eq!(to_server.seg.ack, s_isn + 1 + ac.len() as u32);
    assert_eq!(e.l7_stats().aborts_sent, 1);
    // The pair's bytes: the request one way, the answer the other.
    let p = e.l7_pairs()[0];
    assert_eq!((p.routed, p.refused), (1, 0));
    assert!(p.bytes >= (ECHOSCU.len() + ac.len()) as u64, "{p:?}");
}

#[test]
fn a_lost_a_abort_is_sent_again_until_acknowledged() {
    let mut e = engine(DICOM, "");
    let ac = pdu(2, 90);
    let (a, syn, s_isn) = associated(&mut e, &ac, true);
    e.expire(t(6_000), 64);
    let first = outbox(&mut e);
    assert_eq!(first.len(), 2, "{first:?}");
    // Both A-ABORTs are lost: after the retransmission timeout both are
    // sent again, the same bytes at the same sequence numbers.
    e.expire(t(7_100), 64);
    let again = outbox(&mut e);
    assert_eq!(again.len(), 2, "{again:?}");
    for o in &again {
        let was = first.iter().find(|f| f.dst == o.dst).unwrap();
        assert_eq!((o.seg.seq, &o.payload), (was.seg.seq, &was.payload));
        assert!(o.seg.flags.fin());
    }
    // The client acknowledges its A-ABORT and FIN and sends its own FIN:
    // the appliance acknowledges that FIN; from now on only the server's
    // A-ABORT is resent.
    let c_end = a.wrapping_add(1 + ac.len() as u32 + 10 + 1);
    let rq_end = CISN.wrapping_add(1 + ECHOSCU.len() as u32);
    let mut f = seg(
        ep(CLIENT, 40000),
        ep(VIP, 2575),
        rq_end,
        Some(c_end),
        FIN,
        502,
        SynOptions::default(),
        &[],
    );
    assert_eq!(e.process(0, &mut f, t(7_200)), Decision::Consumed);
    let acks = outbox(&mut e);
    assert_eq!(acks.len(), 1, "{acks:?}");
    assert_eq!(acks[0].dst, ep(CLIENT, 40000));
    assert_eq!(
        (acks[0].seg.seq, acks[0].seg.ack),
        (c_end, rq_end.wrapping_add(1))
    );
    e.expire(t(9_300), 64);
    let third = outbox(&mut e);
    assert_eq!(third.len(), 1, "{third:?}");
    assert_eq!(third[0].dst, syn.dst);
    // The server acknowledges too: nothing more is sent.
    let mut f = seg(
        syn.dst,
        syn.src,
        s_isn + 1 + ac.len() as u32,
        Some(rq_end.wrapping_add(10 + 1)),
        0,
        65535,
        SynOptions::default(),
        &[],
    );
    assert_eq!(e.process(1, &mut f, t(9_400)), Decision::Consumed);
    e.expire(t(20_000), 64);
    assert!(outbox(&mut e).is_empty());
    let st = e.l7_stats();
    assert_eq!((st.aborts_sent, st.abort_retransmits), (1, 2));
}

#[test]
fn poweroff_drains_then_aborts_what_remains() {
    use crate::engine::ShutdownStep;
    let drain = Duration::from_secs(30);
    let mut e = engine(DICOM, "");
    let ac = pdu(2, 90);
    let (a, syn, s_isn) = associated(&mut e, &ac, true);
    e.begin_shutdown(t(10));
    assert_eq!(
        e.shutdown_step(t(10), drain),
        ShutdownStep::Draining { open: 1 }
    );
    // A new client is refused at once.
    let mut f = seg(
        ep(CLIENT, 40001),
        ep(VIP, 2575),
        CISN,
        None,
        SYN,
        502,
        SynOptions::default(),
        &[],
    );
    assert_eq!(
        e.process(0, &mut f, t(20)),
        Decision::Drop(DropReason::Standby)
    );
    assert!(outbox(&mut e).is_empty());
    // The association keeps going within the drain time...
    assert!(matches!(
        client_data(&mut e, a, 0, ac.len() as u32, &pdu(4, 20), 1_000),
        Decision::Forward { .. }
    ));
    server_ack(&mut e, &syn, s_isn, ac.len() as u32, 26, 1_001);
    assert_eq!(
        e.shutdown_step(t(29_000), drain),
        ShutdownStep::Draining { open: 1 }
    );
    assert!(outbox(&mut e).is_empty());
    // ...and is aborted, cleanly, when it is over.
    assert_eq!(
        e.shutdown_step(t(30_010), drain),
        ShutdownStep::Aborting { open: 1 }
    );
    let out = outbox(&mut e);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(
        out.iter()
            .all(|o| o.payload == [7, 0, 0, 0, 0, 4, 0, 0, 2, 0] && o.seg.flags.fin())
    );
    // Unacknowledged, the appliance still powers off within its bound.
    assert_eq!(
        e.shutdown_step(t(30_010 + 12_000), drain),
        ShutdownStep::Aborting { open: 1 }
    );
    assert_eq!(
        e.shutdown_step(t(30_010 + 13_000), drain),
        ShutdownStep::PowerOff
    );
}

#[test]
fn poweroff_ends_once_the_a_aborts_are_acknowledged() {
    use crate::engine::ShutdownStep;
    let drain = Duration::from_secs(30);
    let mut e = engine(DICOM, "");
    let ac = pdu(2, 90);
    let (a, syn, s_isn) = associated(&mut e, &ac, true);
    e.begin_shutdown(t(10));
    assert_eq!(
        e.shutdown_step(t(30_010), drain),
        ShutdownStep::Aborting { open: 1 }
    );
    assert_eq!(outbox(&mut e).len(), 2);
    let seen = ac.len() as u32 + 10 + 1;
    assert_eq!(
        client_data(&mut e, a, 0, seen, &[], 30_100),
        Decision::Consumed
    );
    assert_eq!(
        e.shutdown_step(t(30_100), drain),
        ShutdownStep::Aborting { open: 1 },
        "the PACS has not acknowledged its A-ABORT yet"
    );
    server_ack(&mut e, &syn, s_isn, ac.len() as u32, 10 + 1, 30_200);
    assert_eq!(e.shutdown_step(t(30_200), drain), ShutdownStep::PowerOff);
}

#[test]
fn poweroff_with_nothing_open_is_immediate() {
    use crate::engine::ShutdownStep;
    let mut e = engine(DICOM, "");
    e.begin_shutdown(t(0));
    assert_eq!(
        e.shutdown_step(t(0), Duration::from_secs(30)),
        ShutdownStep::PowerOff
    );
}

#[test]
fn halt_mid_pdu_or_unacknowledged_resets_instead() {
    // The server's answer is not acknowledged by the client yet: an
    // A-ABORT after it could not be delivered, so both get a RST.
    let mut e = engine(DICOM, "");
    associated(&mut e, &pdu(2, 90), false);
    e.expire(t(6_000), 64);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out.iter().all(|o| o.seg.flags.rst()), "{out:?}");
    // Half a PDU sent (acknowledged): no boundary to put the abort at.
    let mut e = engine(DICOM, "");
    let mut half = pdu(4, 100);
    half.truncate(50);
    associated(&mut e, &half, true);
    e.expire(t(6_000), 64);
    let out = outbox(&mut e);
    assert!(out.iter().all(|o| o.seg.flags.rst()), "{out:?}");
    assert_eq!(e.l7_stats().aborts_sent, 0);
}

/// The client's bytes `data` at offset `at` of its stream (after the
/// A-ASSOCIATE-RQ of [`associated`]), acknowledging the server's first
/// `seen` bytes; the engine's decision.
fn client_data(e: &mut Engine, a: u32, at: u32, seen: u32, data: &[u8], now: u64) -> Decision {
    let rq = ECHOSCU.len() as u32;
    let mut f = seg(
        ep(CLIENT, 40000),
        ep(VIP, 2575),
        CISN.wrapping_add(1 + rq + at),
        Some(a.wrapping_add(1 + seen)),
        0,
        502,
        SynOptions::default(),
        data,
    );
    e.process(0, &mut f, t(now))
}

/// The server's acknowledgement of the client's first `upto` bytes after
/// the request, its stream at `at` (after its first `at` bytes).
fn server_ack(e: &mut Engine, syn: &Out, s_isn: u32, at: u32, upto: u32, now: u64) -> Decision {
    let rq = ECHOSCU.len() as u32;
    let mut f = seg(
        syn.dst,
        syn.src,
        s_isn + 1 + at,
        Some(CISN.wrapping_add(1 + rq + upto)),
        0,
        65535,
        SynOptions::default(),
        &[],
    );
    e.process(1, &mut f, t(now))
}

#[test]
fn halt_mid_pdu_finishes_the_pdu_then_aborts_both_sides() {
    let mut e = engine(DICOM, "");
    let ac = pdu(2, 90);
    let (a, syn, s_isn) = associated(&mut e, &ac, true);
    let seen = ac.len() as u32;
    // Half of a P-DATA PDU is on its way when PACS_B's server is halted.
    let data = pdu(4, 100);
    let forwarded = |d: Decision| matches!(d, Decision::Forward { .. });
    assert!(forwarded(client_data(&mut e, a, 0, seen, &data[..50], 5)));
    e.set_server_admin(0, 1, AdminState::Halt);
    assert!(outbox(&mut e).is_empty(), "no reset in the middle of a PDU");
    // The rest of the PDU still goes through; the next PDU is held back,
    // each time the client sends it.
    assert!(forwarded(client_data(&mut e, a, 50, seen, &data[50..], 6)));
    let next = pdu(4, 10);
    for now in [7, 8] {
        assert_eq!(
            client_data(&mut e, a, data.len() as u32, seen, &next, now),
            Decision::Consumed
        );
    }
    assert!(outbox(&mut e).is_empty());
    assert_eq!(e.l7_stats().halt_held, 2);
    // The server acknowledges the whole PDU: both directions are between
    // PDUs, so both get an A-ABORT and FIN where their next PDU belongs.
    assert!(forwarded(server_ack(
        &mut e,
        &syn,
        s_isn,
        seen,
        data.len() as u32,
        9
    )));
    let out = outbox(&mut e);
    assert_eq!(out.len(), 2, "{out:?}");
    let abort = [7, 0, 0, 0, 0, 4, 0, 0, 2, 0];
    let to_client = out.iter().find(|o| o.dst == ep(CLIENT, 40000)).unwrap();
    assert_eq!(to_client.payload, abort);
    assert!(to_client.seg.flags.fin() && !to_client.seg.flags.rst());
    assert_eq!(to_client.seg.seq, a.wrapping_add(1 + seen));
    let to_server = out.iter().find(|o| o.dst == syn.dst).unwrap();
    assert_eq!(to_server.payload, abort);
    assert!(to_server.seg.flags.fin() && !to_server.seg.flags.rst());
    assert_eq!(
        to_server.seg.seq,
        CISN.wrapping_add(1 + (ECHOSCU.len() + data.len()) as u32)
    );
    let st = e.l7_stats();
    assert_eq!((st.aborts_sent, st.halted), (1, 1));
    assert_eq!(e.l7_connections().len(), 0);
}

#[test]
fn halt_that_never_reaches_a_boundary_resets_after_the_grace() {
    let mut e = engine(DICOM, "");
    let ac = pdu(2, 90);
    let (a, _syn, _) = associated(&mut e, &ac, true);
    let data = pdu(4, 100);
    client_data(&mut e, a, 0, ac.len() as u32, &data[..50], 5);
    e.set_server_admin(0, 1, AdminState::Halt);
    assert!(outbox(&mut e).is_empty());
    // Nothing more comes: within the grace the association waits...
    e.expire(t(5 + HALT_GRACE.millis() - 1), 64);
    assert!(outbox(&mut e).is_empty());
    // ...then it is reset, as a halt in the middle of a PDU always was.
    e.expire(t(5 + HALT_GRACE.millis() + 1), 64);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out.iter().all(|o| o.seg.flags.rst()), "{out:?}");
    let st = e.l7_stats();
    assert_eq!((st.aborts_sent, st.halted), (0, 1));
}

#[test]
fn rewrite_called_ae_changes_those_16_bytes_only() {
    let extra = DICOM.replace(
        "called_ae = \"PACS_B\"\nservers = [\"B\"]",
        "called_ae = \"PACS_B\"\nservers = [\"B\"]\nrewrite_called_ae = \"ARCHIVE_B\"",
    );
    assert_ne!(extra, DICOM);
    let mut e = engine(&extra, "");
    let a = handshake(&mut e, 40000, 0);
    let b = rq("PACS_B", "MOD1");
    // Cut inside the called AE field, and an odd cut too.
    for (from, to) in [(0, 15), (15, 31), (31, 400)] {
        send(&mut e, 40000, a, from, &b[from as usize..to], 0x08, 1);
    }
    let syn = outbox(&mut e)
        .into_iter()
        .find(|o| o.seg.flags.syn())
        .unwrap();
    let mut f = seg(
        syn.dst,
        syn.src,
        9000,
        Some(syn.seg.seq.wrapping_add(1)),
        SYN,
        65535,
        SynOptions::default(),
        &[],
    );
    e.process(1, &mut f, t(2));
    let mut got = Vec::new();
    for o in e.drain_outgoing() {
        let out = read(&o.frame, o.nic);
        if out.payload.is_empty() {
            continue;
        }
        // Every released segment's checksum still verifies.
        let eth = smoltcp::wire::EthernetFrame::new_checked(&o.frame[..]).unwrap();
        let ip = smoltcp::wire::Ipv4Packet::new_checked(eth.payload()).unwrap();
        let tcp = smoltcp::wire::TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(
            tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into()),
            "checksum of the segment at {}",
            out.seg.seq
        );
        got.push((out.seg.seq, out.payload));
    }
    got.sort();
    let sent: Vec<u8> = got.into_iter().flat_map(|(_, p)| p).collect();
    let mut want = b[..400].to_vec();
    want[10..26].copy_from_slice(&AeTitle::new("ARCHIVE_B").0);
    assert_eq!(sent, want);
}
