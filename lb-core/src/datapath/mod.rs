//! The frame path of the appliance: every received frame in, a verdict and
//! the frames to send out.
//!
//! [`Datapath`] puts the L4 [`Engine`] together with what the engine leaves
//! to its caller: ARP (answering for VIPs, resolving next hops, gratuitous
//! ARP; see [`arp`]), ICMP "network unreachable" for traffic routed to the
//! appliance that it does not serve ([`unreachable`]), rate limits on what
//! floods the IP stack unasked ([`guard`]), the interfaces'
//! addresses, the periodic expiry of flows, and the health board that
//! drives the engine's view of the real servers. It does no I/O: frames
//! leave through a [`Transmit`] the caller supplies (the kernel's NICs, a
//! recorder in tests and fuzzing), and console lines go to [`Datapath::log`].
//!
//! # Contract with the caller
//! * [`Datapath::on_frame`] for every received frame; the [`Verdict`] says
//!   whether the (possibly rewritten) frame goes to the IP stack of its NIC,
//!   out of a NIC, or nowhere. Frames the path originates while doing so
//!   (ARP requests, queued frames released by an ARP answer, ICMP errors)
//!   go through the [`Transmit`] at once.
//! * [`Datapath::tick`] every [`TICK_MS`]; [`Datapath::announce_vips`] a
//!   few times when the configuration is applied.
//! * [`Datapath::send_ipv4`] for IPv4 packets the appliance originates
//!   outside the IP stack (e.g. the Layer 7 splice's SYN-ACKs and RSTs):
//!   routed, given MACs from the ARP cache, or queued until ARP answers.
//! * Health checks: take due checks with [`Datapath::next_check`], report
//!   verdicts with [`Datapath::check_done`].

pub mod arp;
pub mod guard;
mod pair;
#[cfg(test)]
mod pair_tests;
#[cfg(test)]
mod tests;
pub mod unreachable;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::wire::EthernetAddress;

use crate::config::{AdminState, Config, Forwarding, Interface};
use crate::engine::{ApplyReport, Capacities, Decision, Engine, EngineError};
use crate::frame::{ETHERNET_HEADER_LEN, L4Checksum, Offload, offload, set_macs};
use crate::health::board::{Board, Change, Job};
use crate::health::{AgentReply, Verdict as CheckVerdict};
use crate::log::Log;
use crate::mgmt::allow::{self, AllowList};
use crate::mgmt::events::{Category, Outbox, Severity};
use crate::time::{Duration, Instant};
use arp::{Arp, ArpCache, NextHops, Resolve};

/// Neighbour cache size: real servers, clients of NAT/SNAT flows, gateway.
pub const ARP_CAPACITY: usize = 1024;
/// Short frames are padded to the Ethernet minimum (without FCS).
pub const MIN_FRAME: usize = 60;
/// Flow-table entries examined per housekeeping tick: frames wait while a
/// tick runs, so ticks are short and frequent (51 200 entries a second;
/// a 1 M-flow table is swept in 20 s, long before any L4 timeout matters).
pub const EXPIRE_BUDGET: usize = 512;
/// Housekeeping period the caller should keep.
pub const TICK_MS: u64 = 10;
/// Heap bytes a tracked flow costs at most (entry, free list, hash index
/// at up to 8 slots after rounding to a power of two).
const FLOW_BYTES: usize = 192;
/// Heap bytes a persistence entry costs at most.
const PERSIST_BYTES: usize = 48;
/// Heap bytes a layer 7 connection costs at most (entry with the splice
/// state, free list, index; 196 measured), early data aside.
const L7_BYTES: usize = 256;
/// Table size for a configuration without L4 services (nothing is tracked).
const TOKEN_TABLE: usize = 64;
/// Smallest tables the memory limit leaves.
const MIN_TABLE: usize = 1024;

/// What happens to a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand the (possibly modified) frame to the IP stack of its NIC.
    PassToStack,
    /// The frame path dealt with it; drop the buffer.
    Consumed,
    /// Send the (rewritten) frame out of NIC `n` (may be the one it came from).
    Transmit(usize),
}

/// Where the frame path's own frames go.
///
/// The caller's NICs in the kernel; a [`Recorder`] in tests and fuzzing.
/// Forwarded frames do not pass here: they are rewritten in place and leave
/// by [`Verdict::Transmit`], so the NIC can send the receive buffer itself.
pub trait Transmit {
    /// Sends an Ethernet frame of `len` bytes on NIC `nic`; `fill` writes
    /// all of it into the transmit buffer. Returns false, without calling
    /// `fill`, when the frame cannot be sent (no such NIC, no free buffer,
    /// longer than the NIC takes).
    fn send<F: FnOnce(&mut [u8])>(&mut self, nic: usize, len: usize, fill: F) -> bool;
}

