//! The layer 7 relay under any sequence of segments from clients and real
//! servers, with time passing: never a panic, and once everything has
//! expired, every table entry, source port and connection count is back.
//!
//! Input: a sequence of 8-byte operations
//! `[who, flags, seq_sel, ack_sel, len, dt, x0, x1]`:
//! - `who` bit 0: from a client (0) or from the real server it was sent
//!   to (1); bits 1..2: which of four client ports; bit 3: hold the
//!   PROXY v2 service (VIP port 2576) instead of the plain one;
//! - `flags`: the TCP flags byte as sent;
//! - `seq_sel`, `ack_sel`: 0..=3 pick the sequence/acknowledgement number
//!   the peer would send next (learned from what the engine sent), that
//!   plus `x0`, minus `x0`, or `x0 x1` repeated as a raw number;
//! - `len`: payload bytes (mod 64 × 24);
//! - `dt`: time advanced, in units of 50 ms (and an expiry pass).
#![no_main]

use std::collections::HashMap;
use std::net::Ipv4Addr;

use lb_core::config::from_toml;
use lb_core::engine::{Capacities, Decision, Engine};
use lb_core::flow::Endpoint;
use lb_core::frame::{self, Class};
use lb_core::splice::{Originate, Seg, SynOptions};
use lb_core::time::Instant;
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"
[l7]
half_open = 2
hold_bytes = 8192
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
label = "L7"
vip = "192.0.2.14"
ports = 2575
forwarding = "layer7"
client_timeout = 30
server_timeout = 20
connect_timeout = 2
retries = 1
persistence_timeout = 60
  [[virtual_service.real_server]]
  label = "A"
  ip = "10.1.0.41"
  [[virtual_service.real_server]]
  label = "B"
  ip = "10.1.0.42"
  max_connections = 2
[[virtual_service]]
label = "P2"
vip = "192.0.2.14"
ports = 2576
forwarding = "layer7"
l7_transparent = true
  [[virtual_service.real_server]]
  label = "C"
  ip = "10.1.0.43"
  send_proxy = "v2"
"#;

const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 14);

/// What each side would send next, learned from the engine's output.
#[derive(Default, Clone, Copy)]
struct Peer {
    /// Server-side endpoints (server, local) once a SYN was seen.
    server: Option<(Endpoint, Endpoint)>,
    client_next: u32,
    client_ack: u32,
    server_next: u32,
    server_ack: u32,
}

fn learn(peers: &mut HashMap<u16, Peer>, frame: &[u8]) {
    let Ok(Class::L4(p)) = frame::classify(frame) else {
        return;
    };
    let Ok(s) = Seg::read(frame, &p) else {
        return;
    };
    if p.key.src.addr == VIP {
        let e = peers.entry(p.key.dst.port).or_default();
        e.client_ack = s.end();
        if s.flags.ack() {
            e.client_next = s.ack;
        }
    } else if p.key.dst.addr != CLIENT {
        // To a server: which client? The local port is ours or the client's;
        // use the most recent connection without a server, else match.
        let key = peers
            .iter()
            .find(|(_, v)| {
                v.server
                    .map(|(srv, loc)| srv == p.key.dst && loc == p.key.src)
                    == Some(true)
            })
            .map(|(k, _)| *k)
            .or_else(|| {
                peers
                    .iter()
                    .find(|(_, v)| v.server.is_none())
                    .map(|(k, _)| *k)
            });
        if let Some(k) = key {
            let e = peers.get_mut(&k).unwrap();
            e.server = Some((p.key.dst, p.key.src));
            e.server_ack = s.end();
            if s.flags.ack() {
                e.server_next = s.ack;
            }
        }
    }
}

fn pick(sel: u8, next: u32, x: u32) -> u32 {
    match sel % 4 {
        0 => next,
        1 => next.wrapping_add(x & 0xffff),
        2 => next.wrapping_sub(x & 0xffff),
        _ => x.wrapping_mul(0x0101_0101),
    }
}

