//! The L4 data path: lb-core's engine as the NICs' frame hook, with the
//! ARP the engine leaves to its caller (answering for VIPs, resolving next
//! hops, gratuitous ARP) and the periodic expiry of flows.
//!
//! One [`Datapath`] value is shared (`&'static RefCell`) by the hook, the
//! housekeeping task, the health checker and the console. Everything runs
//! on one CPU in thread context and no borrow is held across an `await`, so
//! borrows never overlap; the hook uses `try_borrow_mut` anyway and passes
//! the frame to the stack rather than panic if that ever changed.

use crate::{Nics, println, time, unreachable};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::net::Ipv4Addr;
use core::sync::atomic::{AtomicU32, Ordering};
use embassy_net::EthernetAddress;
use embassy_time::Timer;
use lb_core::config::{Config, Interface};
use lb_core::engine::{Capacities, Decision, Engine};
use lb_core::frame::set_macs;
use lb_core::time::Instant;
use net::arp::{self, ArpCache, ArpView, Resolve};
use net::{FrameHook, Verdict};

/// Neighbour cache size: real servers, clients of NAT/SNAT flows, gateway.
const ARP_CAPACITY: usize = 1024;
/// Short frames are padded to the Ethernet minimum.
const MIN_FRAME: usize = 60;
/// Flow-table entries examined per housekeeping tick.
const EXPIRE_BUDGET: usize = 4096;
/// Housekeeping period.
const TICK_MS: u64 = 100;
/// Gratuitous ARPs per VIP when the config is applied, and their spacing.
const GARP_COUNT: usize = 3;
const GARP_SPACING_MS: u64 = 100;

/// NICs that have an IP stack (bit n = NIC n); the others are drained by
/// the idle loop.
static STACK_NICS: AtomicU32 = AtomicU32::new(1);

pub fn mark_stack(nic: usize) {
    if nic < 32 {
        STACK_NICS.fetch_or(1 << nic, Ordering::Relaxed);
    }
}

pub fn has_stack(nic: usize) -> bool {
    nic < 32 && STACK_NICS.load(Ordering::Relaxed) & (1 << nic) != 0
}

/// Milliseconds since kernel entry, the clock of lb-core.
pub fn now() -> Instant {
    Instant(time::now_us() / 1000)
}

/// Frames the data path itself lost, beyond the engine's drop reasons.
#[derive(Clone, Copy, Debug, Default)]
pub struct PathStats {
    /// ARP requests for a VIP answered by the hook.
    pub vip_arp_replies: u64,
    /// Frames (queued or own ARP) not sent: transmit queue full.
    pub tx_full: u64,
    /// Forward decisions to a NIC that does not exist.
    pub no_nic: u64,
    /// ICMP "network unreachable" sent for packets routed to us.
    pub unreachable_sent: u64,
}

/// The engine plus everything around it that needs the NICs.
pub struct Datapath {
    pub engine: Engine,
    /// Labels and addresses for the console and the health checker; an
    /// empty config when the blob was rejected.
    pub config: Config,
    pub arp: ArpCache,
    pub stats: PathStats,
    unreachable: unreachable::Limiter,
    nics: &'static Nics,
    macs: Vec<[u8; 6]>,
    /// Address and prefix of each NIC (as the engine routes).
    addrs: Vec<Option<(Ipv4Addr, u8)>>,
    /// Each VIP with the NIC whose subnet holds it (eth0 if none does).
    vips: Vec<(Ipv4Addr, usize)>,
}

/// Copies as much of `src` as fits (the NIC may hand out a shorter buffer
/// than asked for; a frame is never written past it).
fn copy_prefix(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    dst[..n].copy_from_slice(&src[..n]);
}

fn subnet_holds(net: (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(net.1.min(32)))
        .unwrap_or(0);
    u32::from(net.0) & mask == u32::from(ip) & mask
}

