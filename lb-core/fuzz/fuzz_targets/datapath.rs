//! The whole frame path: any sequence of frames on either NIC, ticks and
//! originated packets gives verdicts and well-formed frames out, never a
//! panic. Every frame the path sends (and every frame it forwards) is fed
//! back in on the other NIC, as a neighbour would answer.
//!
//! Input: a sequence of operations, each one control byte and its operands:
//! * `c % 4 == 0`: a raw frame on NIC `c >> 2 & 1` of `2 × next byte` bytes,
//!   with offload metadata chosen by `c >> 3` (none, a partial TCP checksum,
//!   a super-frame, or fields from the next bytes);
//! * `c % 4 == 1`: a valid frame (ARP for a VIP or our address, an ARP
//!   answer from a real server or the gateway, a SYN to the DR or NAT VIP,
//!   a segment of that flow, a server's reply, a ping to us, routed UDP, a
//!   real server's own SYN to a far host and that host's answer to the VIP
//!   (outbound SNAT), a datagram to the UDP VIP) chosen by `c >> 2`, XORed
//!   with the next `next byte` bytes;
//! * `c % 4 == 2`: a housekeeping tick, `(c >> 2) × 100 ms` later;
//! * `c % 4 == 3`: an originated packet to one of a few addresses, with the
//!   transmit queue full when bit 7 is set.
#![no_main]

use std::net::Ipv4Addr;

use lb_core::config::from_toml;
use lb_core::datapath::arp::Arp;
use lb_core::datapath::{Datapath, MIN_FRAME, Recorder, Setup, Verdict};
use lb_core::flow::Endpoint;
use lb_core::frame::offload::{Segmenter, complete_checksum};
use lb_core::frame::{Gso, L4Checksum, Offload, build};
use lb_core::time::Instant;
use libfuzzer_sys::fuzz_target;

/// Services 0 DR, 1 NAT (persistent, server port 11112; given
/// `outbound_snat` below), 2 SNAT (TCP 2575), 3 NAT UDP (514) without a
/// check, 4 layer 7.
const CONFIG: &str = include_str!("../../testdata/l4.toml");

const MACS: [[u8; 6]; 2] = [[2, 0, 0, 0, 0, 0xa0], [2, 0, 0, 0, 0, 0xa1]];
const PEER: [u8; 6] = [2, 0, 0, 0, 0, 0xc1];
const CLIENT: Endpoint = Endpoint::new(Ipv4Addr::new(192, 0, 2, 50), 40000);
const FAR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const DR_VIP: Endpoint = Endpoint::new(Ipv4Addr::new(192, 0, 2, 10), 104);
const NAT_VIP: Endpoint = Endpoint::new(Ipv4Addr::new(192, 0, 2, 11), 104);
const SNAT_VIP: Endpoint = Endpoint::new(Ipv4Addr::new(192, 0, 2, 12), 2575);
const UDP_VIP: Endpoint = Endpoint::new(Ipv4Addr::new(192, 0, 2, 13), 514);
const NAT_RS: Endpoint = Endpoint::new(Ipv4Addr::new(10, 1, 0, 11), 11112);

fn datapath() -> Datapath {
    // Parsed once: the TOML front end is not what is fuzzed here.
    static PARSED: std::sync::OnceLock<lb_core::config::Config> = std::sync::OnceLock::new();
    let config = PARSED.get_or_init(|| {
        let mut c = from_toml(CONFIG).expect("fuzz config");
        // The NAT service's real servers' own connections leave from its
        // VIP (C-MOVE back to a modality): the outbound path is fuzzed too.
        c.virtual_services[1].outbound_snat = true;
        lb_core::config::validate(&c).expect("fuzz config with outbound SNAT");
        c
    });
    Datapath::new(Setup {
        config: Some(config.clone()),
        macs: MACS.to_vec(),
        addrs: vec![
            Some((Ipv4Addr::new(192, 0, 2, 1), 24)),
            Some((Ipv4Addr::new(10, 1, 0, 1), 16)),
        ],
        gateway: Some(Ipv4Addr::new(192, 0, 2, 254)),
        hash_seed: 1,
        // The smallest tables (1024 entries): each run builds them afresh.
        memory: 0,
        now: Instant(0),
        boot_id: 1,
    })
}