/// A [`Transmit`] that keeps every frame (tests, fuzzing, benchmarks).
#[derive(Debug, Default)]
pub struct Recorder {
    /// (NIC, frame) in the order sent.
    pub frames: Vec<(usize, Vec<u8>)>,
    /// When set, every send is refused (a full transmit queue).
    pub refuse: bool,
}

impl Transmit for Recorder {
    fn send<F: FnOnce(&mut [u8])>(&mut self, nic: usize, len: usize, fill: F) -> bool {
        if self.refuse {
            return false;
        }
        let mut frame = alloc::vec![0xEEu8; len];
        fill(&mut frame);
        self.frames.push((nic, frame));
        true
    }
}

/// Frames the frame path itself sent or lost, beyond the engine's drop
/// reasons.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PathStats {
    /// ARP requests for a VIP answered.
    pub vip_arp_replies: u64,
    /// Frames (queued, originated or own ARP) not sent: transmit refused.
    pub tx_full: u64,
    /// Forward decisions to a NIC that does not exist.
    pub no_nic: u64,
    /// ICMP "network unreachable" sent for packets routed to us.
    pub unreachable_sent: u64,
    /// IPv4 packets originated through [`Datapath::send_ipv4`] and sent or
    /// queued for ARP.
    pub originated: u64,
    /// Originated packets with no route to their destination.
    pub originate_no_route: u64,
    /// UDP datagrams to our own addresses dropped over the stack's rate.
    pub stack_udp_limited: u64,
    /// ICMP echo requests to our own addresses dropped over the rate.
    pub stack_echo_limited: u64,
    /// Frames to a management port from a source outside
    /// `management.allow`, dropped before the stack.
    pub management_refused: u64,
    /// ARP frames from another machine claiming one of our addresses or VIPs.
    pub arp_conflicts: u64,
    /// Pings to VIPs and floating addresses answered.
    pub owned_echo_replies: u64,
    /// TCP super-frames dropped because their next hop was unresolved (the
    /// ARP queue keeps whole frames only; TCP sends the data again).
    pub super_frames_unqueued: u64,
}

/// Shortest time between two reports of the same trouble (ARP conflicts,
/// full tables) to the event log; counters count every occurrence.
pub const REPORT_EVERY: crate::time::Duration = crate::time::Duration::from_secs(60);

/// Where an originated packet went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Handed to the NIC.
    Sent,
    /// Waiting for the next hop's ARP answer.
    Queued,
    /// Not sent (counted): no route, transmit queue full, ARP queue full.
    Dropped,
}

/// How often the frame path asks ARP for a health-check target (below the
/// IP stack's 60 s neighbour lifetime, so the stack's entry never lapses).
pub const ARP_WARM_INTERVAL: Duration = Duration::from_secs(45);

/// A health check to run now, and the NIC whose stack reaches the server.
#[derive(Clone, Debug)]
pub struct CheckJob {
    pub job: Job,
    pub nic: usize,
}

/// What the frame path is built from.
#[derive(Clone, Debug)]
pub struct Setup {
    /// The configuration; `None` when the boot blob was rejected.
    pub config: Option<Config>,
    /// MAC address of each NIC (NIC n is interface n of the config).
    pub macs: Vec<[u8; 6]>,
    /// Address and prefix of each NIC, as the stacks have them.
    pub addrs: Vec<Option<(Ipv4Addr, u8)>>,
    pub gateway: Option<Ipv4Addr>,
    /// Key of the table hashes (a boot-time random value).
    pub hash_seed: u64,
    /// Heap bytes free for the tables: they are limited to a share of it.
    pub memory: usize,
    /// When the first health checks are scheduled from.
    pub now: Instant,
    /// A random number of this boot (names this appliance's messages on
    /// the pair's sync link).
    pub boot_id: u64,
}

