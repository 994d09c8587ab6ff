//! Benchmarks of the engine's tables: connection-tracking lookups with 1 M
//! tracked flows, the cost of a new flow, persistence and scheduling, and
//! the memory per tracked flow and per persistence entry (printed first).
//!
//! Run: `cargo bench -p lb-core --bench tables`

use std::hint::black_box;
use std::net::Ipv4Addr;

use criterion::{Criterion, criterion_group, criterion_main};
use lb_core::conntrack::{ConnTable, Direction, Flow, TcpFlags, Timeouts};
use lb_core::flow::{Endpoint, FlowKey, Protocol};
use lb_core::persist::PersistTable;
use lb_core::schedule::{Mode, RealServerState, Scheduler, SchedulerKind};
use lb_core::time::{Duration, Instant};

const FLOWS: usize = 1 << 20;
const TWO_HOURS: Duration = Duration::from_secs(7200);
const HOUR: Duration = Duration::from_secs(3600);

/// The n-th distinct client flow to the DICOM VIP (n < 2^32).
fn key(n: u64) -> FlowKey {
    // 256 ephemeral ports per client, clients spread over 10.0.0.0/8:
    // distinct for every n < 2^32.
    let client = 0x0a00_0000u32 | ((n >> 8) as u32 & 0x00ff_ffff);
    let port = 32768 + (n & 0xff) as u16 * 64 + (n >> 32) as u16 % 64;
    FlowKey {
        proto: Protocol::Tcp,
        src: Endpoint::new(Ipv4Addr::from(client), port),
        dst: Endpoint::new(Ipv4Addr::new(10, 12, 1, 100), 104),
    }
}

fn nat_reply(k: FlowKey) -> FlowKey {
    FlowKey {
        proto: k.proto,
        src: Endpoint::new(Ipv4Addr::new(10, 12, 1, 150), k.dst.port),
        dst: k.src,
    }
}

/// A cheap deterministic sequence of indices (xorshift).
struct Rng(u64);
impl Rng {
    fn next(&mut self, bound: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % bound as u64) as usize
    }
}

fn filled_conntrack(capacity: usize, flows: usize) -> ConnTable {
    let mut t = ConnTable::new(capacity, Timeouts::default(), 0x5eed);
    let now = Instant(0);
    for n in 0..flows as u64 {
        let k = key(n);
        let id = t
            .insert(
                k,
                Some(nat_reply(k)),
                0,
                (n % 4) as u16,
                TWO_HOURS,
                now,
                &mut |_: &Flow| {},
            )
            .expect("capacity");
        t.touch(id, Direction::Original, Some(TcpFlags(TcpFlags::ACK)), now);
    }
    t
}

fn conntrack(c: &mut Criterion) {
    let t = filled_conntrack(FLOWS, FLOWS);
    let p = PersistTable::new(1 << 18, 1);
    println!(
        "memory: {} bytes per tracked flow (entry {} B + index + free list, capacity {}); {} bytes per persistence entry (capacity {})",
        t.bytes_per_flow(),
        std::mem::size_of::<Flow>(),
        t.capacity(),
        p.bytes_per_entry(),
        p.capacity()
    );
    let keys: Vec<FlowKey> = {
        let mut r = Rng(0x1234_5678);
        (0..4096).map(|_| key(r.next(FLOWS) as u64)).collect()
    };
    let replies: Vec<FlowKey> = keys.iter().map(|k| nat_reply(*k)).collect();
    let now = Instant(1);

    let mut g = c.benchmark_group("conntrack_1M");
    let mut i = 0;
    g.bench_function("get_original_hit", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(t.get(black_box(&keys[i]), now))
        })
    });
    g.bench_function("get_reply_hit", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(t.get(black_box(&replies[i]), now))
        })
    });
    let misses: Vec<FlowKey> = (0..4096u64).map(|n| key(n + FLOWS as u64 * 2)).collect();
    g.bench_function("get_miss", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            black_box(t.get(black_box(&misses[i]), now))
        })
    });
    let mut t = t;
    g.bench_function("get_and_touch", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            if let Some((id, dir)) = t.get(&keys[i], now) {
                black_box(t.touch(id, dir, Some(TcpFlags(TcpFlags::ACK)), now));
            }
        })
    });
    g.finish();
    drop(t);

    // A new flow at 1 M tracked (capacity 2 M so the table never fills):
    // insert both keys, then remove it again to keep the size steady.
    let mut t = filled_conntrack(2 * FLOWS, FLOWS);
    let mut g = c.benchmark_group("conntrack_new_flow_at_1M");
    let mut n = FLOWS as u64 * 3;
    g.bench_function("insert_nat_then_remove", |b| {
        b.iter(|| {
            n += 1;
            let k = key(n);
            let id = t
                .insert(
                    k,
                    Some(nat_reply(k)),
                    0,
                    1,
                    TWO_HOURS,
                    now,
                    &mut |_: &Flow| {},
                )
                .unwrap();
            t.remove(id, &mut |_: &Flow| {});
        })
    });
    g.bench_function("expire_sweep_64", |b| {
        b.iter(|| black_box(t.expire(now, 64, &mut |_: &Flow| {})))
    });
    g.finish();
}

fn persistence(c: &mut Criterion) {
    let cap = 1 << 18;
    let mut p = PersistTable::new(cap, 2);
    let all = Ipv4Addr::BROADCAST;
    let client = |n: usize| Ipv4Addr::from(0x0a00_0000u32 + n as u32 * 7);
    for n in 0..cap * 3 / 4 {
        p.insert(0, client(n), all, (n % 4) as u16, HOUR, Instant(0))
            .unwrap();
    }
    let mut g = c.benchmark_group("persistence_196k");
    let mut r = Rng(99);
    g.bench_function("lookup_hit", |b| {
        b.iter(|| black_box(p.lookup(0, client(r.next(cap * 3 / 4)), all, Instant(1))))
    });
    g.bench_function("touch", |b| {
        b.iter(|| black_box(p.touch(0, client(r.next(cap * 3 / 4)), all, HOUR, Instant(1))))
    });
    g.finish();
}

fn scheduling(c: &mut Criterion) {
    let mut servers: Vec<RealServerState> = (0..8)
        .map(|i| RealServerState::new(Ipv4Addr::new(10, 12, 1, 110 + i), 100 + u32::from(i)))
        .collect();
    for (i, s) in servers.iter_mut().enumerate() {
        s.active = 1000 + i as u32 * 3;
    }
    let mut g = c.benchmark_group("schedule_8_servers");
    for kind in [
        SchedulerKind::Wlc,
        SchedulerKind::Wrr,
        SchedulerKind::Rr,
        SchedulerKind::Lc,
        SchedulerKind::Sh,
    ] {
        let mut s = Scheduler::new(kind, Mode::LoadBalanced);
        let mut n = 0u32;
        g.bench_function(format!("{kind:?}").to_lowercase(), |b| {
            b.iter(|| {
                n = n.wrapping_add(0x9E37_79B9);
                black_box(s.pick(&servers, Ipv4Addr::from(n)))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, conntrack, persistence, scheduling);
criterion_main!(benches);
