//! Layer 7 relay tests on hand-built segments: handshakes, cookies, retries,
//! timeouts, halt, limits, the port range.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::*;
use crate::config::parse_toml;
use crate::flow::Endpoint;
use crate::frame::{Class, ETHERNET_HEADER_LEN, TcpFlags, classify};
use crate::splice::options::parse_syn;
use crate::splice::{Originate, Seg, SynOptions};

pub(super) const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 14);
pub(super) const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
pub(super) const LB_INT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
pub(super) const RS: [Ipv4Addr; 2] = [Ipv4Addr::new(10, 1, 0, 41), Ipv4Addr::new(10, 1, 0, 42)];
pub(super) const SYN: u8 = TcpFlags::SYN;
pub(super) const RST: u8 = TcpFlags::RST;
pub(super) const FIN: u8 = TcpFlags::FIN;

pub(super) fn config(extra: &str, server_extra: &str) -> Config {
    let toml = alloc::format!(
        r#"
[l7]
half_open = 2

[[network.interface]]
name = "eth0"
address = "192.0.2.1"
prefix = 24
[[network.interface]]
name = "eth1"
address = "10.1.0.1"
prefix = 16
role = "internal"

[[virtual_service]]
label = "HL7"
vip = "192.0.2.14"
ports = "2575,443"
forwarding = "layer7"
scheduler = "rr"
client_timeout = 5
server_timeout = 60
{extra}
  [[virtual_service.real_server]]
  label = "A"
  ip = "10.1.0.41"
  {server_extra}
  [[virtual_service.real_server]]
  label = "B"
  ip = "10.1.0.42"
  {server_extra}
"#
    );
    let c = parse_toml(&toml).unwrap();
    crate::config::validate(&c).unwrap();
    c
}

pub(super) fn engine(extra: &str, server_extra: &str) -> Engine {
    let c = config(extra, server_extra);
    let mut caps = Capacities::from_config(&c);
    caps.conntrack = 64;
    caps.persistence = 64;
    caps.l7_connections = 16;
    Engine::new(&c, caps).unwrap()
}

pub(super) fn t(ms: u64) -> Instant {
    Instant(ms)
}