/// The frame path: engine, ARP, addresses, health board.
pub struct Datapath {
    pub engine: Engine,
    /// Labels and addresses for the console; an empty config when the
    /// blob was rejected.
    pub config: Config,
    pub arp: ArpCache,
    /// MACs of next hops in use, in front of `arp` for forwarded frames.
    pub next_hops: NextHops,
    pub stats: PathStats,
    /// Console lines for the caller to print.
    pub log: Log,
    /// Events for the caller's event log (health changes, ARP conflicts,
    /// full tables).
    pub events: Outbox,
    /// When an ARP conflict and a full table were last reported, and the
    /// refusal counts then (reports are at most one per [`REPORT_EVERY`]).
    conflict_reported: Option<Instant>,
    full_reported: (Option<Instant>, u64, u64),
    board: Board,
    /// Who may reach the management ports.
    allow: AllowList,
    /// Health-check targets on a local subnet and when the frame path last
    /// asked ARP for them (see [`Datapath::next_check`]), and the requests
    /// waiting for the next tick.
    arp_warm: Vec<(Ipv4Addr, Instant)>,
    warm_due: Vec<(usize, Ipv4Addr)>,
    unreachable: unreachable::Limiter,
    guard: guard::StackGuard,
    macs: Vec<[u8; 6]>,
    /// Address and prefix of each NIC.
    addrs: Vec<Option<(Ipv4Addr, u8)>>,
    /// Each VIP with the NIC whose subnet holds it (eth0 if none does).
    vips: Vec<(Ipv4Addr, usize)>,
    /// The clustered pair, with `[ha]` (see [`crate::ha`]).
    pub pair: Option<crate::ha::Pair>,
    /// A config the sync link brought (serial, envelope).
    synced_config: Option<(u64, Vec<u8>)>,
}

/// Passes a health board change on to the engine and the log.
fn apply(engine: &mut Engine, events: &mut Outbox, change: Change) {
    let (si, ri) = (change.service, change.server);
    if let Some(up) = change.up {
        engine.set_server_health(si, ri, up);
    }
    if let Some(w) = change.weight {
        engine.set_server_weight(si, ri, w);
    }
    if let Some(a) = change.admin {
        engine.set_server_admin(si, ri, a);
    }
    for (warning, text) in change.lines {
        let severity = if warning {
            Severity::Warning
        } else {
            Severity::Notice
        };
        events.push(severity, Category::Health, text);
    }
}

/// Makes a forwarded frame fit to wait in the ARP queue, which keeps
/// bytes without offload metadata: a partial checksum is completed in
/// place. False for a TCP super-frame (too big to queue whole).
fn whole_for_queue(frame: &mut [u8], offload: &Offload) -> bool {
    if offload.gso.is_some() {
        return false;
    }
    match offload.checksum {
        L4Checksum::Complete => true,
        L4Checksum::Partial { start, offset } => {
            offload::complete_checksum(frame, start, offset).is_ok()
        }
    }
}

fn subnet_holds(net: (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(net.1.min(32)))
        .unwrap_or(0);
    u32::from(net.0) & mask == u32::from(ip) & mask
}

fn empty_config() -> Config {
    Config::empty()
}

/// Shrinks the tables to a quarter (flows) and a sixteenth (persistence)
/// of `free` heap bytes: the config's defaults are sized for big
/// appliances, and receive buffers and sockets need the rest. Returns the
/// console line when it shrinks them.
pub fn limit_to_memory(caps: &mut Capacities, free: usize) -> Option<String> {
    let flows = (free / 4 / FLOW_BYTES).max(MIN_TABLE);
    let persist = (free / 16 / PERSIST_BYTES).max(MIN_TABLE);
    let line = (caps.conntrack > flows || caps.persistence > persist).then(|| {
        format!(
            "l4: tables limited by RAM: {} flows (config {}), {} persistence entries (config {})",
            caps.conntrack.min(flows),
            caps.conntrack,
            caps.persistence.min(persist),
            caps.persistence
        )
    });
    caps.conntrack = caps.conntrack.min(flows);
    caps.persistence = caps.persistence.min(persist);
    let l7 = (free / 4 / L7_BYTES).max(MIN_TABLE);
    let hold = (free / 32).max(64 * 1024);
    let l7_line = (caps.l7_connections > l7 || caps.l7_hold_bytes > hold).then(|| {
        format!(
            "l7: limited by RAM: {} connections (config {}), {} bytes of early data (config {})",
            caps.l7_connections.min(l7),
            caps.l7_connections,
            caps.l7_hold_bytes.min(hold),
            caps.l7_hold_bytes
        )
    });
    caps.l7_connections = caps.l7_connections.min(l7);
    caps.l7_hold_bytes = caps.l7_hold_bytes.min(hold);
    match (line, l7_line) {
        (Some(a), Some(b)) => Some(format!("{a}; {b}")),
        (a, b) => a.or(b),
    }
}

