//! Frame path cost: classify + rewrite per frame, per forwarding method.
//!
//! Run: `cargo bench -p lb-core --bench frames`
//!
//! * `existing/<method>`: one frame of a flow already in the connection
//!   table (the steady state of a DICOM association). NAT and SNAT rewrite
//!   in place, so each iteration first copies the original frame back
//!   (`copy_only` measures that copy alone).
//! * `existing_100k/nat`: the same with 100 000 tracked flows, frames taken
//!   in a scattered order (table lookups miss the CPU cache as in real
//!   traffic).
//! * `new_flow/<method>`: the SYN that creates a flow: scheduling,
//!   persistence, SNAT port, connection-table insert, rewrite.
//! * `classify_only`: parsing alone.

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant as WallClock};

use criterion::{Criterion, criterion_group, criterion_main};
use lb_core::config::Config;
use lb_core::engine::{Capacities, Decision, Engine};
use lb_core::flow::Endpoint;
use lb_core::frame::{self, build};
use lb_core::time::Instant;

const CONFIG: &str = r#"
[network]
gateway = "192.0.2.254"
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
label = "DR"
vip = "192.0.2.10"
ports = 104
forwarding = "dr"
persistence_timeout = 3600
  [[virtual_service.real_server]]
  label = "A"
  ip = "192.0.2.21"
  [[virtual_service.real_server]]
  label = "B"
  ip = "192.0.2.22"

[[virtual_service]]
label = "NAT"
vip = "192.0.2.11"
ports = 104
forwarding = "nat"
persistence_timeout = 3600
  [[virtual_service.real_server]]
  label = "A"
  ip = "10.1.0.11"
  [[virtual_service.real_server]]
  label = "B"
  ip = "10.1.0.12"

[[virtual_service]]
label = "SNAT"
vip = "192.0.2.12"
ports = 104
forwarding = "snat"
persistence_timeout = 3600
  [[virtual_service.real_server]]
  label = "A"
  ip = "10.1.0.21"
  [[virtual_service.real_server]]
  label = "B"
  ip = "10.1.0.22"
"#;

const VIPS: [Ipv4Addr; 3] = [
    Ipv4Addr::new(192, 0, 2, 10),
    Ipv4Addr::new(192, 0, 2, 11),
    Ipv4Addr::new(192, 0, 2, 12),
];
const METHODS: [&str; 3] = ["dr", "nat", "snat"];
const SYN: u8 = 0x02;
const PSH_ACK: u8 = 0x18;
/// A typical DICOM P-DATA segment is large; the rewrite cost does not
/// depend on it (incremental checksums), so a small payload is used.
const PAYLOAD: &[u8] = &[0x04; 64];

fn config() -> Config {
    let c: Config = toml::from_str(CONFIG).expect("bench config parses");
    lb_core::config::validate(&c).expect("bench config is valid");
    c
}

fn engine(conntrack: usize) -> Engine {
    let c = config();
    let mut caps = Capacities::from_config(&c);
    caps.conntrack = conntrack;
    caps.persistence = conntrack;
    Engine::new(&c, caps).expect("engine")
}

fn client(i: u32) -> Endpoint {
    // 198.18.0.0/15 (benchmarking range), 16 ports per address.
    let addr = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + (i >> 4));
    Endpoint::new(addr, 10000 + (i & 0xf) as u16)
}

fn existing(c: &mut Criterion) {
    let mut g = c.benchmark_group("existing");
    for (m, (&vip, name)) in VIPS.iter().zip(METHODS).enumerate() {
        let mut e = engine(1 << 16);
        let now = Instant::from_secs(1);
        let mut syn = build::tcp(client(1), Endpoint::new(vip, 104), SYN, b"");
        assert!(matches!(
            e.process(0, &mut syn, now),
            Decision::Forward { .. }
        ));
        let template = build::tcp(client(1), Endpoint::new(vip, 104), PSH_ACK, PAYLOAD);
        let mut buf = template.clone();
        assert!(
            matches!(e.process(0, &mut buf, now), Decision::Forward { .. }),
            "{name}"
        );
        g.bench_function(name, |b| {
            b.iter(|| {
                if m != 0 {
                    buf.copy_from_slice(&template);
                }
                black_box(e.process(0, black_box(&mut buf), now))
            })
        });
    }
    let template = build::tcp(client(1), Endpoint::new(VIPS[1], 104), PSH_ACK, PAYLOAD);
    let mut buf = template.clone();
    g.bench_function("copy_only", |b| {
        b.iter(|| {
            buf.copy_from_slice(black_box(&template));
            black_box(&mut buf);
        })
    });
    g.bench_function("classify_only", |b| {
        b.iter(|| black_box(frame::classify(black_box(&template))))
    });
    g.finish();
}

fn existing_many(c: &mut Criterion) {
    const FLOWS: u32 = 100_000;
    let mut g = c.benchmark_group("existing_100k");
    let mut e = engine(1 << 18);
    let now = Instant::from_secs(1);
    let vip = Endpoint::new(VIPS[1], 104);
    for i in 0..FLOWS {
        let mut syn = build::tcp(client(i), vip, SYN, b"");
        assert!(matches!(
            e.process(0, &mut syn, now),
            Decision::Forward { .. }
        ));
    }
    // Frames of 4096 flows spread over the table, visited in turn.
    let frames: Vec<Vec<u8>> = (0..4096u32)
        .map(|i| {
            build::tcp(
                client(i.wrapping_mul(2_654_435_761) % FLOWS),
                vip,
                PSH_ACK,
                PAYLOAD,
            )
        })
        .collect();
    let mut buf = frames[0].clone();
    let mut k = 0;
    g.bench_function("nat", |b| {
        b.iter(|| {
            buf.copy_from_slice(&frames[k & 4095]);
            k += 1;
            black_box(e.process(0, black_box(&mut buf), now))
        })
    });
    g.finish();
}

/// Times `iters` new flows, on fresh engines of at most 50 000 flows each
/// (so that neither the table nor the SNAT port ranges fill up); building
/// the engines and frames is not timed.
fn time_new_flows(iters: u64, vip: Ipv4Addr) -> Duration {
    const CHUNK: u64 = 50_000;
    let now = Instant::from_secs(1);
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(CHUNK);
        let mut e = engine(1 << 17);
        let mut frames: Vec<Vec<u8>> = (0..n as u32)
            .map(|i| build::tcp(client(i), Endpoint::new(vip, 104), SYN, b""))
            .collect();
        let start = WallClock::now();
        for f in &mut frames {
            black_box(e.process(0, black_box(f), now));
        }
        total += start.elapsed();
        done += n;
    }
    total
}

fn new_flow(c: &mut Criterion) {
    let mut g = c.benchmark_group("new_flow");
    for (&vip, name) in VIPS.iter().zip(METHODS) {
        g.bench_function(name, |b| b.iter_custom(|iters| time_new_flows(iters, vip)));
    }
    g.finish();
}

criterion_group!(benches, existing, existing_many, new_flow);
criterion_main!(benches);