pub(super) fn ep(a: Ipv4Addr, p: u16) -> Endpoint {
    Endpoint::new(a, p)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn seg(
    src: Endpoint,
    dst: Endpoint,
    seq: u32,
    ack: Option<u32>,
    control: u8,
    window: u16,
    syn: SynOptions,
    payload: &[u8],
) -> Vec<u8> {
    Originate {
        src,
        dst,
        seq,
        ack,
        control,
        window,
        syn,
        payload,
    }
    .frame()
}

/// A segment as it left the engine: (src, dst, fields, SYN options, payload).
#[derive(Debug)]
pub(super) struct Out {
    pub(super) src: Endpoint,
    pub(super) dst: Endpoint,
    pub(super) seg: Seg,
    pub(super) opts: SynOptions,
    pub(super) payload: Vec<u8>,
    pub(super) nic: usize,
}

pub(super) fn read(frame: &[u8], nic: usize) -> Out {
    let Ok(Class::L4(p)) = classify(frame) else {
        panic!("not a segment")
    };
    let s = Seg::read(frame, &p).unwrap();
    Out {
        src: p.key.src,
        dst: p.key.dst,
        seg: s,
        opts: parse_syn(s.options(frame)),
        payload: s.payload(frame).to_vec(),
        nic,
    }
}

pub(super) fn outbox(e: &mut Engine) -> Vec<Out> {
    e.drain_outgoing().map(|o| read(&o.frame, o.nic)).collect()
}

pub(super) fn linux_syn() -> SynOptions {
    SynOptions {
        mss: Some(1460),
        wscale: Some(7),
        sack_permitted: true,
        timestamps: false,
    }
}

pub(super) const CISN: u32 = 0xfffff000; // wraps during the test

/// Client handshake on `port`: returns our ISN.
pub(super) fn handshake(e: &mut Engine, cport: u16, now: u64) -> u32 {
    let c = ep(CLIENT, cport);
    let v = ep(VIP, 2575);
    let mut f = seg(c, v, CISN, None, SYN, 64240, linux_syn(), &[]);
    assert_eq!(e.process(0, &mut f, t(now)), Decision::Consumed);
    let out = outbox(e);
    assert_eq!(out.len(), 1);
    let sa = &out[0];
    assert_eq!((sa.src, sa.dst), (v, c));
    assert!(sa.seg.flags.syn() && sa.seg.flags.ack());
    assert_eq!(sa.seg.ack, CISN.wrapping_add(1));
    let a = sa.seg.seq;
    let mut f = seg(
        c,
        v,
        CISN.wrapping_add(1),
        Some(a.wrapping_add(1)),
        0,
        502,
        SynOptions::default(),
        &[],
    );
    assert_eq!(e.process(0, &mut f, t(now)), Decision::Consumed);
    a
}

#[test]
fn synack_mirrors_the_client_without_timestamps() {
    let mut e = engine("", "");
    let c = ep(CLIENT, 40000);
    let v = ep(VIP, 443);
    let opts = SynOptions {
        timestamps: true,
        ..linux_syn()
    };
    let mut f = seg(c, v, 1, None, SYN, 64240, opts, &[]);
    assert_eq!(e.process(0, &mut f, t(0)), Decision::Consumed);
    let out = outbox(&mut e);
    assert_eq!(out[0].opts.mss, Some(1460));
    assert_eq!(out[0].opts.wscale, Some(7));
    assert!(out[0].opts.sack_permitted);
    assert!(!out[0].opts.timestamps);
    assert_eq!(out[0].nic, 0);
    // A bare SYN gets a bare SYN-ACK.
    let mut f = seg(
        ep(CLIENT, 40001),
        v,
        1,
        None,
        SYN,
        8192,
        SynOptions::default(),
        &[],
    );
    e.process(0, &mut f, t(0));
    let out = outbox(&mut e);
    assert_eq!(out[0].opts.wscale, None);
    assert!(!out[0].opts.sack_permitted);
}

#[test]
fn splice_translates_both_ways() {
    let mut e = engine("", "send_proxy = \"v2\"");
    let a = handshake(&mut e, 40000, 0);
    // Early data is held, not acknowledged.
    let c = ep(CLIENT, 40000);
    let v = ep(VIP, 2575);
    let mut f = seg(
        c,
        v,
        CISN.wrapping_add(1),
        Some(a.wrapping_add(1)),
        0x08,
        502,
        SynOptions::default(),
        b"MSH|early",
    );
    assert_eq!(e.process(0, &mut f, t(1)), Decision::Consumed);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1, "only the SYN to the server: {out:?}");
    let syn = &out[0];
    assert_eq!(syn.nic, 1);
    assert!(syn.seg.flags.syn() && !syn.seg.flags.ack());
    assert_eq!(syn.src.addr, LB_INT);
    assert!(!crate::frame::ports::STACK_RANGE.contains(&syn.src.port));
    assert_eq!(syn.dst, ep(RS[0], 2575));
    assert_eq!(
        syn.seg.seq,
        CISN.wrapping_sub(28),
        "ISN c − PROXY v2 length"
    );
    assert_eq!(syn.opts.wscale, Some(7));
    // Server answers with another window shift.
    let s_isn = 777u32;
    let sopts = SynOptions {
        mss: Some(1400),
        wscale: Some(9),
        sack_permitted: true,
        timestamps: false,
    };
    let mut f = seg(
        syn.dst,
        syn.src,
        s_isn,
        Some(syn.seg.seq.wrapping_add(1)),
        SYN,
        65535,
        sopts,
        &[],
    );
    assert_eq!(e.process(1, &mut f, t(2)), Decision::Consumed);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 2, "{out:?}");
    let (ack, early) = (&out[0], &out[1]);
    assert_eq!(ack.seg.ack, s_isn + 1);
    assert_eq!(ack.seg.seq, CISN.wrapping_sub(27));
    assert_eq!(ack.payload.len(), 28);
    assert_eq!(&ack.payload[..12], &crate::splice::proxy::V2_SIGNATURE);
    assert_eq!(early.payload, b"MSH|early");
    assert_eq!(early.seg.seq, CISN.wrapping_add(1));
    assert_eq!(early.seg.ack, s_isn + 1);
    assert_eq!((early.src, early.dst), (syn.src, syn.dst));
    // Server data to the client: seq + (a − s), ack floored at c + 1 while
    // the PROXY header is unacknowledged, window 100 << 9 >> 7 = 400.
    let mut f = seg(
        syn.dst,
        syn.src,
        s_isn + 1,
        Some(CISN.wrapping_sub(20)),
        0x08,
        100,
        SynOptions::default(),
        b"MSA|AA",
    );
    let d = e.process(1, &mut f, t(3));
    assert_eq!(
        d,
        Decision::Forward {
            nic: 0,
            next_hop: CLIENT
        }
    );
    let o = read(&f, 0);
    assert_eq!((o.src, o.dst), (v, c));
    assert_eq!(o.seg.seq, a.wrapping_add(1));
    assert_eq!(o.seg.ack, CISN.wrapping_add(1));
    assert_eq!(o.seg.window, 400);
    // Client acknowledges it: ack − (a − s), window unchanged (both 7... the
    // server reads our windows with the client's shift).
    let mut f = seg(
        c,
        v,
        CISN.wrapping_add(10),
        Some(a.wrapping_add(7)),
        0,
        502,
        SynOptions::default(),
        &[],
    );
    assert_eq!(
        e.process(0, &mut f, t(4)),
        Decision::Forward {
            nic: 1,
            next_hop: RS[0]
        }
    );
    let o = read(&f, 1);
    assert_eq!(o.seg.ack, s_isn + 7);
    assert_eq!(o.seg.window, 502);
    // The PROXY header is resent until the server acknowledges it.
    e.expire(t(400), 64);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].payload.len(), 28);
    assert_eq!(e.l7_stats().proxy_retransmits, 1);
    let mut f = seg(
        syn.dst,
        syn.src,
        s_isn + 7,
        Some(CISN.wrapping_add(10)),
        0,
        100,
        SynOptions::default(),
        &[],
    );
    e.process(1, &mut f, t(500));
    e.expire(t(2000), 64);
    assert!(outbox(&mut e).is_empty());
    // Half-close: client FIN passes, server keeps sending, then FINs.
    let mut f = seg(
        c,
        v,
        CISN.wrapping_add(10),
        Some(a.wrapping_add(7)),
        FIN,
        502,
        SynOptions::default(),
        &[],
    );
    assert!(matches!(
        e.process(0, &mut f, t(600)),
        Decision::Forward { .. }
    ));
    let mut f = seg(
        syn.dst,
        syn.src,
        s_isn + 7,
        Some(CISN.wrapping_add(11)),
        0x08,
        100,
        SynOptions::default(),
        b"more",
    );
    assert!(matches!(
        e.process(1, &mut f, t(601)),
        Decision::Forward { .. }
    ));
    let mut f = seg(
        syn.dst,
        syn.src,
        s_isn + 11,
        Some(CISN.wrapping_add(11)),
        FIN,
        100,
        SynOptions::default(),
        &[],
    );
    assert!(matches!(
        e.process(1, &mut f, t(602)),
        Decision::Forward { .. }
    ));
    let mut f = seg(
        c,
        v,
        CISN.wrapping_add(11),
        Some(a.wrapping_add(12)),
        0,
        502,
        SynOptions::default(),
        &[],
    );
    assert!(matches!(
        e.process(0, &mut f, t(603)),
        Decision::Forward { .. }
    ));
    // Both FINs acknowledged: the entry lingers, then goes, port and count
    // given back.
    assert_eq!(e.server_state(0, 0).unwrap().active, 1);
    e.expire(t(603 + 11_000), 64);
    assert_eq!(e.l7_connections().len(), 0);
    assert_eq!(e.server_state(0, 0).unwrap().active, 0);
    assert_eq!(e.snat_ports(0, 0).unwrap().in_use(), 0);
    assert_eq!(e.l7_stats().idle_closed, 0);
    assert!(
        outbox(&mut e).is_empty(),
        "a closed connection is not reset"
    );
}