impl Datapath {
    pub fn new(setup: Setup) -> Datapath {
        let mut log = Log::default();
        let mut config = setup.config.unwrap_or_else(empty_config);
        // NIC n is interface n of the config for the engine: give NICs the
        // config does not list (e.g. after a rejected blob) an entry, so
        // the engine routes through every addressed NIC.
        let listed = config.network.interfaces.len();
        for (i, a) in setup.addrs.iter().enumerate().skip(listed) {
            config.network.interfaces.push(Interface {
                name: format!("eth{i}"),
                dhcp: false,
                address: a.map(|a| a.0),
                prefix: a.map(|a| a.1),
                role: Default::default(),
            });
        }
        let mut caps = Capacities::from_config(&config);
        caps.hash_seed = setup.hash_seed;
        if config
            .virtual_services
            .iter()
            .all(|vs| vs.forwarding == Forwarding::Layer7)
        {
            caps.conntrack = TOKEN_TABLE;
            caps.persistence = TOKEN_TABLE;
        }
        if let Some(line) = limit_to_memory(&mut caps, setup.memory) {
            log.push(line);
        }
        let mut engine = match Engine::new(&config, caps.clone()) {
            Ok(e) => e,
            Err(e) => {
                log.push(format!("error: config: {e:?}"));
                log.push(String::from("running with no virtual services"));
                config.virtual_services.clear();
                Engine::new(&config, caps)
                    .expect("an engine without virtual services always builds")
            }
        };
        // The stacks' addresses, not the config's, are what the engine
        // routes with (the command line or DHCP may differ from the config).
        for nic in 0..config.network.interfaces.len() {
            engine.set_interface_address(nic, setup.addrs.get(nic).copied().flatten());
        }
        engine.set_gateway(setup.gateway);
        let (board, fixed) = Board::new(&config, setup.now);
        let mut events = Outbox::default();
        for change in fixed {
            apply(&mut engine, &mut events, change);
        }
        let allow = AllowList::from_config(config.management.allow.as_deref());
        let mut dp = Datapath {
            engine,
            allow,
            events,
            conflict_reported: None,
            full_reported: (None, 0, 0),
            config,
            arp: ArpCache::new(ARP_CAPACITY),
            next_hops: NextHops::default(),
            stats: PathStats::default(),
            log,
            board,
            arp_warm: Vec::new(),
            warm_due: Vec::new(),
            unreachable: Default::default(),
            guard: Default::default(),
            macs: setup.macs,
            addrs: setup.addrs,
            vips: Vec::new(),
            pair: None,
            synced_config: None,
        };
        dp.place_vips();
        dp.start_pair(setup.boot_id, setup.now);
        dp
    }

    /// Builds the pair of `[ha]`: the engine is standby until the election
    /// makes this appliance master, keeps a journal for the sync link, and
    /// sends SNAT from the floating addresses.
    fn start_pair(&mut self, boot_id: u64, now: Instant) {
        let own = self.address(0).map(|a| a.0);
        let Some(mut pair) =
            crate::ha::Pair::from_config(&self.config, &self.vips, own, boot_id, now)
        else {
            return;
        };
        if let Some((a, _)) = self.address(pair.nic) {
            pair.router.set_address(a);
        }
        for &(addr, nic) in pair.floating() {
            self.engine.set_snat_source(nic, Some(addr));
        }
        if pair.sync.is_some() {
            self.engine.set_journal(crate::ha::JOURNAL);
        }
        crate::ha::apply_role(&pair, &mut self.engine);
        self.pair = Some(pair);
    }

    /// Puts each VIP on the NIC whose subnet holds it (eth0 if none does).
    fn place_vips(&mut self) {
        let mut vips: Vec<(Ipv4Addr, usize)> = Vec::new();
        for vs in &self.config.virtual_services {
            if vips.iter().any(|(v, _)| *v == vs.vip) {
                continue;
            }
            let nic = self
                .addrs
                .iter()
                .position(|a| a.is_some_and(|a| subnet_holds(a, vs.vip)))
                .unwrap_or(0);
            vips.push((vs.vip, nic));
        }
        self.vips = vips;
    }

    /// Sets (or, with `None`, removes) the address of NIC `nic`, e.g. when
    /// a DHCP lease is granted, renewed with a change, or lost.
    pub fn set_address(&mut self, nic: usize, addr: Option<(Ipv4Addr, u8)>) {
        if nic >= self.addrs.len() {
            self.addrs.resize(nic + 1, None);
        }
        self.addrs[nic] = addr;
        self.engine.set_interface_address(nic, addr);
        self.place_vips();
    }

    /// Administrative state of a real server (console `drain|halt|online`,
    /// signed commands); the config the console shows follows it.
    pub fn set_server_admin(&mut self, service: usize, server: usize, state: AdminState) -> bool {
        let Some(rs) = self
            .config
            .virtual_services
            .get_mut(service)
            .and_then(|v| v.real_servers.get_mut(server))
        else {
            return false;
        };
        rs.state = state;
        self.engine.set_server_admin(service, server, state)
    }