fuzz_target!(|data: &[u8]| {
    let config = from_toml(CONFIG).expect("fuzz config");
    let mut caps = Capacities::from_config(&config);
    caps.conntrack = 16;
    caps.persistence = 16;
    caps.l7_connections = 6;
    caps.snat_ports = 5000..=5003;
    let mut e = Engine::new(&config, caps).expect("engine");
    let mut peers: HashMap<u16, Peer> = HashMap::new();
    let mut now = 1000u64;
    let payload = [b'x'; 64 * 24];
    for op in data.chunks_exact(8) {
        let [who, flags, seq_sel, ack_sel, len, dt, x0, x1] = op.try_into().unwrap();
        let x = u32::from(x0) | (u32::from(x1) << 8);
        let cport = 40000 + u16::from((who >> 1) & 3);
        let vport = if who & 8 != 0 { 2576 } else { 2575 };
        let p = peers.get(&cport).copied().unwrap_or_default();
        let body = &payload[..usize::from(len % 64) * 24];
        let syn = SynOptions {
            mss: Some(1460),
            wscale: (x0 & 1 != 0).then_some(x1 % 16),
            sack_permitted: x0 & 2 != 0,
            timestamps: false,
        };
        let (src, dst, seq, ack, nic) = if who & 1 == 0 {
            (
                Endpoint::new(CLIENT, cport),
                Endpoint::new(VIP, vport),
                pick(seq_sel, p.client_next, x),
                pick(ack_sel, p.client_ack, x),
                0,
            )
        } else {
            let Some((server, local)) = p.server else {
                continue;
            };
            (
                server,
                local,
                pick(seq_sel, p.server_next, x),
                pick(ack_sel, p.server_ack, x),
                1,
            )
        };
        let mut f = Originate {
            src,
            dst,
            seq,
            ack: Some(ack),
            control: 0,
            window: u16::from(x0) << 4,
            syn,
            payload: body,
        }
        .frame();
        // The flags as the fuzzer chose them (and the options of a SYN).
        let at = 14 + 20 + 13;
        f[at] = flags;
        let seg_start = 14 + 20;
        let c = {
            let ip = &f[14..];
            let mut sum = 0u32;
            let src = &ip[12..16];
            let dst = &ip[16..20];
            for w in [src, dst] {
                sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
                sum += u32::from(u16::from_be_bytes([w[2], w[3]]));
            }
            sum += 6 + (f.len() - seg_start) as u32;
            f[seg_start + 16] = 0;
            f[seg_start + 17] = 0;
            sum += u32::from(!lb_core::frame::checksum::compute(&f[seg_start..]));
            !lb_core::frame::checksum::fold(sum)
        };
        f[seg_start + 16..seg_start + 18].copy_from_slice(&c.to_be_bytes());
        let d = e.process(nic, &mut f, Instant(now));
        if let Decision::Forward { .. } = d {
            learn(&mut peers, &f);
        }
        if flags & 0x02 != 0 && who & 1 == 0 {
            peers.entry(cport).or_default().client_next = seq.wrapping_add(1);
        }
        now += u64::from(dt) * 50;
        if dt > 0 {
            e.expire(Instant(now), 64);
        }
        let out: Vec<_> = e.drain_outgoing().collect();
        for o in out {
            learn(&mut peers, &o.frame);
        }
    }
    // Everything expires, and everything comes back.
    for k in 1..=30u64 {
        e.expire(Instant(now + k * 600_000), 1 << 10);
        let _ = e.drain_outgoing().count();
    }
    assert_eq!(e.l7_connections().len(), 0);
    assert_eq!(e.l7_half_open(), 0);
    for svc in 0..2 {
        for srv in 0..2 {
            if let Some(s) = e.server_state(svc, srv) {
                assert_eq!(s.active, 0, "service {svc} server {srv}");
            }
            if let Some(p) = e.snat_ports(svc, srv) {
                assert_eq!(p.in_use(), 0);
            }
        }
    }
});