#[test]
fn refused_and_silent_servers_are_retried_then_the_client_is_reset() {
    let mut e = engine("retries = 1", "");
    let a = handshake(&mut e, 40000, 0);
    let syn = outbox(&mut e).pop().unwrap();
    assert_eq!(syn.dst.addr, RS[0]);
    // A refuses.
    let mut f = seg(
        syn.dst,
        syn.src,
        0,
        Some(syn.seg.seq.wrapping_add(1)),
        RST,
        0,
        SynOptions::default(),
        &[],
    );
    assert_eq!(e.process(1, &mut f, t(10)), Decision::Consumed);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].dst.addr, RS[1], "retry goes to the other server");
    assert_eq!(e.l7_stats().refused, 1);
    assert_eq!(e.server_state(0, 0).unwrap().active, 0);
    // B stays silent: SYN resent after 1 s, given up after 3 s.
    e.expire(t(1100), 64);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1);
    assert!(out[0].seg.flags.syn());
    e.expire(t(3100), 64);
    let out = outbox(&mut e);
    // RST to the silent server, RST to the client (retries used up).
    let to_client = out
        .iter()
        .find(|o| o.dst.addr == CLIENT)
        .expect("client reset");
    assert!(to_client.seg.flags.rst());
    assert_eq!(to_client.seg.seq, a.wrapping_add(1));
    assert_eq!(to_client.seg.ack, CISN.wrapping_add(1));
    assert!(out.iter().any(|o| o.dst.addr == RS[1] && o.seg.flags.rst()));
    let s = e.l7_stats();
    assert_eq!((s.connect_timeouts, s.failed, s.retries), (1, 1, 1));
    assert_eq!(e.server_state(0, 1).unwrap().active, 0);
    assert_eq!(e.snat_ports(0, 1).unwrap().in_use(), 0);
}