    /// Replaces the configuration with `new` (validated) in one step, the
    /// live apply: the engine keeps what continues (flows, persistence,
    /// health) and drains what was removed, the health board keeps the
    /// schedules of servers whose checks did not change, and the VIPs are
    /// placed again (announce them after). Network settings are not
    /// touched here: the caller applies changed addresses to its stacks and
    /// then with [`set_address`](Self::set_address).
    pub fn apply_config(&mut self, new: Config, now: Instant) -> Result<ApplyReport, EngineError> {
        let mut new = new;
        // As at boot: every NIC is an interface of the config.
        let listed = new.network.interfaces.len();
        for (i, a) in self.addrs.iter().enumerate().skip(listed) {
            new.network.interfaces.push(Interface {
                name: format!("eth{i}"),
                dhcp: false,
                address: a.map(|a| a.0),
                prefix: a.map(|a| a.1),
                role: Default::default(),
            });
        }
        let report = self.engine.apply(&self.config, &new)?;
        for change in self.board.apply(&self.config, &new, &report.plan, now) {
            apply(&mut self.engine, &mut self.events, change);
        }
        for what in &report.at_next_boot {
            self.log
                .push(format!("config: {what} takes effect at the next boot"));
        }
        self.config = new;
        self.place_vips();
        Ok(report)
    }

    /// Sends a gratuitous ARP for the address of `nic` (after it changed).
    pub fn announce_address<T: Transmit>(&mut self, nic: usize, tx: &mut T) {
        if let (Some((ip, _)), Some(&mac)) = (self.address(nic), self.macs.get(nic)) {
            self.send_arp(tx, nic, Arp::gratuitous(mac, ip));
        }
    }

    /// Sets the default gateway.
    pub fn set_gateway(&mut self, gateway: Option<Ipv4Addr>) {
        self.engine.set_gateway(gateway);
    }

    /// Address and prefix of NIC `nic`.
    pub fn address(&self, nic: usize) -> Option<(Ipv4Addr, u8)> {
        self.addrs.get(nic).copied().flatten()
    }

    pub fn vip_count(&self) -> usize {
        self.vips.len()
    }

    /// Number of real servers with a health check.
    pub fn check_count(&self) -> usize {
        self.board.len()
    }

    fn is_own(&self, ip: Ipv4Addr) -> bool {
        self.addrs.iter().any(|a| a.is_some_and(|a| a.0 == ip))
    }

    fn is_vip(&self, ip: Ipv4Addr) -> bool {
        self.vips.iter().any(|v| v.0 == ip)
    }

    fn on_our_subnet(&self, nic: usize, ip: Ipv4Addr) -> bool {
        self.address(nic).is_some_and(|a| subnet_holds(a, ip))
    }

