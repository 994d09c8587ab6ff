//! The fallback page, segment by segment: handshake by cookie, the whole
//! answer to a request, a lost answer repaired by the client's
//! retransmission, forgeries ignored, the client's FIN acknowledged, and
//! nothing stored.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::l7_tests::{outbox, seg};
use super::*;
use crate::config::parse_toml;
use crate::frame::TcpFlags;
use crate::splice::SynOptions;

const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const PAGE: &str = "<html><body><h1>Viewer down for maintenance</h1></body></html>";
const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: viewer\r\n\r\n";
const CISN: u32 = 0x1234_5678;

fn engine() -> Engine {
    engine_with_page(PAGE)
}

fn engine_with_page(page: &str) -> Engine {
    let toml = alloc::format!(
        r#"
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
label = "VIEWER"
vip = "192.0.2.12"
ports = 80
forwarding = "snat"
fallback = {{ page = "{page}" }}
  [[virtual_service.real_server]]
  label = "WEB1"
  ip = "10.1.0.21"
"#
    );
    let c = parse_toml(&toml).unwrap();
    crate::config::validate(&c).unwrap();
    let mut caps = Capacities::from_config(&c);
    caps.conntrack = 64;
    caps.persistence = 64;
    Engine::new(&c, caps).unwrap()
}

fn t(ms: u64) -> Instant {
    Instant::from_millis(ms)
}

fn client(port: u16) -> Endpoint {
    Endpoint::new(CLIENT, port)
}

fn vip() -> Endpoint {
    Endpoint::new(VIP, 80)
}

fn syn_opts(mss: u16) -> SynOptions {
    SynOptions {
        mss: Some(mss),
        wscale: Some(7),
        sack_permitted: true,
        timestamps: false,
    }
}

/// Handshake from `port` with all servers down: our ISN.
fn handshake(e: &mut Engine, port: u16, mss: u16) -> u32 {
    let mut f = seg(
        client(port),
        vip(),
        CISN,
        None,
        TcpFlags::SYN,
        64240,
        syn_opts(mss),
        &[],
    );
    assert_eq!(e.process(0, &mut f, t(0)), Decision::Consumed);
    let out = outbox(e);
    assert_eq!(out.len(), 1);
    let synack = &out[0];
    assert_eq!((synack.src, synack.dst), (vip(), client(port)));
    assert!(synack.seg.flags.syn() && synack.seg.flags.ack());
    assert_eq!(synack.seg.ack, CISN.wrapping_add(1));
    assert_eq!(synack.opts.mss, Some(1460));
    synack.seg.seq
}

fn request(e: &mut Engine, port: u16, isn: u32, now: u64) -> (Decision, Vec<u8>, bool) {
    let mut f = seg(
        client(port),
        vip(),
        CISN.wrapping_add(1),
        Some(isn.wrapping_add(1)),
        0x08,
        64240,
        SynOptions::default(),
        REQUEST,
    );
    let d = e.process(0, &mut f, t(now));
    let out = outbox(e);
    let mut answer = Vec::new();
    let mut next = isn.wrapping_add(1);
    for o in &out {
        assert_eq!((o.src, o.dst), (vip(), client(port)));
        assert_eq!(o.seg.seq, next, "segments in order, no gap");
        assert_eq!(o.seg.ack, CISN.wrapping_add(1 + REQUEST.len() as u32));
        next = next.wrapping_add(o.payload.len() as u32);
        answer.extend_from_slice(&o.payload);
    }
    let fin = out.last().is_some_and(|o| o.seg.flags.fin());
    (d, answer, fin)
}