#[test]
fn syn_cookies_past_the_half_open_threshold() {
    let mut e = engine("", "");
    let v = ep(VIP, 2575);
    let mut isns = Vec::new();
    for p in 0..5u16 {
        let mut f = seg(
            ep(CLIENT, 50000 + p),
            v,
            1000 + u32::from(p),
            None,
            SYN,
            64240,
            linux_syn(),
            &[],
        );
        assert_eq!(e.process(0, &mut f, t(0)), Decision::Consumed);
        isns.push(outbox(&mut e)[0].seg.seq);
    }
    assert_eq!(e.l7_half_open(), 2);
    assert_eq!(e.l7_stats().cookies_sent, 3);
    // A cookie client completes: the server gets a SYN with its options.
    let mut f = seg(
        ep(CLIENT, 50004),
        v,
        1005,
        Some(isns[4].wrapping_add(1)),
        0,
        502,
        SynOptions::default(),
        &[],
    );
    assert_eq!(e.process(0, &mut f, t(5)), Decision::Consumed);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1);
    assert!(out[0].seg.flags.syn());
    assert_eq!(out[0].opts.wscale, Some(7));
    assert!(out[0].opts.sack_permitted);
    assert_eq!(out[0].opts.mss, Some(1460));
    assert_eq!(e.l7_stats().cookies_accepted, 1);
    // A forged ACK is refused and counted.
    let mut f = seg(
        ep(CLIENT, 50003),
        v,
        1004,
        Some(isns[3].wrapping_add(2)),
        0,
        502,
        SynOptions::default(),
        &[],
    );
    assert_eq!(
        e.process(0, &mut f, t(5)),
        Decision::Drop(DropReason::NoFlow)
    );
    assert_eq!(e.l7_stats().cookies_rejected, 1);
    // Half-open entries expire.
    e.expire(t(61_000), 64);
    assert_eq!(e.l7_half_open(), 0);
}

/// Client handshake plus server handshake: returns (a, server SYN out).
fn spliced(e: &mut Engine, cport: u16, now: u64) -> (u32, Out) {
    let a = handshake(e, cport, now);
    let syn = outbox(e).pop().unwrap();
    let mut f = seg(
        syn.dst,
        syn.src,
        5000,
        Some(syn.seg.seq.wrapping_add(1)),
        SYN,
        65535,
        SynOptions {
            wscale: Some(7),
            ..SynOptions::default()
        },
        &[],
    );
    assert_eq!(e.process(1, &mut f, t(now)), Decision::Consumed);
    outbox(e);
    (a, syn)
}