impl Datapath {
    /// A data path for `config` (or none) with the NICs' addresses.
    pub fn new(
        config: Option<Config>,
        nics: &'static Nics,
        addrs: Vec<Option<(Ipv4Addr, u8)>>,
        gateway: Option<Ipv4Addr>,
        seed: u64,
    ) -> Datapath {
        let mut config = config.unwrap_or_else(empty_config);
        // NIC n is interface n of the config for the engine: give NICs the
        // config does not list (e.g. after a rejected blob) an entry, so
        // the engine routes through every addressed NIC.
        let listed = config.network.interfaces.len();
        for (i, a) in addrs.iter().enumerate().skip(listed) {
            config.network.interfaces.push(Interface {
                name: alloc::format!("eth{i}"),
                dhcp: false,
                address: a.map(|a| a.0),
                prefix: a.map(|a| a.1),
                role: Default::default(),
            });
        }
        let mut caps = Capacities::from_config(&config);
        caps.hash_seed = seed;
        if config
            .virtual_services
            .iter()
            .all(|vs| vs.forwarding == lb_core::config::Forwarding::Layer7)
        {
            // No L4 service: nothing is ever tracked; keep the tables token-sized.
            caps.conntrack = 64;
            caps.persistence = 64;
        }
        limit_to_ram(&mut caps, crate::memory::heap_free());
        let mut engine = match Engine::new(&config, caps) {
            Ok(e) => e,
            Err(e) => {
                println!("error: config: {e:?}");
                println!("running with no virtual services");
                let mut caps = Capacities::from_config(&empty_config());
                limit_to_ram(&mut caps, crate::memory::heap_free());
                Engine::new(&empty_config(), caps)
                    .unwrap_or_else(|_| crate::fatal("cannot build an empty engine"))
            }
        };
        for (i, a) in addrs.iter().enumerate() {
            if a.is_some() {
                engine.set_interface_address(i, *a);
            }
        }
        engine.set_gateway(gateway);
        let macs = (0..nics.len()).map(|i| nics.with(i, |n| n.mac)).collect();
        let mut vips: Vec<(Ipv4Addr, usize)> = Vec::new();
        for vs in &config.virtual_services {
            if vips.iter().any(|(v, _)| *v == vs.vip) {
                continue;
            }
            let nic = addrs
                .iter()
                .position(|a| a.is_some_and(|a| subnet_holds(a, vs.vip)))
                .unwrap_or(0);
            vips.push((vs.vip, nic));
        }
        Datapath {
            engine,
            config,
            arp: ArpCache::new(ARP_CAPACITY),
            stats: PathStats::default(),
            unreachable: Default::default(),
            nics,
            macs,
            addrs,
            vips,
        }
    }

    fn is_own(&self, ip: Ipv4Addr) -> bool {
        self.addrs.iter().any(|a| a.is_some_and(|a| a.0 == ip))
    }

    fn on_our_subnet(&self, nic: usize, ip: Ipv4Addr) -> bool {
        self.addrs
            .get(nic)
            .copied()
            .flatten()
            .is_some_and(|a| subnet_holds(a, ip))
    }

    /// Sends a frame of `len` bytes written by `fill` on `nic`.
    fn send(&mut self, nic: usize, len: usize, fill: impl FnOnce(&mut [u8])) {
        if nic >= self.nics.len() || self.nics.transmit_with(nic, len, fill).is_err() {
            self.stats.tx_full += 1;
        }
    }

    fn send_request(&mut self, nic: usize, target: Ipv4Addr) {
        let Some(&mac) = self.macs.get(nic) else {
            return;
        };
        let ip = self
            .addrs
            .get(nic)
            .copied()
            .flatten()
            .map_or(Ipv4Addr::UNSPECIFIED, |a| a.0);
        self.send(nic, MIN_FRAME, |b| arp::request(b, mac, ip, target));
    }

    /// Sends one gratuitous ARP for every VIP.
    pub fn announce_vips(&mut self) {
        for (vip, nic) in self.vips.clone() {
            let Some(&mac) = self.macs.get(nic) else {
                continue;
            };
            self.send(nic, MIN_FRAME, |b| arp::gratuitous(b, mac, vip));
        }
    }

    /// Counters of NIC `i` (receive, transmit, hook verdicts, drops).
    pub fn nic_stats(&self, i: usize) -> Option<net::NicStats> {
        (i < self.nics.len()).then(|| self.nics.with(i, |n| n.stats))
    }

    pub fn vip_count(&self) -> usize {
        self.vips.len()
    }

    /// Sends frames that waited for `mac` out of `nic`.
    fn flush(&mut self, nic: usize, mac: [u8; 6], frames: Vec<Vec<u8>>) {
        let Some(&src) = self.macs.get(nic) else {
            return;
        };
        for mut f in frames {
            if set_macs(&mut f, EthernetAddress(mac), EthernetAddress(src)).is_err() {
                continue;
            }
            self.send(nic, f.len(), |b| copy_prefix(b, &f));
        }
    }

    fn on_arp(&mut self, nic: usize, frame: &mut [u8], a: &ArpView, now: Instant) -> Verdict {
        let asks_us = self.is_own(a.target_ip) || self.vips.iter().any(|v| v.0 == a.target_ip);
        let create = asks_us || self.on_our_subnet(nic, a.sender_ip);
        if let Some((out, frames)) = self.arp.learn(nic, a.sender_ip, a.sender_mac, now, create) {
            self.flush(out, a.sender_mac, frames);
        }
        let gratuitous = a.sender_ip == a.target_ip;
        if a.is_request()
            && !gratuitous
            && !self.is_own(a.target_ip)
            && self.vips.iter().any(|&(v, n)| v == a.target_ip && n == nic)
            && let Some(&mac) = self.macs.get(nic)
        {
            arp::reply_in_place(frame, a, mac, a.target_ip);
            self.stats.vip_arp_replies += 1;
            return Verdict::Transmit(nic);
        }
        Verdict::PassToStack
    }

