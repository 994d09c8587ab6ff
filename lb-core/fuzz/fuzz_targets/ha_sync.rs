//! The clustered pair's parsers and state machines on hostile input: VRRP
//! advertisement frames (both checksum conventions) into the election, and
//! sync-link datagrams into a backup's engine — raw ones (which must die at
//! the MAC check) and ones sealed with the pair's key (so the hello,
//! record and config decoders and the engine's import are reached). Must
//! never panic, never grow a table past its capacity, and a master's
//! passes must always be accepted by a backup.
//!
//! Input: a sequence of operations, one control byte each and its operand
//! (the next `len` bytes, `len` the byte after the control byte):
//! * `c % 4 == 0`: a raw datagram;
//! * `c % 4 == 1`: a body sealed as kind `(c >> 2) % 3 + 1` with the next
//!   sequence number (bit 6 set: the same number again, a replay);
//! * `c % 4 == 2`: a frame for the VRRP parser and the router;
//! * `c % 4 == 3`: `(c >> 2)` × 10 ms pass, the backup polls, and a master
//!   engine with a few flows sends its journal and a pass to it.
#![no_main]

use std::net::Ipv4Addr;
use std::sync::OnceLock;

use lb_core::config::{Config, from_toml};
use lb_core::engine::{Capacities, Engine};
use lb_core::flow::Endpoint;
use lb_core::frame::build;
use lb_core::ha::wire::{Builder, Kind};
use lb_core::ha::{Local, SyncLink};
use lb_core::time::{Duration, Instant};
use lb_core::vrrp::{ChecksumMode, Router, Settings, wire};
use libfuzzer_sys::fuzz_target;

const KEY: [u8; 32] = [7; 32];
const PEER: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| from_toml(include_str!("../../testdata/l4.toml")).expect("fuzz config"))
}

fn engine() -> Engine {
    let c = config();
    let mut caps = Capacities::from_config(c);
    caps.conntrack = 64;
    caps.persistence = 64;
    // No layer 7 service here: its preallocated tables would make every
    // run allocate megabytes.
    caps.l7_connections = 1;
    caps.l7_half_open = 1;
    caps.l7_hold_bytes = 0;
    Engine::new(c, caps).expect("engine")
}

fuzz_target!(|data: &[u8]| {
    let mut backup = engine();
    let mut master = engine();
    master.set_journal(16);
    let mut link = SyncLink::new(KEY, PEER, 8694, Duration::from_secs(1), 2, Instant(0));
    let mut sender = SyncLink::new(KEY, Ipv4Addr::new(10, 9, 0, 2), 8694, Duration::from_secs(1), 9, Instant(0));
    let mut router = Router::new(Settings {
        vrid: 7,
        priority: 100,
        advert_interval_cs: 10,
        preempt: true,
        preempt_delay: Duration::from_secs(1),
        address: Ipv4Addr::new(192, 0, 2, 1),
    });
    router.start(Instant(0));
    let backup_local = Local { role: 1, priority: 100, master: false, serial: 1 };
    let master_local = Local { role: 2, priority: 150, master: true, serial: 2 };
    let mut now = 0u64;
    let mut seq = 0u32;
    let mut flows = 0u16;
    let mut rest = data;
    while let [c, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (operand, next) = tail.split_at(n);
        rest = next;
        match c % 4 {
            0 => {
                link.on_datagram(operand, &mut backup, &backup_local, Instant(now));
            }
            1 => {
                let kind = match (c >> 2) % 3 {
                    0 => Kind::Hello,
                    1 => Kind::Records,
                    _ => Kind::Config,
                };
                if c & 0x40 == 0 {
                    seq += 1;
                }
                let mut b = Builder::new(kind, 1, seq);
                b.push(operand);
                let d = b.seal(&KEY).to_vec();
                link.on_datagram(&d, &mut backup, &backup_local, Instant(now));
            }
            2 => {
                for mode in [ChecksumMode::Rfc, ChecksumMode::V2] {
                    if let Ok(a) = wire::parse_frame(operand, mode) {
                        router.on_advert(a.src, &a.repr, true, Instant(now));
                        // Whatever parsed encodes back to itself.
                        let to = wire::Addressing {
                            src_mac: a.src_mac,
                            dst_mac: wire::MULTICAST_MAC,
                            src: a.src,
                            dst: a.dst,
                        };
                        let mut f = vec![0u8; wire::frame_len(&a.repr)];
                        assert!(wire::emit_frame(&mut f, &to, &a.repr, mode));
                        assert_eq!(wire::parse_frame(&f, mode).map(|b| b.repr), Ok(a.repr));
                    }
                }
            }
            _ => {
                now += u64::from(c >> 2) * 10;
                router.poll(Instant(now));
                // A master with a new flow or two sends to the backup.
                for _ in 0..2 {
                    flows = flows.wrapping_add(1);
                    let client = Endpoint::new(Ipv4Addr::new(198, 51, 100, 7), 30000 + flows);
                    let vip = Endpoint::new(Ipv4Addr::new(192, 0, 2, 10), 104);
                    for flags in [0x02, 0x10] {
                        let mut f = build::tcp(client, vip, flags, b"");
                        master.process(0, &mut f, Instant(now));
                    }
                }
                let mut out: Vec<Vec<u8>> = Vec::new();
                sender.poll(&mut master, &master_local, Instant(now), &mut |d| {
                    out.push(d.to_vec());
                    true
                });
                let refused = link.stats.rejected;
                for d in out {
                    link.on_datagram(&d, &mut backup, &backup_local, Instant(now));
                }
                // The master's own datagrams are never refused as
                // malformed or forged (a replay of a number the fuzzer
                // used first is possible: the sender's boot differs, so
                // not even that).
                assert_eq!(link.stats.rejected, refused);
                link.poll(&mut backup, &backup_local, Instant(now), &mut |_| true);
            }
        }
        assert!(backup.conntrack().len() <= backup.conntrack().capacity());
        assert!(backup.persistence().len() <= backup.persistence().capacity());
    }
});