#[test]
fn idle_connections_are_reset_on_both_sides() {
    let mut e = engine("", "");
    let (a, syn) = spliced(&mut e, 40000, 0);
    let c = ep(CLIENT, 40000);
    let v = ep(VIP, 2575);
    // Traffic from the client at 4 s: alive at 8 s, idle past 5 s at 9.1 s.
    let mut f = seg(
        c,
        v,
        CISN.wrapping_add(1),
        Some(a.wrapping_add(1)),
        0x08,
        502,
        SynOptions::default(),
        b"x",
    );
    assert!(matches!(
        e.process(0, &mut f, t(4000)),
        Decision::Forward { .. }
    ));
    e.expire(t(8000), 64);
    assert!(outbox(&mut e).is_empty());
    e.expire(t(9100), 64);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 2, "{out:?}");
    let rc = out.iter().find(|o| o.dst == c).unwrap();
    let rs = out.iter().find(|o| o.dst == syn.dst).unwrap();
    assert!(rc.seg.flags.rst() && rs.seg.flags.rst());
    assert_eq!(rc.src, v);
    assert_eq!(rc.seg.seq, a.wrapping_add(1), "client expects a+1 next");
    assert_eq!(rs.seg.seq, CISN.wrapping_add(2), "server expects c+2 next");
    assert_eq!(rs.seg.ack, 5001);
    assert_eq!(e.l7_stats().idle_closed, 1);
    assert_eq!(e.l7_connections().len(), 0);
}

#[test]
fn halt_resets_and_drain_keeps() {
    let mut e = engine("", "");
    let (_, syn_a) = spliced(&mut e, 40000, 0);
    let (_, syn_b) = spliced(&mut e, 40001, 0);
    assert_eq!((syn_a.dst.addr, syn_b.dst.addr), (RS[0], RS[1]));
    e.set_server_admin(0, 1, AdminState::Drain);
    e.set_server_admin(0, 0, AdminState::Halt);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|o| o.seg.flags.rst()));
    assert!(out.iter().any(|o| o.dst == syn_a.dst));
    assert_eq!(e.l7_stats().halted, 1);
    assert_eq!(
        e.l7_connections().len(),
        1,
        "the drained server's connection stays"
    );
    // No server left for a new client: it is reset.
    handshake(&mut e, 40002, 10);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1);
    assert!(out[0].seg.flags.rst() && out[0].dst.addr == CLIENT);
}

#[test]
fn persistence_keeps_a_client_on_its_server() {
    let mut e = engine("persistence_timeout = 3600", "");
    for p in 0..4 {
        let (_, syn) = spliced(&mut e, 40000 + p, 0);
        assert_eq!(syn.dst.addr, RS[0]);
    }
    assert_eq!(e.persistence().len(), 1);
}

#[test]
fn max_connections_is_a_limit() {
    let mut e = engine("", "max_connections = 1");
    let (_, a) = spliced(&mut e, 40000, 0);
    let (_, b) = spliced(&mut e, 40001, 0);
    assert_eq!((a.dst.addr, b.dst.addr), (RS[0], RS[1]));
    // Both full: the third client is reset, nothing is sent to a server.
    handshake(&mut e, 40002, 0);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1);
    assert!(out[0].seg.flags.rst() && out[0].dst.addr == CLIENT);
}

#[test]
fn fallback_server_while_no_real_server_is_up() {
    let mut e = engine("fallback = { ip = \"10.1.0.99\" }", "");
    e.set_server_health(0, 0, false);
    e.set_server_health(0, 1, false);
    let (_, syn) = spliced(&mut e, 40000, 0);
    assert_eq!(syn.dst, ep(Ipv4Addr::new(10, 1, 0, 99), 2575));
    assert_eq!(syn.src.addr, LB_INT, "SNAT as for a real server");
    assert_eq!(e.service_stats(0).unwrap().servers[2].connections, 1);
    assert_eq!(e.persistence().len(), 0, "no persistence to the fallback");
    // A real server back: new connections go to it, the fallback's stays.
    e.set_server_health(0, 1, true);
    let (_, syn) = spliced(&mut e, 40001, 10);
    assert_eq!(syn.dst.addr, RS[1]);
    assert_eq!(e.server_state(0, 2).unwrap().active, 1);
}

