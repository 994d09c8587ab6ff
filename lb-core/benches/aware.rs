//! What protocol awareness costs the layer 7 relay, plain layer 7 against
//! a DICOM-aware service with AE title routes, on the same traffic.
//!
//! Run: `cargo bench -p lb-core --bench aware`
//!
//! * `association/<service>`: the setup of one association through the
//!   engine — client SYN, its ACK carrying storescu's A-ASSOCIATE-RQ (one
//!   1460-byte segment of it), the server's SYN-ACK, the release of the
//!   held request. Building the frames is inside the timing (the same for
//!   both services), so the difference is the cost of reading the request
//!   and routing by it.
//! * `segment/<service>`: one 1460-byte client segment of an established
//!   association relayed (a stream of 16 KiB P-DATA-TF PDUs, so the aware
//!   service follows PDU boundaries as it does in production).

use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant as WallClock};

use criterion::{Criterion, criterion_group, criterion_main};
use lb_core::config::Config;
use lb_core::engine::{Capacities, Engine};
use lb_core::flow::Endpoint;
use lb_core::frame::{Class, TcpFlags, classify};
use lb_core::splice::{Originate, Seg, SynOptions};
use lb_core::time::Instant;

const STORESCU: &[u8] = include_bytes!("../testdata/aware/rq_storescu.bin");
const VIP: [u8; 4] = [192, 0, 2, 14];

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
label = "PLAIN"
vip = "192.0.2.14"
ports = 104
forwarding = "layer7"
  [[virtual_service.real_server]]
  label = "A"
  ip = "10.1.0.41"
  [[virtual_service.real_server]]
  label = "B"
  ip = "10.1.0.42"

[[virtual_service]]
label = "AWARE"
vip = "192.0.2.14"
ports = 11112
forwarding = "layer7"
protocol_aware = "dicom"
[[virtual_service.ae_route]]
called_ae = "OTHER"
servers = ["B"]
[[virtual_service.ae_route]]
called_ae = "PACS_*"
servers = ["A", "B"]
  [[virtual_service.real_server]]
  label = "A"
  ip = "10.1.0.41"
  [[virtual_service.real_server]]
  label = "B"
  ip = "10.1.0.42"
"#;

const SERVICES: [(&str, u16); 2] = [("plain", 104), ("dicom", 11112)];

fn engine() -> Engine {
    let c: Config = toml::from_str(CONFIG).expect("bench config parses");
    lb_core::config::validate(&c).expect("bench config is valid");
    let mut caps = Capacities::from_config(&c);
    caps.l7_connections = 1 << 16;
    caps.l7_half_open = 1 << 16;
    Engine::new(&c, caps).expect("engine")
}

fn frame(
    src: Endpoint,
    dst: Endpoint,
    seq: u32,
    ack: Option<u32>,
    control: u8,
    p: &[u8],
) -> Vec<u8> {
    Originate {
        src,
        dst,
        seq,
        ack,
        control,
        window: 1000,
        syn: SynOptions {
            mss: Some(1460),
            ..SynOptions::default()
        },
        payload: p,
    }
    .frame()
}

fn seg(f: &[u8]) -> (Endpoint, Endpoint, Seg) {
    let Ok(Class::L4(p)) = classify(f) else {
        panic!("not a segment")
    };
    (p.key.src, p.key.dst, Seg::read(f, &p).unwrap())
}

/// One association set up; returns the server side's endpoints and ISNs
/// (server endpoint, appliance endpoint, our ISN to the client, the
/// server's ISN) for relaying more.
fn associate(
    e: &mut Engine,
    client: Endpoint,
    port: u16,
    now: Instant,
) -> (Endpoint, Endpoint, u32) {
    let vip = Endpoint::new(Ipv4Addr::from(VIP), port);
    let isn = 1000u32;
    e.process(
        0,
        &mut frame(client, vip, isn, None, TcpFlags::SYN, b""),
        now,
    );
    let synack = e.drain_outgoing().next().expect("SYN-ACK").frame;
    let a = seg(&synack).2.seq;
    let mut f = frame(client, vip, isn + 1, Some(a + 1), 0x08, &STORESCU[..1460]);
    e.process(0, &mut f, now);
    let syn = e.drain_outgoing().next().expect("SYN to a server").frame;
    let (local, server, s) = seg(&syn);
    let mut f = frame(server, local, 5000, Some(s.seq + 1), TcpFlags::SYN, b"");
    e.process(1, &mut f, now);
    black_box(e.drain_outgoing().count());
    (server, local, a)
}

fn time_associations(iters: u64, port: u16) -> Duration {
    const CHUNK: u64 = 20_000;
    let now = Instant::from_secs(1);
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(CHUNK);
        let mut e = engine();
        let start = WallClock::now();
        for i in 0..n as u32 {
            let client = Endpoint::new(
                Ipv4Addr::from(0xc612_0000 + (i >> 4)),
                10000 + (i & 15) as u16,
            );
            black_box(associate(&mut e, client, port, now));
        }
        total += start.elapsed();
        done += n;
    }
    total
}

fn association(c: &mut Criterion) {
    let mut g = c.benchmark_group("association");
    for (name, port) in SERVICES {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| time_associations(iters, port))
        });
    }
    g.finish();
}

/// Byte `x` of a stream of 16 KiB P-DATA-TF PDUs.
fn pdata_byte(x: u64) -> u8 {
    const PDU: u64 = 6 + 16384;
    match x % PDU {
        0 => 4,
        2..=5 => 16384u32.to_be_bytes()[(x % PDU - 2) as usize],
        _ => 0x5a,
    }
}

fn time_segments(iters: u64, port: u16) -> Duration {
    const CHUNK: u64 = 10_000;
    let now = Instant::from_secs(1);
    let mut e = engine();
    let client = Endpoint::new(Ipv4Addr::new(198, 18, 0, 1), 40000);
    let vip = Endpoint::new(Ipv4Addr::from(VIP), port);
    let (_, _, a) = associate(&mut e, client, port, now);
    // The request's rest, then the stream.
    let mut f = frame(
        client,
        vip,
        1001 + 1460,
        Some(a + 1),
        0x08,
        &STORESCU[1460..],
    );
    e.process(0, &mut f, now);
    let mut seq = 1001 + STORESCU.len() as u32;
    let mut at = 0u64;
    let mut total = Duration::ZERO;
    let mut done = 0;
    while done < iters {
        let n = (iters - done).min(CHUNK);
        let mut frames: Vec<Vec<u8>> = (0..n)
            .map(|_| {
                let p: Vec<u8> = (at..at + 1460).map(pdata_byte).collect();
                let f = frame(client, vip, seq, Some(a + 1), 0, &p);
                seq = seq.wrapping_add(1460);
                at += 1460;
                f
            })
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

fn segment(c: &mut Criterion) {
    let mut g = c.benchmark_group("segment");
    for (name, port) in SERVICES {
        g.bench_function(name, |b| b.iter_custom(|iters| time_segments(iters, port)));
    }
    g.finish();
}

criterion_group!(benches, association, segment);
criterion_main!(benches);