#[test]
fn a_request_gets_the_whole_page_then_fin_and_nothing_is_stored() {
    let mut e = engine();
    e.set_server_health(0, 0, false);
    let isn = handshake(&mut e, 40000, 1460);
    // The ACK that completes the handshake carries nothing to answer.
    let mut ack = seg(
        client(40000),
        vip(),
        CISN.wrapping_add(1),
        Some(isn.wrapping_add(1)),
        0,
        64240,
        SynOptions::default(),
        &[],
    );
    assert_eq!(
        e.process(0, &mut ack, t(1)),
        Decision::Drop(DropReason::NoFlow)
    );
    let (d, answer, fin) = request(&mut e, 40000, isn, 2);
    assert_eq!(d, Decision::Consumed);
    assert!(fin, "the answer ends with FIN");
    let text = core::str::from_utf8(&answer).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
        "{text}"
    );
    assert!(text.contains(&alloc::format!("Content-Length: {}\r\n", PAGE.len())));
    assert!(text.ends_with(&alloc::format!("\r\n\r\n{PAGE}")));
    // Lost answer: the client sends the request again and gets it again.
    let (d, again, _) = request(&mut e, 40000, isn, 500);
    assert_eq!(d, Decision::Consumed);
    assert_eq!(again, answer);
    // The client's FIN (after our FIN) is acknowledged.
    let fin_seq = CISN.wrapping_add(1 + REQUEST.len() as u32);
    let our_end = isn.wrapping_add(2 + answer.len() as u32);
    let mut f = seg(
        client(40000),
        vip(),
        fin_seq,
        Some(our_end),
        TcpFlags::FIN,
        64240,
        SynOptions::default(),
        &[],
    );
    assert_eq!(e.process(0, &mut f, t(600)), Decision::Consumed);
    let out = outbox(&mut e);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].seg.seq, our_end);
    assert_eq!(out[0].seg.ack, fin_seq.wrapping_add(1));
    assert!(out[0].payload.is_empty() && !out[0].seg.flags.fin());
    let stats = e.service_stats(0).unwrap();
    assert_eq!((stats.fallback_syns, stats.fallback_pages), (1, 2));
    assert_eq!(e.conntrack().len(), 0, "the page keeps no state");
}

#[test]
fn a_small_mss_splits_the_answer() {
    let page = alloc::format!("<p>{}</p>", "down ".repeat(300));
    let mut e = engine_with_page(&page);
    e.set_server_health(0, 0, false);
    let isn = handshake(&mut e, 40001, 536);
    let mut f = seg(
        client(40001),
        vip(),
        CISN.wrapping_add(1),
        Some(isn.wrapping_add(1)),
        0x08,
        64240,
        SynOptions::default(),
        REQUEST,
    );
    assert_eq!(e.process(0, &mut f, t(1)), Decision::Consumed);
    let out = outbox(&mut e);
    assert!(out.iter().all(|o| o.payload.len() <= 536));
    let total: usize = out.iter().map(|o| o.payload.len()).sum();
    assert!(total > page.len());
    assert_eq!(out.len(), total.div_ceil(536));
    assert!(out[..out.len() - 1].iter().all(|o| !o.seg.flags.fin()));
    assert!(out[out.len() - 1].seg.flags.fin());
}

#[test]
fn forged_requests_are_not_answered() {
    let mut e = engine();
    e.set_server_health(0, 0, false);
    let isn = handshake(&mut e, 40002, 1460);
    for (seq, ack) in [
        (CISN.wrapping_add(1), isn.wrapping_add(2)),
        (CISN.wrapping_add(9), isn.wrapping_add(1)),
        (CISN.wrapping_add(1), isn ^ 0x10),
    ] {
        let mut f = seg(
            client(40002),
            vip(),
            seq,
            Some(ack),
            0x08,
            64240,
            SynOptions::default(),
            REQUEST,
        );
        assert_eq!(
            e.process(0, &mut f, t(1)),
            Decision::Drop(DropReason::NoFlow)
        );
        assert!(outbox(&mut e).is_empty());
    }
    // A different client port cannot use this handshake's cookie.
    let (d, answer, _) = request(&mut e, 40003, isn, 2);
    assert_eq!(d, Decision::Drop(DropReason::NoFlow));
    assert!(answer.is_empty());
    assert_eq!(e.service_stats(0).unwrap().fallback_pages, 0);
}

#[test]
fn a_server_back_up_takes_new_connections_again() {
    let mut e = engine();
    e.set_server_health(0, 0, false);
    handshake(&mut e, 40004, 1460);
    e.set_server_health(0, 0, true);
    let mut f = seg(
        client(40005),
        vip(),
        CISN,
        None,
        TcpFlags::SYN,
        64240,
        syn_opts(1460),
        &[],
    );
    assert!(matches!(
        e.process(0, &mut f, t(1)),
        Decision::Forward { .. }
    ));
    assert!(outbox(&mut e).is_empty());
}