#[test]
fn fallback_local_resets_the_client_and_counts() {
    let mut e = engine("fallback = \"local\"", "");
    e.set_server_health(0, 0, false);
    e.set_server_health(0, 1, false);
    // The SYN is answered with a reset from the VIP at once.
    let (c, v) = (ep(CLIENT, 40000), ep(VIP, 2575));
    let mut f = seg(c, v, CISN, None, SYN, 64240, linux_syn(), &[]);
    assert_eq!(
        e.process(0, &mut f, t(0)),
        Decision::Forward {
            nic: 0,
            next_hop: CLIENT
        }
    );
    let o = read(&f, 0);
    assert_eq!((o.src, o.dst), (v, c));
    assert!(o.seg.flags.rst() && o.seg.flags.ack());
    assert_eq!(o.seg.ack, CISN.wrapping_add(1));
    assert!(outbox(&mut e).is_empty());
    assert_eq!(e.l7_connections().len(), 0, "nothing kept");
    assert_eq!(e.service_stats(0).unwrap().fallback_refused, 1);
    // A server back up: the next client is served.
    e.set_server_health(0, 1, true);
    let (_, syn) = spliced(&mut e, 40001, 10);
    assert_eq!(syn.dst.addr, RS[1]);
}

#[test]
fn transparent_connects_from_the_client() {
    let mut e = engine("l7_transparent = true", "");
    let (_, syn) = spliced(&mut e, 40000, 0);
    assert_eq!(syn.src, ep(CLIENT, 40000));
    assert!(e.snat_ports(0, 0).is_none());
}

#[test]
fn client_reset_before_the_server_answers() {
    let mut e = engine("", "");
    let a = handshake(&mut e, 40000, 0);
    let syn = outbox(&mut e).pop().unwrap();
    let mut f = seg(
        ep(CLIENT, 40000),
        ep(VIP, 2575),
        CISN.wrapping_add(1),
        Some(a.wrapping_add(1)),
        RST,
        0,
        SynOptions::default(),
        &[],
    );
    assert_eq!(e.process(0, &mut f, t(5)), Decision::Consumed);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1);
    assert!(out[0].seg.flags.rst() && out[0].dst == syn.dst);
    assert_eq!(e.server_state(0, 0).unwrap().active, 0);
    // A late SYN-ACK finds nothing to splice.
    let mut f = seg(
        syn.dst,
        syn.src,
        5000,
        Some(syn.seg.seq.wrapping_add(1)),
        SYN,
        65535,
        SynOptions::default(),
        &[],
    );
    assert_ne!(e.process(1, &mut f, t(6)), Decision::Consumed);
}

#[test]
fn early_data_is_bounded() {
    let mut e = engine("", "");
    let a = handshake(&mut e, 40000, 0);
    outbox(&mut e);
    let c = ep(CLIENT, 40000);
    let v = ep(VIP, 2575);
    let chunk = [7u8; 1000];
    for i in 0..6u32 {
        let mut f = seg(
            c,
            v,
            CISN.wrapping_add(1 + i * 1000),
            Some(a.wrapping_add(1)),
            0,
            502,
            SynOptions::default(),
            &chunk,
        );
        assert_eq!(e.process(0, &mut f, t(1)), Decision::Consumed);
    }
    // A retransmission of a held segment is not held twice.
    let mut f = seg(
        c,
        v,
        CISN.wrapping_add(1),
        Some(a.wrapping_add(1)),
        0,
        502,
        SynOptions::default(),
        &chunk,
    );
    e.process(0, &mut f, t(1));
    let s = e.l7_stats();
    assert_eq!((s.held, s.hold_full), (4, 2));
}

#[test]
fn stack_and_relay_ports_do_not_overlap() {
    let r = crate::frame::ports::DEFAULT_RANGE;
    let s = crate::frame::ports::STACK_RANGE;
    assert!(r.end() < s.start() || s.end() < r.start());
}