    /// Sends a frame, counting a refusal.
    fn send<T: Transmit>(
        &mut self,
        tx: &mut T,
        nic: usize,
        len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> bool {
        let sent = tx.send(nic, len, fill);
        if !sent {
            self.stats.tx_full += 1;
        }
        sent
    }

    fn send_arp<T: Transmit>(&mut self, tx: &mut T, nic: usize, arp: Arp) {
        self.send(tx, nic, MIN_FRAME, |b| {
            arp.emit(b);
        });
    }

    fn send_request<T: Transmit>(&mut self, tx: &mut T, nic: usize, target: Ipv4Addr) {
        let Some(&mac) = self.macs.get(nic) else {
            return;
        };
        let ip = self.address(nic).map_or(Ipv4Addr::UNSPECIFIED, |a| a.0);
        self.send_arp(tx, nic, Arp::request(mac, ip, target));
    }

    /// Sends one gratuitous ARP for every VIP (and the pair's floating
    /// addresses), unless this appliance is the backup of a pair.
    pub fn announce_vips<T: Transmit>(&mut self, tx: &mut T) {
        if self.pair.as_ref().is_some_and(|p| !p.is_master()) {
            return;
        }
        for (ip, nic) in self.owned_addresses() {
            if let Some(arp) = self.garp(ip, nic) {
                self.send_arp(tx, nic, arp);
            }
        }
    }

    /// Sends frames that waited for `mac` out of `nic`.
    fn flush<T: Transmit>(&mut self, tx: &mut T, nic: usize, mac: [u8; 6], frames: Vec<Vec<u8>>) {
        let Some(&src) = self.macs.get(nic) else {
            return;
        };
        for mut f in frames {
            if set_macs(&mut f, EthernetAddress(mac), EthernetAddress(src)).is_err() {
                continue;
            }
            let len = f.len().max(MIN_FRAME);
            self.send(tx, nic, len, |b| {
                b.fill(0);
                let n = b.len().min(f.len());
                b[..n].copy_from_slice(&f[..n]);
            });
        }
    }

    /// Handles one received frame.
    pub fn on_frame<T: Transmit>(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        now: Instant,
        tx: &mut T,
    ) -> Verdict {
        self.on_frame_offloaded(nic, frame, &Offload::NONE, now, tx)
    }

    /// [`Datapath::on_frame`] for a frame with checksum/segmentation
    /// offload metadata from its NIC (see [`crate::frame::offload`]). A
    /// frame sent on by [`Verdict::Transmit`] keeps `offload` valid; one
    /// that must wait for ARP is made whole first (its partial checksum
    /// completed), since the queue keeps bytes only; a TCP super-frame that
    /// would have to wait is dropped and counted instead.
    pub fn on_frame_offloaded<T: Transmit>(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
        tx: &mut T,
    ) -> Verdict {
        if let Some(a) = Arp::parse(frame) {
            return self.on_arp(nic, frame, &a, now, tx);
        }
        if let Some(v) = self.pair_frame(nic, frame, now, tx) {
            return v;
        }
        let verdict = match self.engine.process_offloaded(nic, frame, offload, now) {
            Decision::ToStack => self.for_stack(nic, frame, now, tx),
            Decision::Drop(_) | Decision::Consumed => Verdict::Consumed,
            Decision::Forward { nic: out, next_hop } => {
                self.forward(out, next_hop, frame, offload, now, tx)
            }
        };
        self.send_outgoing(tx, now);
        verdict
    }

    /// Addresses a frame the engine forwards to `next_hop` out of NIC
    /// `out`: the next-hop cache first, then the ARP cache; a frame whose
    /// next hop is unresolved waits in the ARP queue.
    fn forward<T: Transmit>(
        &mut self,
        out: usize,
        next_hop: Ipv4Addr,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
        tx: &mut T,
    ) -> Verdict {
        let Some(&src) = self.macs.get(out) else {
            self.stats.no_nic += 1;
            return Verdict::Consumed;
        };
        let mac = match self.next_hops.get(out, next_hop, now) {
            Some(mac) => mac,
            None => match self.arp.known(next_hop, now) {
                Some((mac, refresh)) => {
                    if refresh {
                        self.send_request(tx, out, next_hop);
                    }
                    self.next_hops.put(out, next_hop, mac, now);
                    mac
                }
                None => {
                    if !whole_for_queue(frame, offload) {
                        self.stats.super_frames_unqueued += 1;
                        return Verdict::Consumed;
                    }
                    if let Resolve::Pending { request: true, .. } =
                        self.arp.queue(out, next_hop, frame, now)
                    {
                        self.send_request(tx, out, next_hop);
                    }
                    return Verdict::Consumed;
                }
            },
        };
        match set_macs(frame, EthernetAddress(mac), EthernetAddress(src)) {
            Ok(()) => Verdict::Transmit(out),
            Err(_) => Verdict::Consumed,
        }
    }

    /// Sends what the engine originated while handling a frame or a tick
    /// (the Layer 7 relay's handshakes, resets, PROXY headers and released
    /// early data), routed and addressed like the appliance's own packets.
    fn send_outgoing<T: Transmit>(&mut self, tx: &mut T, now: Instant) {
        if !self.engine.has_outgoing() {
            return;
        }
        let out: Vec<_> = self.engine.drain_outgoing().collect();
        for o in out {
            let Some(packet) = o.frame.get(ETHERNET_HEADER_LEN..) else {
                continue;
            };
            let Some(dst) = packet
                .get(16..20)
                .map(|d| Ipv4Addr::new(d[0], d[1], d[2], d[3]))
            else {
                continue;
            };
            self.send_ipv4(tx, dst, packet.len(), now, |b| b.copy_from_slice(packet));
        }
    }

    fn on_arp<T: Transmit>(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        a: &Arp,
        now: Instant,
        tx: &mut T,
    ) -> Verdict {
        let pair_address =
            |ip: Ipv4Addr| self.pair.as_ref().is_some_and(|p| p.is_owned_address(ip));
        let asks_us =
            self.is_own(a.target_ip) || self.is_vip(a.target_ip) || pair_address(a.target_ip);
        // The other appliance of a pair claims the VIPs and floating
        // addresses whenever it is master: a conflict only while we are.
        let ours = self.is_own(a.sender_ip)
            || ((self.is_vip(a.sender_ip) || pair_address(a.sender_ip)) && self.owns(a.sender_ip));
        if ours && !self.macs.contains(&a.sender_mac) {
            // Another machine claims one of our addresses: a duplicate
            // address, or a DR real server answering ARP for the VIP.
            self.stats.arp_conflicts += 1;
            if self
                .conflict_reported
                .is_none_or(|t| now.since(t) >= REPORT_EVERY)
            {
                self.conflict_reported = Some(now);
                let m = a.sender_mac;
                self.events.push(
                    Severity::Error,
                    Category::Arp,
                    format!(
                        "conflict: {} is claimed by {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} on eth{nic} ({} conflicting ARP frames so far)",
                        a.sender_ip, m[0], m[1], m[2], m[3], m[4], m[5], self.stats.arp_conflicts
                    ),
                );
            }
        }
        let create = asks_us || self.on_our_subnet(nic, a.sender_ip);
        // Whatever the forwarding path cached for the sender may be stale now.
        self.next_hops.forget(a.sender_ip);
        if let Some((out, frames)) = self.arp.learn(nic, a.sender_ip, a.sender_mac, now, create) {
            self.flush(tx, out, a.sender_mac, frames);
        }
        let gratuitous = a.sender_ip == a.target_ip;
        if a.request
            && !gratuitous
            && !self.is_own(a.target_ip)
            && self.owns(a.target_ip)
            && self
                .owned_addresses()
                .iter()
                .any(|&(v, n)| v == a.target_ip && n == nic)
            && let Some(mac) = self.owned_mac(nic)
            && a.reply(mac, a.target_ip).emit(frame)
        {
            self.stats.vip_arp_replies += 1;
            return Verdict::Transmit(nic);
        }
        Verdict::PassToStack
    }

    /// A frame for the stack, unless it floods the stack (see [`guard`]) or
    /// was routed to us for a destination we do not serve: then ICMP
    /// "network unreachable" (see [`unreachable`]).
    fn for_stack<T: Transmit>(
        &mut self,
        nic: usize,
        frame: &[u8],
        now: Instant,
        tx: &mut T,
    ) -> Verdict {
        // Management lockdown: sources outside the allow list get nothing,
        // not even a reset, and are counted.
        if allow::refuses(&self.allow, frame) {
            self.stats.management_refused += 1;
            return Verdict::Consumed;
        }
        let addrs = &self.addrs;
        let is_own = |ip: Ipv4Addr| addrs.iter().any(|a| a.is_some_and(|a| a.0 == ip));
        match self.guard.check(frame, now, is_own) {
            guard::Guard::Pass => {}
            guard::Guard::UdpLimited => {
                self.stats.stack_udp_limited += 1;
                return Verdict::Consumed;
            }
            guard::Guard::EchoLimited => {
                self.stats.stack_echo_limited += 1;
                return Verdict::Consumed;
            }
        }
        let (Some(&mac), Some((own, _))) = (self.macs.get(nic), self.address(nic)) else {
            return Verdict::PassToStack;
        };
        let is_local = |ip: Ipv4Addr| {
            self.is_own(ip)
                || self.is_vip(ip)
                || self.pair.as_ref().is_some_and(|p| p.is_owned_address(ip))
        };
        let Some(u) = unreachable::check(frame, mac, is_local) else {
            return Verdict::PassToStack;
        };
        if self.unreachable.allow(now) {
            let len = u.frame_len().max(MIN_FRAME);
            if self.send(tx, nic, len, |b| {
                u.emit(mac, own, b);
            }) {
                self.stats.unreachable_sent += 1;
            }
        }
        Verdict::Consumed
    }

    /// Sends an IPv4 packet the appliance originates: `fill` writes the
    /// whole packet (header included) of `ip_len` bytes, addressed to `dst`.
    /// It is routed like forwarded traffic (connected subnets, then the
    /// gateway), gets its MACs from the ARP cache, or waits for the next
    /// hop's answer.
    pub fn send_ipv4<T: Transmit>(
        &mut self,
        tx: &mut T,
        dst: Ipv4Addr,
        ip_len: usize,
        now: Instant,
        fill: impl FnOnce(&mut [u8]),
    ) -> Sent {
        let Some((out, next_hop)) = self.engine.route(dst) else {
            self.stats.originate_no_route += 1;
            return Sent::Dropped;
        };
        let Some(&src) = self.macs.get(out) else {
            self.stats.no_nic += 1;
            return Sent::Dropped;
        };
        let len = (ETHERNET_HEADER_LEN + ip_len).max(MIN_FRAME);
        let write = |b: &mut [u8], dst_mac: [u8; 6]| {
            b.fill(0);
            b[..6].copy_from_slice(&dst_mac);
            b[6..12].copy_from_slice(&src);
            b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            if let Some(packet) = b.get_mut(ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + ip_len) {
                fill(packet);
            }
        };
        if let Some((mac, refresh)) = self.arp.known(next_hop, now) {
            if refresh {
                self.send_request(tx, out, next_hop);
            }
            if !self.send(tx, out, len, |b| write(b, mac)) {
                return Sent::Dropped;
            }
            self.stats.originated += 1;
            return Sent::Sent;
        }
        let mut frame = alloc::vec![0u8; len];
        write(&mut frame, [0; 6]);
        let Resolve::Pending { request, queued } = self.arp.queue(out, next_hop, &frame, now)
        else {
            return Sent::Dropped;
        };
        if request {
            self.send_request(tx, out, next_hop);
        }
        if queued {
            self.stats.originated += 1;
            Sent::Queued
        } else {
            Sent::Dropped
        }
    }

    /// Periodic work: idle flows leave the tables, unanswered ARP is retried,
    /// health-check targets are resolved.
    pub fn tick<T: Transmit>(&mut self, now: Instant, tx: &mut T) {
        self.engine.expire(now, EXPIRE_BUDGET);
        self.send_outgoing(tx, now);
        for (nic, ip) in self.arp.poll(now) {
            self.send_request(tx, nic, ip);
        }
        for (nic, ip) in core::mem::take(&mut self.warm_due) {
            self.send_request(tx, nic, ip);
        }
        self.report_full_tables(now);
    }

    /// Reports (at most once per [`REPORT_EVERY`]) that the connection or
    /// persistence table refused entries because it was full.
    fn report_full_tables(&mut self, now: Instant) {
        let (last, ct_then, p_then) = self.full_reported;
        if last.is_some_and(|t| now.since(t) < REPORT_EVERY) {
            return;
        }
        let ct = self.engine.conntrack();
        let p = self.engine.persistence();
        let (ct_now, p_now) = (ct.stats.refused_full, p.stats.refused_full);
        if ct_now == ct_then && p_now == p_then {
            return;
        }
        let mut parts = Vec::new();
        if ct_now > ct_then {
            parts.push(format!(
                "connection table full ({} flows): {} new flows refused",
                ct.capacity(),
                ct_now - ct_then
            ));
        }
        if p_now > p_then {
            parts.push(format!(
                "persistence table full ({} clients): {} new clients not remembered",
                p.capacity(),
                p_now - p_then
            ));
        }
        self.events
            .push(Severity::Error, Category::Table, parts.join("; "));
        self.full_reported = (Some(now), ct_now, p_now);
    }

    /// The most overdue health check that is due, marked started, with the
    /// NIC on the server's subnet (else eth0, towards the gateway).
    ///
    /// The IP stack the check runs on sends one ARP request per second for
    /// all the addresses it does not know (smoltcp's neighbour cache is
    /// rate-limited as a whole), so one dead server it keeps asking for can
    /// starve the others and their connects time out. The frame path asks
    /// for every on-link check target itself at the next tick (and again
    /// every [`ARP_WARM_INTERVAL`], within the stack's 60 s entry lifetime):
    /// the answer is addressed to the appliance, so the stack learns it too.
    pub fn next_check(&mut self, now: Instant) -> Option<CheckJob> {
        let job = self.board.take_due(now)?;
        let nic = self
            .addrs
            .iter()
            .position(|a| a.is_some_and(|a| subnet_holds(a, job.ip)));
        if let Some(nic) = nic {
            let slot = self.arp_warm.iter().position(|(ip, _)| *ip == job.ip);
            let due = slot.is_none_or(|i| now.since(self.arp_warm[i].1) >= ARP_WARM_INTERVAL);
            if due {
                match slot {
                    Some(i) => self.arp_warm[i].1 = now,
                    None => self.arp_warm.push((job.ip, now)),
                }
                self.warm_due.push((nic, job.ip));
            }
        }
        Some(CheckJob {
            job,
            nic: nic.unwrap_or(0),
        })
    }

    /// Takes a new management allow list (after a configuration change).
    pub fn set_allow(&mut self, allow: AllowList) {
        self.allow = allow;
    }

    /// Why the last health check of a real server failed, if it did (until
    /// a check passes).
    pub fn check_failure(&self, service: usize, server: usize) -> Option<String> {
        self.board.last_failure(service, server)
    }

    /// Records a check's verdict (and a feedback agent's reply); what
    /// changes about the server goes to the engine and the event log.
    pub fn check_done(
        &mut self,
        index: usize,
        verdict: CheckVerdict,
        agent: Option<&AgentReply>,
        now: Instant,
    ) {
        if let Some(change) = self.board.finish(index, verdict, agent, now) {
            apply(&mut self.engine, &mut self.events, change);
        }
    }

    /// The health board: each server's last reason and agent, each
    /// service's check (for the console).
    pub fn health(&self) -> &Board {
        &self.board
    }
}