fn arp(a: Arp) -> Vec<u8> {
    let mut f = vec![0u8; MIN_FRAME];
    a.emit(&mut f);
    f
}

/// (NIC, frame) of template `which`.
fn template(which: u8) -> (usize, Vec<u8>) {
    let ip = |a: [u8; 4]| Ipv4Addr::from(a);
    let (nic, mut f) = match which % 14 {
        0 => (0, arp(Arp::request(PEER, CLIENT.addr, DR_VIP.addr))),
        1 => (0, arp(Arp::request(PEER, CLIENT.addr, ip([192, 0, 2, 1])))),
        2 => (
            0,
            arp(Arp::request(PEER, ip([192, 0, 2, 21]), ip([192, 0, 2, 1]))
                .reply(PEER, ip([192, 0, 2, 21]))),
        ),
        3 => (1, arp(Arp::request(PEER, NAT_RS.addr, ip([10, 1, 0, 1])))),
        4 => (0, arp(Arp::gratuitous(PEER, ip([192, 0, 2, 254])))),
        5 => (0, build::tcp(CLIENT, DR_VIP, 0x02, b"")),
        6 => (0, build::tcp(CLIENT, NAT_VIP, 0x02, b"")),
        7 => (0, build::tcp(CLIENT, NAT_VIP, 0x18, b"P-DATA-TF")),
        8 => (1, build::tcp(NAT_RS, CLIENT, 0x12, b"")),
        9 => (
            0,
            build::icmp(CLIENT.addr, ip([192, 0, 2, 1]), 8, 0, &[0, 1, 0, 1]),
        ),
        10 => (
            1,
            build::udp(
                Endpoint::new(NAT_RS.addr, 5353),
                Endpoint::new(FAR, 53),
                b"q",
            ),
        ),
        // A real server's own association to a far modality (outbound
        // SNAT), and that modality's answer to the VIP's first SNAT port.
        11 => (
            1,
            build::tcp(
                Endpoint::new(NAT_RS.addr, 40001),
                Endpoint::new(FAR, 104),
                0x02,
                b"",
            ),
        ),
        12 => (
            0,
            build::tcp(
                Endpoint::new(FAR, 104),
                Endpoint::new(NAT_VIP.addr, 1024),
                0x12,
                b"",
            ),
        ),
        _ => (0, build::udp(CLIENT, UDP_VIP, b"<14>msg")),
    };
    f[..6].copy_from_slice(&MACS[nic]);
    f[6..12].copy_from_slice(&PEER);
    (nic, f)
}

/// Frames out must be whole Ethernet frames from one of our MACs.
fn check_sent(tx: &Recorder) {
    for (nic, f) in &tx.frames {
        assert!(*nic < MACS.len(), "sent on NIC {nic}");
        assert!(f.len() >= MIN_FRAME, "runt of {} bytes", f.len());
        assert!(
            MACS.iter().any(|m| f[6..12] == *m),
            "source MAC {:?}",
            &f[6..12]
        );
    }
}

fn deliver(
    dp: &mut Datapath,
    tx: &mut Recorder,
    nic: usize,
    frame: &mut [u8],
    offload: &Offload,
    now: Instant,
) -> Verdict {
    let v = dp.on_frame_offloaded(nic, frame, offload, now, tx);
    if let Verdict::Transmit(out) = v {
        assert!(out < MACS.len(), "forwarded to NIC {out}");
        assert!(
            MACS.iter().any(|m| frame[6..12] == *m),
            "forwarded frame's source MAC"
        );
        // What is forwarded with offload metadata must be finishable by a
        // NIC (or by the software fallback).
        if let Some(gso) = offload.gso {
            assert!(
                Segmenter::new(frame, gso).is_ok(),
                "unsegmentable super-frame forwarded"
            );
        }
        if let L4Checksum::Partial { start, offset } = offload.checksum {
            let mut copy = frame.to_vec();
            assert!(
                complete_checksum(&mut copy, start, offset).is_ok(),
                "bad partial checksum forwarded"
            );
        }
    }
    v
}