#[test]
fn garbage_at_the_vip_is_counted_not_fatal() {
    let mut e = engine("", "");
    let v = ep(VIP, 2575);
    for flags in [0u8, 0x10, RST, FIN, 0x11, 0x12, 0x14, 0x03, 0xff] {
        let mut f = seg(
            ep(CLIENT, 1234),
            v,
            1,
            Some(2),
            0,
            0,
            SynOptions::default(),
            &[],
        );
        let at = ETHERNET_HEADER_LEN + 20 + 13;
        f[at] = flags;
        crate::frame::build::fix_ip_checksum(&mut f);
        let d = e.process(0, &mut f, t(0));
        assert!(
            matches!(d, Decision::Drop(_) | Decision::Consumed),
            "{flags:#x}: {d:?}"
        );
    }
    outbox(&mut e);
}

#[test]
fn offloaded_super_frames_are_spliced_with_partial_checksums() {
    use crate::frame::offload::{Gso, L4Checksum, Offload, complete_checksum, pseudo_header_sum};
    let mut e = engine("", "");
    let (a, syn) = spliced(&mut e, 40000, 0);
    // The server sends 8 KiB as one super-frame with a partial checksum.
    let body = [0x5au8; 8192];
    let mut f = seg(
        syn.dst,
        syn.src,
        5001,
        Some(CISN.wrapping_add(1)),
        0x08,
        1000,
        SynOptions::default(),
        &body,
    );
    let start = (ETHERNET_HEADER_LEN + 20) as u16;
    let l4_len = f.len() - usize::from(start);
    let pseudo = pseudo_header_sum(syn.dst.addr, syn.src.addr, 6, l4_len);
    f[usize::from(start) + 16..usize::from(start) + 18].copy_from_slice(&pseudo.to_be_bytes());
    let off = Offload {
        checksum: L4Checksum::Partial { start, offset: 16 },
        gso: Some(Gso { mss: 1460 }),
    };
    let d = e.process_offloaded(1, &mut f, &off, t(1));
    assert_eq!(
        d,
        Decision::Forward {
            nic: 0,
            next_hop: CLIENT
        }
    );
    complete_checksum(&mut f, start, 16).unwrap();
    let o = read(&f, 0);
    assert_eq!(o.seg.seq, a.wrapping_add(1));
    assert_eq!(o.payload.len(), 8192);
    // Finished by "the NIC", the checksum is right for the rewritten frame.
    let ip = smoltcp::wire::Ipv4Packet::new_checked(&f[ETHERNET_HEADER_LEN..]).unwrap();
    let tcp = smoltcp::wire::TcpPacket::new_checked(ip.payload()).unwrap();
    assert!(tcp.verify_checksum(
        &smoltcp::wire::IpAddress::Ipv4(ip.src_addr()),
        &smoltcp::wire::IpAddress::Ipv4(ip.dst_addr())
    ));
    let s = e.service_stats(0).unwrap();
    assert!(
        s.service.packets >= 6,
        "counted as wire segments: {}",
        s.service.packets
    );
}

#[test]
fn a_connection_costs_a_table_entry() {
    let c = config("", "");
    let mut caps = Capacities::from_config(&c);
    caps.l7_connections = 65_536;
    let e = Engine::new(&c, caps).unwrap();
    let per = e.l7_connections().bytes_per_flow();
    std::println!(
        "L7 table: {per} bytes per connection ({} B entry with splice state); 50 000 connections: {:.1} MiB",
        core::mem::size_of::<crate::conntrack::Flow<crate::splice::Conn>>(),
        (per * 50_000) as f64 / 1048576.0
    );
    // The kernel sizes the table with 256 bytes per connection.
    assert!(per <= 256, "{per}");
}