    fn on_frame(&mut self, nic: usize, frame: &mut [u8], now: Instant) -> Verdict {
        if let Some(a) = ArpView::parse(frame) {
            return self.on_arp(nic, frame, &a, now);
        }
        match self.engine.process(nic, frame, now) {
            Decision::ToStack => self.for_stack(nic, frame, now),
            Decision::Drop(_) => Verdict::Consumed,
            Decision::Forward { nic: out, next_hop } => {
                let Some(&src) = self.macs.get(out) else {
                    self.stats.no_nic += 1;
                    return Verdict::Consumed;
                };
                match self.arp.resolve(out, next_hop, frame, now) {
                    Resolve::Known { mac, refresh } => {
                        if refresh {
                            self.send_request(out, next_hop);
                        }
                        match set_macs(frame, EthernetAddress(mac), EthernetAddress(src)) {
                            Ok(()) => Verdict::Transmit(out),
                            Err(_) => Verdict::Consumed,
                        }
                    }
                    Resolve::Pending { request, .. } => {
                        if request {
                            self.send_request(out, next_hop);
                        }
                        Verdict::Consumed
                    }
                }
            }
        }
    }

    /// A frame for the stack, unless it was routed to us for a destination
    /// we do not serve: then ICMP "network unreachable" (see [`unreachable`]).
    fn for_stack(&mut self, nic: usize, frame: &[u8], now: Instant) -> Verdict {
        let (Some(&mac), Some(Some((own, _)))) = (self.macs.get(nic), self.addrs.get(nic)) else {
            return Verdict::PassToStack;
        };
        let own = *own;
        let is_local = |ip: Ipv4Addr| self.is_own(ip) || self.vips.iter().any(|v| v.0 == ip);
        let Some(u) = unreachable::check(frame, mac, is_local) else {
            return Verdict::PassToStack;
        };
        if self.unreachable.allow(now) {
            let mut reply = lb_core::frame::build::icmp(own, u.to_ip, 3, 0, u.quote);
            let to = u.to_mac;
            if set_macs(&mut reply, EthernetAddress(to), EthernetAddress(mac)).is_ok() {
                self.send(nic, reply.len().max(MIN_FRAME), |b| {
                    b.fill(0);
                    copy_prefix(b, &reply);
                });
                self.stats.unreachable_sent += 1;
            }
        }
        Verdict::Consumed
    }

    /// Periodic work: idle flows leave the tables, unanswered ARP is retried.
    pub fn tick(&mut self, now: Instant) {
        self.engine.expire(now, EXPIRE_BUDGET);
        for (nic, ip) in self.arp.poll(now) {
            self.send_request(nic, ip);
        }
    }
}

/// Heap bytes a tracked flow costs at most (entry, free list, hash index
/// at up to 8 slots after rounding to a power of two).
const FLOW_BYTES: usize = 192;
/// Heap bytes a persistence entry costs at most.
const PERSIST_BYTES: usize = 48;

/// Shrinks the tables to a quarter (flows) and a sixteenth (persistence)
/// of the free heap: the config's defaults are sized for big appliances,
/// and receive buffers and sockets need the rest. Says so when it shrinks.
fn limit_to_ram(caps: &mut Capacities, free: usize) {
    let flows = (free / 4 / FLOW_BYTES).max(1024);
    let persist = (free / 16 / PERSIST_BYTES).max(1024);
    if caps.conntrack > flows || caps.persistence > persist {
        println!(
            "l4: tables limited by RAM: {} flows (config {}), {} persistence entries (config {})",
            caps.conntrack.min(flows),
            caps.conntrack,
            caps.persistence.min(persist),
            caps.persistence
        );
    }
    caps.conntrack = caps.conntrack.min(flows);
    caps.persistence = caps.persistence.min(persist);
}

fn empty_config() -> Config {
    Config::empty()
}

/// The frame hook the NICs call.
pub struct Hook(pub &'static RefCell<Datapath>);

impl FrameHook for Hook {
    fn on_frame(&mut self, nic: usize, frame: &mut [u8], now: Instant) -> Verdict {
        match self.0.try_borrow_mut() {
            Ok(mut dp) => dp.on_frame(nic, frame, now),
            Err(_) => Verdict::PassToStack,
        }
    }
}

/// Installs the data path as the NICs' hook and returns the shared handle.
pub fn install(dp: Datapath) -> &'static RefCell<Datapath> {
    let nics = dp.nics;
    let shared: &'static RefCell<Datapath> = Box::leak(Box::new(RefCell::new(dp)));
    nics.set_hook(Box::new(Hook(shared)));
    shared
}

/// Gratuitous ARP for the VIPs, then housekeeping every [`TICK_MS`].
#[embassy_executor::task]
pub async fn housekeeping_task(dp: &'static RefCell<Datapath>) {
    for _ in 0..GARP_COUNT {
        dp.borrow_mut().announce_vips();
        Timer::after_millis(GARP_SPACING_MS).await;
    }
    loop {
        dp.borrow_mut().tick(now());
        Timer::after_millis(TICK_MS).await;
    }
}