/// Offload metadata number `which`, fields from `a` and `b`.
fn offload(which: u8, a: u8, b: u8) -> Offload {
    let tcp = L4Checksum::Partial {
        start: 34,
        offset: 16,
    };
    match which % 5 {
        0 => Offload::NONE,
        1 => Offload {
            checksum: tcp,
            gso: None,
        },
        2 => Offload {
            checksum: tcp,
            gso: Some(Gso {
                mss: u16::from(a) * 8,
            }),
        },
        3 => Offload {
            checksum: L4Checksum::Partial {
                start: u16::from(a),
                offset: u16::from(b),
            },
            gso: None,
        },
        _ => Offload {
            checksum: L4Checksum::Partial {
                start: u16::from(a),
                offset: 6,
            },
            gso: Some(Gso { mss: u16::from(b) }),
        },
    }
}

fuzz_target!(|data: &[u8]| {
    let mut dp = datapath();
    let mut tx = Recorder::default();
    let mut now = Instant(1000);
    let mut i = 0;
    let mut echoes = 0;
    while i < data.len() {
        let c = data[i];
        i += 1;
        let arg = |i: &mut usize| {
            let v = data.get(*i).copied().unwrap_or(0);
            *i += 1;
            v
        };
        match c % 4 {
            0 => {
                let len = usize::from(arg(&mut i)) * 2;
                let start = i.min(data.len());
                let end = (start + len).min(data.len());
                let mut f = data[start..end].to_vec();
                i = end;
                let nic = usize::from(c >> 2 & 1);
                let o = offload(c >> 3, arg(&mut i), arg(&mut i));
                let v = deliver(&mut dp, &mut tx, nic, &mut f, &o, now);
                if let (Verdict::Transmit(out), true) = (v, echoes < 64) {
                    echoes += 1;
                    deliver(&mut dp, &mut tx, out ^ 1, &mut f, &o, now);
                }
            }
            1 => {
                let (nic, mut f) = template(c >> 2);
                let n = usize::from(arg(&mut i));
                for k in 0..n {
                    let b = arg(&mut i);
                    let len = f.len();
                    f[k % len] ^= b;
                }
                deliver(&mut dp, &mut tx, nic, &mut f, &Offload::NONE, now);
            }
            2 => {
                now = Instant(now.0 + u64::from(c >> 2) * 100);
                dp.tick(now, &mut tx);
            }
            _ => {
                let dst = [CLIENT.addr, FAR, NAT_RS.addr, Ipv4Addr::new(10, 9, 9, 9)]
                    [usize::from(c >> 2 & 3)];
                tx.refuse = c & 0x80 != 0;
                let seg = build::tcp(SNAT_VIP, Endpoint::new(dst, 40000), 0x14, b"");
                dp.send_ipv4(&mut tx, dst, seg.len() - 14, now, |b| {
                    b.copy_from_slice(&seg[14..])
                });
                tx.refuse = false;
            }
        }
        check_sent(&tx);
        // What went out comes back on the other NIC, a few times.
        let out: Vec<_> = tx.frames.drain(..).collect();
        for (nic, mut f) in out.into_iter().take(4) {
            if echoes < 64 {
                echoes += 1;
                deliver(&mut dp, &mut tx, nic ^ 1, &mut f, &Offload::NONE, now);
            }
        }
        tx.frames.clear();
    }
    while dp.log.pop().is_some() {}
});