/// A live apply keeps layer 7 connections of what continues (bound to
/// their server, or still waiting for data), drains those of a removed
/// server, and serves a new layer 7 service at once.
#[test]
fn live_apply_keeps_layer7_connections() {
    let old = config("", "");
    let mut e = engine("", "");
    let (a0, syn_a) = spliced(&mut e, 40000, 0);
    let (a1, syn_b) = spliced(&mut e, 40001, 0);
    assert_eq!((syn_a.dst.addr, syn_b.dst.addr), (RS[0], RS[1]));
    // A third client's handshake is under way: no server yet.
    let mut f = seg(
        ep(CLIENT, 40002),
        ep(VIP, 2575),
        CISN,
        None,
        SYN,
        64240,
        linux_syn(),
        &[],
    );
    assert_eq!(e.process(0, &mut f, t(0)), Decision::Consumed);
    let a2 = outbox(&mut e)[0].seg.seq;

    // New: a second layer 7 service first; HL7 loses B and gains C.
    let mut new = old.clone();
    new.virtual_services[0].real_servers.remove(1);
    let mut c = new.virtual_services[0].real_servers[0].clone();
    c.label = "C".into();
    c.ip = Ipv4Addr::new(10, 1, 0, 43);
    new.virtual_services[0].real_servers.push(c);
    let mut extra = new.virtual_services[0].clone();
    extra.label = "EXTRA".into();
    extra.vip = Ipv4Addr::new(192, 0, 2, 15);
    new.virtual_services.insert(0, extra);
    crate::config::validate(&new).unwrap();
    let report = e.apply(&old, &new).unwrap();
    assert_eq!(report.plan.services, [None, Some(0)]);
    assert_eq!(report.draining, 1, "B's connection drains");
    assert_eq!(e.l7_connections().len(), 3);

    // Data on each connection: A's and B's go on to their servers.
    let data = |cport: u16, a: u32| {
        seg(
            ep(CLIENT, cport),
            ep(VIP, 2575),
            CISN.wrapping_add(1),
            Some(a.wrapping_add(1)),
            0x08,
            502,
            SynOptions::default(),
            b"MSH|",
        )
    };
    for (cport, a, server) in [(40000, a0, RS[0]), (40001, a1, RS[1])] {
        let mut f = data(cport, a);
        assert_eq!(
            e.process(0, &mut f, t(10)),
            Decision::Forward {
                nic: 1,
                next_hop: server
            },
            "client port {cport}"
        );
    }
    // The half-open one completes and binds now, to a configured server
    // (never B).
    let mut f = seg(
        ep(CLIENT, 40002),
        ep(VIP, 2575),
        CISN.wrapping_add(1),
        Some(a2.wrapping_add(1)),
        0,
        502,
        SynOptions::default(),
        &[],
    );
    assert_eq!(e.process(0, &mut f, t(10)), Decision::Consumed);
    let out = outbox(&mut e);
    let syn = out.iter().find(|o| o.seg.flags.syn()).expect("SYN out");
    assert_ne!(syn.dst.addr, RS[1]);
    // B's connection never gets a successor: no new client reaches B.
    for p in 0..4 {
        handshake(&mut e, 41000 + p, 20);
        let mut f = data(41000 + p, 0);
        e.process(0, &mut f, t(20));
        assert!(outbox(&mut e).iter().all(|o| o.dst.addr != RS[1]));
    }
    // The new service answers a SYN.
    let mut f = seg(
        ep(CLIENT, 42000),
        ep(Ipv4Addr::new(192, 0, 2, 15), 2575),
        1,
        None,
        SYN,
        64240,
        linux_syn(),
        &[],
    );
    assert_eq!(e.process(0, &mut f, t(30)), Decision::Consumed);
    let out = outbox(&mut e);
    assert!(out[0].seg.flags.syn() && out[0].seg.flags.ack());
}

/// The first layer 7 service, added live, gets the table sized for it.
#[test]
fn live_apply_of_the_first_layer7_service_sizes_its_table() {
    let with = config("", "");
    let mut without = with.clone();
    without.virtual_services.clear();
    let mut caps = Capacities::from_config(&without);
    caps.conntrack = 64;
    caps.persistence = 64;
    caps.l7_connections = 16;
    let mut e = Engine::new(&without, caps).unwrap();
    assert_eq!(e.l7_connections().capacity(), 1);
    e.apply(&without, &with).unwrap();
    assert_eq!(e.l7_connections().capacity(), 16);
    let (_, syn) = spliced(&mut e, 40000, 0);
    assert_eq!(syn.dst.addr, RS[0]);
}
