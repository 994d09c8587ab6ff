//! The L4 engine: frames in, decisions out.
//!
//! [`Engine::process`] takes a frame as it arrived on a NIC, with the time,
//! and returns a [`Decision`]. It composes classification and rewriting
//! ([`crate::frame`]) with the scheduler, the persistence table and the
//! connection tracker. Nothing here does I/O or reads a clock.
//!
//! # Contract with the caller (the data path in `net`)
//! * NIC `n` is interface `n` of the configuration's `network.interface`
//!   list.
//! * [`Decision::Forward`] means the frame was rewritten in place at layer 3
//!   and 4 (nothing for DR) and must leave on interface `nic`. The engine
//!   does not touch MAC addresses: the caller looks up `next_hop` in its ARP
//!   cache and writes that MAC as destination and its own NIC's MAC as
//!   source (see [`crate::frame::set_macs`]). If `next_hop` is not resolved
//!   yet, the caller sends an ARP request and queues or drops the frame. For
//!   DR the next hop is the real server itself (it holds the VIP on its
//!   loopback), for NAT/SNAT the real server, the client, or the gateway.
//! * [`Decision::ToStack`]: not L4 virtual-service traffic (ARP, ICMP echo,
//!   management, layer 7 services, health-check replies...): give the frame,
//!   unchanged, to the TCP/IP stack.
//! * [`Decision::Drop`]: discard; it has already been counted.
//! * Call [`Engine::expire`] periodically (e.g. every 100 ms) so that idle
//!   flows free their table slots and SNAT ports.
//!
//! # Flows
//! A TCP flow starts only with a SYN (without ACK); other segments that
//! belong to no tracked flow are dropped as [`DropReason::NoFlow`]. UDP
//! flows start with any datagram. Each flow is pinned to one real server for
//! its whole life; the connection table keys it by the client's 5-tuple
//! (original direction) and, for NAT and SNAT, by the 5-tuple the real
//! server's replies carry (reply direction):
//!
//! | forwarding | original: client → VIP becomes | reply: server → … becomes |
//! |---|---|---|
//! | DR   | unchanged, sent to the server's MAC | (replies bypass the appliance) |
//! | NAT  | client → server                     | server → client ⇒ VIP → client |
//! | SNAT | appliance:port → server             | server → appliance:port ⇒ VIP → client |
//!
//! ICMP errors quoting a packet of a tracked flow are translated the same
//! way (outer header, quoted header and ports), so that path MTU discovery
//! and "port unreachable" work through NAT and SNAT; for DR, errors from the
//! client side about the server's packets are passed on to the server.

mod apply;
#[cfg(test)]
mod aware_tests;
mod l7;
#[cfg(test)]
mod l7_sim;
#[cfg(test)]
mod l7_tests;
mod outbound;
#[cfg(test)]
mod outbound_tests;
mod page;
#[cfg(test)]
mod page_tests;
pub mod replica;
#[cfg(test)]
mod replica_tests;
mod route;
pub mod shutdown;
mod stats;
#[cfg(test)]
mod tests;

use alloc::vec::Vec;
use core::net::Ipv4Addr;
use core::ops::RangeInclusive;

use crate::config::{AdminState, Config, Fallback, Forwarding, RealServer, VirtualService};
use crate::conntrack::{
    ConnTable, Direction, Flow, InsertError, TcpFlags as ConnFlags, TcpState, Timeouts,
};
use crate::flow::{Endpoint, FlowKey, Protocol};
use crate::frame::{
    self, Class, DropCounters, DropReason, IcmpError, IcmpTranslation, L4Checksum, L4Packet,
    Offload, PortAllocator, Ttl,
};
use crate::persist::PersistTable;
use crate::schedule::{Health, RealServerState, Scheduler};
use crate::time::{Duration, Instant};
use alloc::string::String;

pub use apply::ApplyReport;
pub use l7::{HALT_GRACE, L7Stats, MAX_PAIRS, OUTBOX_LIMIT, Outgoing, PairStats};
pub use replica::{FlowRecord, ImportError, PersistRecord, Record, ReplicaStats};
pub use route::Routes;
pub use shutdown::{SHUTDOWN_DRAIN, ShutdownStep};
pub use stats::{Counters, ServiceStats};

/// What to do with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send the (rewritten) frame on `nic` to the MAC of `next_hop`.
    Forward { nic: usize, next_hop: Ipv4Addr },
    /// Hand the frame, unchanged, to the TCP/IP stack.
    ToStack,
    /// The engine used the frame (a layer 7 handshake, early data it
    /// holds): nothing to forward; what it answers is in the outbox
    /// ([`Engine::drain_outgoing`]).
    Consumed,
    /// Discard the frame (already counted).
    Drop(DropReason),
}

/// Table sizes of the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// Most tracked flows.
    pub conntrack: usize,
    /// Most persistence entries.
    pub persistence: usize,
    /// Source ports SNAT may use towards each real server.
    pub snat_ports: RangeInclusive<u16>,
    /// Key of the table hashes and of the SYN cookies; give a boot-time
    /// random value so that nobody can aim traffic at one hash chain or
    /// forge a cookie.
    pub hash_seed: u64,
    /// Most layer 7 connections.
    pub l7_connections: usize,
    /// Most layer 7 half-open handshakes kept as entries.
    pub l7_half_open: usize,
    /// Bytes of early layer 7 client data held in all.
    pub l7_hold_bytes: usize,
}

impl Capacities {
    /// The sizes the configuration asks for, with the default SNAT range.
    pub fn from_config(config: &Config) -> Self {
        Capacities {
            conntrack: config.l4.conntrack_capacity as usize,
            persistence: config.l4.persistence_capacity as usize,
            snat_ports: frame::ports::DEFAULT_RANGE,
            hash_seed: 0x6c62_6d65_6421_0001,
            l7_connections: config.l7.capacity as usize,
            l7_half_open: config.l7.half_open as usize,
            l7_hold_bytes: config.l7.hold_bytes as usize,
        }
    }
}

/// Why an engine could not be built from a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineError {
    /// More virtual services or real servers than flow entries can name.
    TooManyServices,
}

/// The per-service part of the configuration the data path needs, kept in
/// a compact form.
#[derive(Debug)]
struct ServiceRuntime {
    /// The VIP and first port: the service's name between appliances.
    vip: Endpoint,
    protocol: Protocol,
    forwarding: Forwarding,
    persistence: Option<(Ipv4Addr, Duration)>,
    established_timeout: Duration,
    scheduler: Scheduler,
    servers: Vec<RealServerState>,
    server_config: Vec<RealServer>,
    /// Index into `Engine::snat_ports` for SNAT and (non-transparent)
    /// layer 7 services.
    snat_allocator: Vec<Option<usize>>,
    /// Layer 7 settings (layer 7 services only).
    l7: Option<l7::L7Service>,
    /// Protocol-aware layer 7: what the client's first bytes decide.
    aware: Option<crate::aware::Awareness>,
    /// `outbound_snat`: indices into `Engine::snat_ports` of the VIP's
    /// outbound port allocators (TCP, UDP); see [`outbound`].
    outbound: Option<[usize; 2]>,
    stats: ServiceStats,
    /// What new flows get while no real server may take them.
    fallback: FallbackRuntime,
    /// The HTTP response of `fallback = { page = ... }`.
    page: Option<Vec<u8>>,
}

/// A service's fallback, as the engine runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FallbackRuntime {
    None,
    /// Index of the fallback server: one past the configured real servers
    /// in `servers`, with weight 0 so the scheduler never picks it.
    Server(usize),
    /// Refuse cleanly (TCP reset from the VIP).
    Local,
    /// Answer HTTP with the service's maintenance page (see [`page`]).
    Page,
}

impl ServiceRuntime {
    fn server_endpoint(&self, server: usize, client_dst_port: u16) -> Endpoint {
        let rs = &self.server_config[server];
        Endpoint::new(rs.ip, rs.target_port(self.forwarding, client_dst_port))
    }
}

/// One (address, port, protocol) of an L4 virtual service.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct VipKey {
    addr: u32,
    port: u16,
    proto: Protocol,
}

/// The sans-IO L4 load balancer.
pub struct Engine {
    services: Vec<ServiceRuntime>,
    /// Every (VIP, port, protocol) with its service, sorted for binary
    /// search.
    vips: Vec<(VipKey, u16)>,
    /// Addresses of NAT/SNAT real servers, sorted (to recognise their
    /// fragments).
    nat_servers: Vec<Ipv4Addr>,
    /// Real servers whose own connections leave from their VIP, sorted,
    /// with their (service, server) (see [`outbound`]).
    outbound_servers: Vec<(Ipv4Addr, u16, u16)>,
    routes: Routes,
    conntrack: ConnTable,
    persist: PersistTable,
    snat_ports: Vec<PortAllocator>,
    /// What each SNAT port allocator is for: one per (protocol, server).
    snat_keys: Vec<(Protocol, Ipv4Addr)>,
    snat_range: RangeInclusive<u16>,
    /// Table sizes the engine was built with (a live apply cannot change them).
    capacities: (usize, usize),
    /// Layer 7 connections the memory allows (the table is that big once a
    /// layer 7 service exists; a live apply may add the first).
    l7_capacity: usize,
    l7_seed: u64,
    drops: DropCounters,
    /// Layer 7 connections (see [`l7`]).
    l7_table: ConnTable<crate::splice::Conn>,
    l7: l7::L7,
    /// Backup of a pair: new flows are refused (known flows go on).
    standby: bool,
    /// A drained shutdown began then (new flows refused; see [`shutdown`]),
    /// and whether its aborts went out.
    shutdown: Option<Instant>,
    shutdown_aborted: bool,
    /// Changes for the other appliance of a pair (see [`replica`]).
    journal: Option<replica::Journal>,
    replica: ReplicaStats,
    /// SYN cookies of the fallback pages (see [`page`]).
    page_cookies: crate::splice::cookie::Cookies,
}

impl Engine {
    /// An engine for a validated configuration.
    pub fn new(config: &Config, capacities: Capacities) -> Result<Engine, EngineError> {
        // Identities are u16, and the persistence table reserves 0xFFFF.
        if config.virtual_services.len() >= usize::from(u16::MAX)
            || config
                .virtual_services
                .iter()
                .any(|s| s.real_servers.len() >= usize::from(u16::MAX))
        {
            return Err(EngineError::TooManyServices);
        }
        let mut snat = apply::SnatPorts::new(capacities.snat_ports.clone());
        let services: Vec<ServiceRuntime> = config
            .virtual_services
            .iter()
            .map(|vs| ServiceRuntime::build(vs, config, &mut snat))
            .collect();
        let (vips, nat_servers) = lookups(config, &services);
        let outbound_servers = outbound::servers(&services);
        let timeouts = Timeouts::from_l4(&config.l4);
        let has_l7 = config
            .virtual_services
            .iter()
            .any(|vs| vs.forwarding == Forwarding::Layer7);
        let l7_capacity = if has_l7 { capacities.l7_connections } else { 1 };
        Ok(Engine {
            services,
            vips,
            nat_servers,
            outbound_servers,
            routes: Routes::from_network(&config.network),
            conntrack: ConnTable::new(
                capacities.conntrack,
                Timeouts::from_l4(&config.l4),
                capacities.hash_seed,
            ),
            persist: PersistTable::new(capacities.persistence, capacities.hash_seed ^ 0x7065_7273),
            snat_ports: snat.ports,
            snat_keys: snat.keys,
            snat_range: capacities.snat_ports.clone(),
            capacities: (capacities.conntrack, capacities.persistence),
            l7_capacity: capacities.l7_connections,
            l7_seed: capacities.hash_seed ^ 0x6c37_7370_6c69_6365,
            drops: DropCounters::default(),
            l7_table: ConnTable::new(
                l7_capacity,
                timeouts,
                capacities.hash_seed ^ 0x6c37_7370_6c69_6365,
            ),
            l7: l7::L7::new(
                capacities.l7_half_open,
                capacities.l7_hold_bytes,
                &timeouts,
                capacities.hash_seed,
            ),
            standby: false,
            shutdown: None,
            shutdown_aborted: false,
            journal: None,
            replica: ReplicaStats::default(),
            page_cookies: page::cookies(capacities.hash_seed),
        })
    }

    /// Backup of a pair (`true`): new flows are dropped as
    /// [`DropReason::Standby`]; flows already tracked (replicated from the
    /// master) are still forwarded, so packets that reach this appliance
    /// while neighbours catch up with a takeover are not lost.
    pub fn set_standby(&mut self, standby: bool) {
        self.standby = standby;
    }

    pub fn is_standby(&self) -> bool {
        self.standby
    }

    /// Decides what to do with `frame`, which arrived on interface `nic`,
    /// rewriting it in place when it is forwarded.
    pub fn process(&mut self, nic: usize, frame: &mut [u8], now: Instant) -> Decision {
        self.process_offloaded(nic, frame, &Offload::NONE, now)
    }

    /// [`Engine::process`] for a frame with checksum or segmentation
    /// offload metadata from its NIC (see [`crate::frame::offload`]): a
    /// forwarded frame keeps `offload` valid for itself (a partial checksum
    /// stays partial, a super-frame stays one), so the caller sends it with
    /// the same metadata, or segments and checksums it in software for a
    /// NIC that cannot. Metadata that does not fit the frame is dropped as
    /// [`DropReason::BadOffload`].
    pub fn process_offloaded(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
    ) -> Decision {
        let decision = match self.decide(nic, frame, offload, now) {
            Ok(d) => d,
            Err(reason) => Decision::Drop(reason),
        };
        if let Decision::Drop(reason) = decision {
            self.drops.count(reason);
        }
        decision
    }

    fn decide(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
    ) -> Result<Decision, DropReason> {
        if nic >= self.routes.nic_count() {
            return Err(DropReason::UnknownInterface);
        }
        match frame::classify(frame)? {
            Class::L4(pkt) => self.l4(nic, frame, &pkt, offload, now),
            // ICMP errors are never offloaded; metadata claiming otherwise
            // would make the translated frame wrong.
            Class::IcmpError(_) if *offload != Offload::NONE => Err(DropReason::BadOffload),
            Class::IcmpError(err) => self.icmp_error(nic, frame, &err, now),
            Class::Fragment(ip) => {
                if self.is_l4_vip(ip.dst) || self.nat_servers.binary_search(&ip.src).is_ok() {
                    Err(DropReason::Fragment)
                } else {
                    Ok(Decision::ToStack)
                }
            }
            Class::Arp | Class::NotIpv4 | Class::OtherIpv4(_) => Ok(Decision::ToStack),
        }
    }

    fn is_l4_vip(&self, addr: Ipv4Addr) -> bool {
        let a = u32::from(addr);
        let i = self.vips.partition_point(|(k, _)| k.addr < a);
        self.vips.get(i).is_some_and(|(k, _)| k.addr == a)
    }

    fn service_for(&self, dst: Endpoint, proto: Protocol) -> Option<usize> {
        let key = VipKey {
            addr: u32::from(dst.addr),
            port: dst.port,
            proto,
        };
        let i = self.vips.binary_search_by(|(k, _)| k.cmp(&key)).ok()?;
        Some(usize::from(self.vips[i].1))
    }

    fn l4(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        pkt: &L4Packet,
        offload: &Offload,
        now: Instant,
    ) -> Result<Decision, DropReason> {
        let tcp = pkt.key.proto == Protocol::Tcp;
        if !offload.fits(pkt.ip.transport_offset(), tcp) {
            return Err(DropReason::BadOffload);
        }
        let sent = Sent::of(frame, pkt, offload);
        if let Some((id, dir)) = self.conntrack.get(&pkt.key, now)
            && let Some(&flow) = self.conntrack.flow(id)
        {
            let (svc, srv) = (usize::from(flow.service), usize::from(flow.server));
            let halted = self
                .services
                .get(svc)
                .and_then(|s| s.servers.get(srv))
                .map(|s| s.admin == AdminState::Halt);
            match halted {
                None => return Ok(Decision::ToStack),
                Some(true) => {
                    return Err(self.count_drop(svc, Some(srv), DropReason::ServerHalted));
                }
                Some(false) => {}
            }
            let flags = (pkt.key.proto == Protocol::Tcp).then_some(ConnFlags(pkt.tcp_flags.0));
            let state = self.conntrack.touch(id, dir, flags, now);
            if let Some(st) = state
                && st != flow.state
                && st != TcpState::Handshake
            {
                self.journal_flow(id, now);
            }
            let service = &self.services[svc];
            if dir == Direction::Original
                && !flow.is_outbound()
                && let Some((mask, timeout)) = service.persistence
            {
                let client = flow.original.src.addr;
                if flow.state == TcpState::Handshake && state == Some(TcpState::Established) {
                    // The client answered the server: a real client, now
                    // worth remembering (see `new_flow`).
                    self.persist_client(flow.service, client, mask, flow.server, timeout, now);
                } else if let Some(extended) = self.persistence_refresh(&flow, timeout, now) {
                    self.persist
                        .touch(flow.service, client, mask, extended, now);
                }
            }
            return self.forward(nic, frame, pkt, offload.checksum, sent, &flow, dir);
        }
        if pkt.key.proto == Protocol::Tcp && self.l7.has_aborted() {
            self.l7_track_aborted(now);
        }
        if pkt.key.proto == Protocol::Tcp
            && let Some((id, dir)) = self.l7_table.get(&pkt.key, now)
        {
            return self.l7_segment(frame, pkt, id, dir, offload, sent, now);
        }
        let svc = self.service_for(pkt.key.dst, pkt.key.proto);
        if let Some(svc) = svc
            && self.services[svc].page.is_some()
            && !self.standby
            && let Some(answered) = self.page_segment(frame, pkt, svc, now)
        {
            return answered;
        }
        match svc {
            Some(svc) if self.shutdown.is_some() && pkt.tcp_flags.syn() && !pkt.tcp_flags.ack() => {
                Err(self.count_drop(svc, None, DropReason::Standby))
            }
            Some(svc) if self.services[svc].l7.is_some() => {
                if self.l7_refuses_at_once(pkt, svc) {
                    self.services[svc].stats.fallback_refused += 1;
                    return self.refuse(nic, frame, pkt, svc);
                }
                self.l7_new(frame, pkt, offload.checksum, svc, now)
            }
            Some(svc) => self.new_flow(nic, frame, pkt, offload.checksum, sent, svc, now),
            None => self
                .outbound_new(nic, frame, pkt, offload.checksum, sent, now)
                .unwrap_or(Ok(Decision::ToStack)),
        }
    }

    /// Whether a packet of `flow` at `now` should refresh the client's
    /// persistence entry, and for how long.
    ///
    /// Refreshing on every packet would cost a second table lookup per
    /// frame. Instead the entry is refreshed when the flow's traffic enters
    /// a new period (a power of two of milliseconds, about 1/16 to 1/32 of
    /// the persistence timeout, at least 1 s), for the timeout plus one
    /// period: the entry still outlives the client's last packet by at least
    /// the timeout. The time of the flow's previous packet is what the
    /// connection table's expiry says (expiry − idle timeout of the state).
    fn persistence_refresh(
        &self,
        flow: &Flow,
        timeout: Duration,
        now: Instant,
    ) -> Option<Duration> {
        let idle = match flow.state {
            TcpState::Established => flow.established_timeout(),
            TcpState::Udp => self.conntrack.timeouts().udp,
            // Handshake and closing are short-lived: refresh every time.
            _ => return Some(timeout),
        };
        let shift = refresh_period_shift(timeout);
        let previous = flow.expires.millis().saturating_sub(idle.millis());
        ((previous >> shift) != (now.millis() >> shift))
            .then_some(Duration::from_millis(timeout.millis() + (1 << shift)))
    }

    /// Binds `client` to `server`, unless a live binding exists already
    /// (then it is refreshed: two flows of a new client that raced through
    /// their handshakes keep the first one's server for the next flows).
    fn persist_client(
        &mut self,
        service: u16,
        client: Ipv4Addr,
        mask: Ipv4Addr,
        server: u16,
        timeout: Duration,
        now: Instant,
    ) {
        if self.persist.lookup(service, client, mask, now).is_some() {
            self.persist.touch(service, client, mask, timeout, now);
        } else {
            // A full persistence table only costs stickiness, not the
            // flow; the table counts the refusal.
            if self
                .persist
                .insert(service, client, mask, server, timeout, now)
                .is_ok()
            {
                self.journal_persist(service, client, server, timeout);
            }
        }
    }

    /// Rewrites and routes a packet of a tracked flow.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        pkt: &L4Packet,
        checksum: L4Checksum,
        sent: Sent,
        flow: &Flow,
        dir: Direction,
    ) -> Result<Decision, DropReason> {
        let (svc, srv) = (usize::from(flow.service), usize::from(flow.server));
        let service = &self.services[svc];
        let reply = flow.has_reply_key().then_some(flow.reply);
        let result = match (service.forwarding, dir, reply) {
            (Forwarding::Dr, Direction::Original, _) => {
                let rs = service.servers[srv].ip;
                Ok(Decision::Forward {
                    nic: self.routes.on_link(rs).unwrap_or(nic),
                    next_hop: rs,
                })
            }
            (_, Direction::Original, Some(reply)) => {
                self.route_translated(frame, pkt, checksum, reply.dst, reply.src)
            }
            (_, Direction::Reply, _) => {
                self.route_translated(frame, pkt, checksum, flow.original.dst, flow.original.src)
            }
            // A DR or layer 7 flow seen in the reply direction, or a NAT flow
            // without reply key: not ours to forward.
            _ => Ok(Decision::ToStack),
        };
        let service = &mut self.services[svc];
        match result {
            Ok(Decision::Forward { .. }) => {
                service.stats.service.forwarded(sent.packets, sent.bytes);
                service.stats.servers[srv].forwarded(sent.packets, sent.bytes);
            }
            Err(reason) => {
                service.stats.service.dropped(reason);
                service.stats.servers[srv].dropped(reason);
            }
            _ => {}
        }
        result
    }

    /// NAT/SNAT: rewrites the endpoints (the router's TTL step included)
    /// and finds the way to the new destination.
    fn route_translated(
        &self,
        frame: &mut [u8],
        pkt: &L4Packet,
        checksum: L4Checksum,
        src: Endpoint,
        dst: Endpoint,
    ) -> Result<Decision, DropReason> {
        let (nic, next_hop) = self.routes.route(dst.addr).ok_or(DropReason::NoRoute)?;
        frame::translate_with(frame, pkt, src, dst, Ttl::Decrement, checksum)?;
        Ok(Decision::Forward { nic, next_hop })
    }

    fn count_drop(&mut self, svc: usize, srv: Option<usize>, reason: DropReason) -> DropReason {
        if let Some(service) = self.services.get_mut(svc) {
            service.stats.service.dropped(reason);
            if let Some(c) = srv.and_then(|s| service.stats.servers.get_mut(s)) {
                c.dropped(reason);
            }
        }
        reason
    }

    #[allow(clippy::too_many_arguments)]
    fn new_flow(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        pkt: &L4Packet,
        checksum: L4Checksum,
        sent: Sent,
        svc: usize,
        now: Instant,
    ) -> Result<Decision, DropReason> {
        let f = pkt.tcp_flags;
        if pkt.key.proto == Protocol::Tcp && !(f.syn() && !f.ack() && !f.rst() && !f.fin()) {
            return Err(self.count_drop(svc, None, DropReason::NoFlow));
        }
        if self.standby || self.shutdown.is_some() {
            return Err(self.count_drop(svc, None, DropReason::Standby));
        }
        let client = pkt.key.src.addr;
        let picked = self.choose_server(svc, client, now, 0, 0);
        let service = &mut self.services[svc];
        let (srv, persistent, to_fallback) = match (picked, service.fallback) {
            (Some((srv, persistent)), _) => (srv, persistent, false),
            (None, FallbackRuntime::Server(fb)) => (fb, false, true),
            (None, FallbackRuntime::Local) if pkt.key.proto == Protocol::Tcp => {
                service.stats.fallback_refused += 1;
                return self.refuse(nic, frame, pkt, svc);
            }
            (None, FallbackRuntime::Page) if pkt.key.proto == Protocol::Tcp => {
                return self.page_syn(frame, pkt, svc, now);
            }
            (None, _) => return Err(self.count_drop(svc, None, DropReason::NoRealServer)),
        };
        let service = &mut self.services[svc];
        let server = service.server_endpoint(srv, pkt.key.dst.port);
        let forwarding = service.forwarding;
        if forwarding != Forwarding::Dr && pkt.ip.ttl <= 1 {
            return Err(self.count_drop(svc, Some(srv), DropReason::TtlExpired));
        }
        let reply = match forwarding {
            Forwarding::Dr | Forwarding::Layer7 => None,
            Forwarding::Nat => {
                if self.routes.route(server.addr).is_none() {
                    return Err(self.count_drop(svc, Some(srv), DropReason::NoRoute));
                }
                Some(FlowKey {
                    proto: pkt.key.proto,
                    src: server,
                    dst: pkt.key.src,
                })
            }
            Forwarding::Snat => {
                let Some((out_nic, _)) = self.routes.route(server.addr) else {
                    return Err(self.count_drop(svc, Some(srv), DropReason::NoRoute));
                };
                let Some(own) = self.routes.snat_source(out_nic) else {
                    return Err(self.count_drop(svc, Some(srv), DropReason::NoRoute));
                };
                let Some(port) = self.snat_port(svc, srv, pkt.key.proto, server.addr) else {
                    return Err(self.count_drop(svc, Some(srv), DropReason::PortsExhausted));
                };
                Some(FlowKey {
                    proto: pkt.key.proto,
                    src: server,
                    dst: Endpoint::new(own, port),
                })
            }
        };
        let timeout = self.services[svc].established_timeout;
        let id = match self.track(pkt.key, reply, (svc, srv), timeout, now) {
            Ok(id) => id,
            Err(e) => {
                let reason = insert_drop_reason(&e);
                // Another live flow has this 5-tuple; if it is our SNAT
                // reply key, that flow owns the port and frees it.
                let taken = matches!(e, InsertError::KeyInUse { id, .. } if self
                    .conntrack
                    .flow(id)
                    .is_some_and(|f| f.has_reply_key() && Some(f.reply) == reply));
                if let (Some(reply), Some(i), false) =
                    (reply, self.services[svc].snat_allocator[srv], taken)
                {
                    self.snat_ports[i].free(reply.dst.port);
                }
                return Err(self.count_drop(svc, Some(srv), reason));
            }
        };
        // A new TCP client is bound to its server only once its handshake
        // completes (its first ACK, in `l4`): spoofed SYNs never answer the
        // server, so a SYN flood cannot fill the persistence table nor make
        // the appliance forget real clients. UDP has no handshake: the first
        // datagram binds the client. Fallback flows leave no persistence:
        // the client returns to a real server as soon as one is up.
        self.flow_started(
            svc,
            srv,
            client,
            persistent && !to_fallback,
            pkt.key.proto == Protocol::Udp && !to_fallback,
            now,
        );
        if pkt.key.proto == Protocol::Tcp {
            self.conntrack.touch(
                id,
                Direction::Original,
                Some(ConnFlags(pkt.tcp_flags.0)),
                now,
            );
        } else {
            self.journal_flow(id, now);
        }
        let Some(&flow) = self.conntrack.flow(id) else {
            return Ok(Decision::ToStack);
        };
        self.forward(nic, frame, pkt, checksum, sent, &flow, Direction::Original)
    }

    /// Tracks a new flow of (service, server), reclaiming a little first
    /// so tables and SNAT ports are recycled even if the caller's expiry
    /// tick is late.
    fn track(
        &mut self,
        key: FlowKey,
        reply: Option<FlowKey>,
        (svc, srv): (usize, usize),
        timeout: Duration,
        now: Instant,
    ) -> Result<crate::conntrack::FlowId, InsertError> {
        let Engine {
            services,
            conntrack,
            snat_ports,
            ..
        } = self;
        conntrack.expire(now, 2, &mut |f: &Flow| {
            on_flow_removed(services, snat_ports, f)
        });
        conntrack.insert(
            key,
            reply,
            svc as u16,
            srv as u16,
            timeout,
            now,
            &mut |f: &Flow| on_flow_removed(services, snat_ports, f),
        )
    }

    /// `fallback = "local"` with no server up: the SYN is answered with a
    /// reset from the VIP, routed back to the client.
    fn refuse(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        pkt: &L4Packet,
        svc: usize,
    ) -> Result<Decision, DropReason> {
        let client = pkt.key.src.addr;
        let (out, next_hop) = match self.routes.route(client) {
            Some(r) => r,
            None => (nic, client),
        };
        if frame::refuse::reset_in_place(frame, pkt).is_none() {
            return Err(self.count_drop(svc, None, DropReason::NoRealServer));
        }
        Ok(Decision::Forward { nic: out, next_hop })
    }

    /// The real server for a new flow of service `svc` from `client`: the
    /// one persistence binds the client to, if it may still take it, else
    /// the scheduler's choice (avoiding the servers in `exclude`, a bit per
    /// index, unless only they are eligible: a layer 7 retry). Returns the
    /// index and whether it came from persistence.
    fn choose_server(
        &mut self,
        svc: usize,
        client: Ipv4Addr,
        now: Instant,
        exclude: u64,
        route_exclude: u64,
    ) -> Option<(usize, bool)> {
        let service = &mut self.services[svc];
        let routed = |srv: usize| srv >= 64 || route_exclude & (1 << srv) == 0;
        if exclude == 0
            && let Some((mask, _)) = service.persistence
            && let Some(srv) = self.persist.lookup(svc as u16, client, mask, now)
            && routed(usize::from(srv))
            && service
                .servers
                .get(usize::from(srv))
                .is_some_and(persistence_allows)
        {
            return Some((usize::from(srv), true));
        }
        // Servers already tried are avoided while others remain; servers
        // outside the route never take the connection.
        for mask in [exclude | route_exclude, route_exclude] {
            if mask == 0 {
                continue;
            }
            let mut view = service.servers.clone();
            for (i, s) in view.iter_mut().enumerate() {
                if i < 64 && mask & (1 << i) != 0 {
                    s.health = Health::Down;
                }
            }
            let srv = service.scheduler.pick(&view, client);
            if srv.is_some() || mask == route_exclude {
                return srv.map(|srv| (srv, false));
            }
        }
        service
            .scheduler
            .pick(&service.servers, client)
            .map(|srv| (srv, false))
    }

    /// Bookkeeping for a new flow of `svc` from `client` given to `srv`:
    /// the server's flow count, counters, and persistence — refreshed when
    /// it chose the server, recorded now when `bind` (a client proven by a
    /// completed handshake, or UDP).
    fn flow_started(
        &mut self,
        svc: usize,
        srv: usize,
        client: Ipv4Addr,
        persistent: bool,
        bind: bool,
        now: Instant,
    ) {
        let service = &mut self.services[svc];
        service.servers[srv].flow_opened();
        service.stats.service.connections += 1;
        service.stats.servers[srv].connections += 1;
        if let Some((mask, ptimeout)) = service.persistence {
            if persistent {
                self.persist.touch(svc as u16, client, mask, ptimeout, now);
            } else if bind {
                self.persist_client(svc as u16, client, mask, srv as u16, ptimeout, now);
            }
        }
    }

    fn icmp_error(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        err: &IcmpError,
        now: Instant,
    ) -> Result<Decision, DropReason> {
        // The quote is a packet the appliance sent: its reverse is a key the
        // connection table knows, in the direction of the packets that
        // arrive here.
        let Some(flow) = self
            .conntrack
            .get(&err.quoted.key.reversed(), now)
            .and_then(|(id, dir)| Some((*self.conntrack.flow(id)?, dir)))
        else {
            return Ok(Decision::ToStack);
        };
        let (flow, dir) = flow;
        let (svc, srv) = (usize::from(flow.service), usize::from(flow.server));
        let Some(service) = self.services.get(svc) else {
            return Ok(Decision::ToStack);
        };
        let reply = flow.has_reply_key().then_some(flow.reply);
        let translation = match (service.forwarding, dir, reply) {
            (Forwarding::Dr, Direction::Original, _) => {
                // About a packet the server sent from the VIP: its business.
                let rs = service.servers[srv].ip;
                let nic = self.routes.on_link(rs).unwrap_or(nic);
                self.services[svc].stats.servers[srv].forwarded(1, err.ip.total_len.into());
                return Ok(Decision::Forward { nic, next_hop: rs });
            }
            // About a packet sent towards the server: tell the client, as
            // if it came from the VIP.
            (_, Direction::Reply, _) => IcmpTranslation {
                outer_src: flow.original.dst.addr,
                outer_dst: flow.original.src.addr,
                quoted_src: flow.original.src,
                quoted_dst: flow.original.dst,
            },
            // About a reply sent towards the client: tell the server, about
            // the packet it sent.
            (fwd, Direction::Original, Some(reply)) => IcmpTranslation {
                outer_src: if fwd == Forwarding::Snat || flow.is_outbound() {
                    reply.dst.addr
                } else {
                    err.ip.src
                },
                outer_dst: reply.src.addr,
                quoted_src: reply.src,
                quoted_dst: reply.dst,
            },
            _ => return Ok(Decision::ToStack),
        };
        let result = self
            .routes
            .route(translation.outer_dst)
            .ok_or(DropReason::NoRoute)
            .and_then(|(nic, next_hop)| {
                frame::translate_icmp_error(frame, err, &translation, Ttl::Decrement)?;
                Ok(Decision::Forward { nic, next_hop })
            });
        match result {
            Ok(d) => {
                let s = &mut self.services[svc].stats;
                s.service.forwarded(1, err.ip.total_len.into());
                s.servers[srv].forwarded(1, err.ip.total_len.into());
                Ok(d)
            }
            Err(r) => Err(self.count_drop(svc, Some(srv), r)),
        }
    }

    /// Frees table entries and SNAT ports of flows that have been idle past
    /// their timeout; examines at most `budget` entries of each table.
    /// Runs the layer 7 timers (connect retries, PROXY retransmission)
    /// and resets idle layer 7 connections; drain the outbox after it.
    /// Returns the number of entries removed.
    pub fn expire(&mut self, now: Instant, budget: usize) -> usize {
        let l7 = self.l7_expire(now, budget);
        let Engine {
            services,
            conntrack,
            snat_ports,
            persist,
            ..
        } = self;
        l7 + conntrack.expire(now, budget, &mut |f: &Flow| {
            on_flow_removed(services, snat_ports, f)
        }) + persist.expire(now, budget)
    }

    fn server_mut(&mut self, service: usize, server: usize) -> Option<&mut RealServerState> {
        self.services.get_mut(service)?.servers.get_mut(server)
    }

    /// Health-check verdict for a real server. A server that goes down
    /// loses its persistence entries (its clients move on their next new
    /// flow); its established flows are kept, since the server may still
    /// serve them and cutting a DICOM association loses a study.
    pub fn set_server_health(&mut self, service: usize, server: usize, up: bool) -> bool {
        let Some(state) = self.server_mut(service, server) else {
            return false;
        };
        state.health = if up { Health::Up } else { Health::Down };
        if !up {
            self.persist.drop_server(service as u16, server as u16);
        }
        true
    }

    /// Scheduling weight of a real server (a feedback agent's share of the
    /// configured weight); 0 takes no new flows. Existing flows continue.
    pub fn set_server_weight(&mut self, service: usize, server: usize, weight: u32) -> bool {
        let Some(state) = self.server_mut(service, server) else {
            return false;
        };
        state.weight = weight.min(crate::config::MAX_WEIGHT);
        true
    }

    /// Administrative state of a real server (online, drain, halt). Halt
    /// drops the server's flows and persistence entries.
    pub fn set_server_admin(&mut self, service: usize, server: usize, admin: AdminState) -> bool {
        let Some(state) = self.server_mut(service, server) else {
            return false;
        };
        state.admin = admin;
        if admin == AdminState::Halt {
            self.persist.drop_server(service as u16, server as u16);
            let Engine {
                services,
                conntrack,
                snat_ports,
                ..
            } = self;
            conntrack.remove_server(service as u16, server as u16, &mut |f: &Flow| {
                on_flow_removed(services, snat_ports, f)
            });
            self.l7_halt(service, server);
        }
        true
    }

    /// The source address of SNAT flows leaving on `nic`: the pair's
    /// floating address there (so a flow means the same on both
    /// appliances), `None` for the interface's own address.
    pub fn set_snat_source(&mut self, nic: usize, addr: Option<Ipv4Addr>) -> bool {
        self.routes.set_snat_source(nic, addr)
    }

    /// Sets the address of interface `nic` (after DHCP or the console
    /// wizard); `None` removes it.
    pub fn set_interface_address(&mut self, nic: usize, addr: Option<(Ipv4Addr, u8)>) -> bool {
        self.routes.set_address(nic, addr)
    }

    pub fn set_gateway(&mut self, gateway: Option<Ipv4Addr>) {
        self.routes.set_gateway(gateway);
    }

    /// Interface and next hop towards `dst`: its connected subnet, else
    /// the gateway.
    pub fn route(&self, dst: Ipv4Addr) -> Option<(usize, Ipv4Addr)> {
        self.routes.route(dst)
    }

    /// Frames dropped, by reason (all of them, whether or not they could be
    /// attributed to a virtual service).
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    pub fn service_stats(&self, service: usize) -> Option<&ServiceStats> {
        Some(&self.services.get(service)?.stats)
    }

    pub fn server_state(&self, service: usize, server: usize) -> Option<&RealServerState> {
        self.services.get(service)?.servers.get(server)
    }

    pub fn conntrack(&self) -> &ConnTable {
        &self.conntrack
    }

    pub fn persistence(&self) -> &PersistTable {
        &self.persist
    }

    /// The ports of `service`'s outbound flows (`outbound_snat`) for
    /// `proto`.
    pub fn outbound_ports(&self, service: usize, proto: Protocol) -> Option<&PortAllocator> {
        let idx = self.services.get(service)?.outbound?;
        self.snat_ports.get(idx[outbound::slot(proto)])
    }

    /// SNAT ports in use towards a real server of a SNAT service.
    pub fn snat_ports(&self, service: usize, server: usize) -> Option<&PortAllocator> {
        let i = (*self.services.get(service)?.snat_allocator.get(server)?)?;
        self.snat_ports.get(i)
    }
}

/// The configured real servers, then the fallback server if there is one.
/// The VIP lookup (every port of every configured service) and the sorted
/// addresses of NAT, SNAT and layer 7 real servers (including fallbacks).
fn lookups(config: &Config, services: &[ServiceRuntime]) -> (Vec<(VipKey, u16)>, Vec<Ipv4Addr>) {
    let mut vips = Vec::new();
    for (idx, vs) in config.virtual_services.iter().enumerate() {
        for &port in vs.ports.iter() {
            vips.push((
                VipKey {
                    addr: u32::from(vs.vip),
                    port,
                    proto: vs.protocol,
                },
                idx as u16,
            ));
        }
    }
    // Draining services (behind the configured ones) keep their servers'
    // replies recognised.
    let mut nat_servers: Vec<Ipv4Addr> = services
        .iter()
        .filter(|rt| rt.forwarding != Forwarding::Dr)
        .flat_map(|rt| rt.server_config.iter().map(|r| r.ip))
        .collect();
    vips.sort_unstable();
    nat_servers.sort_unstable();
    nat_servers.dedup();
    (vips, nat_servers)
}

fn servers_with_fallback(vs: &VirtualService) -> Vec<RealServer> {
    let mut servers = vs.real_servers.clone();
    if let Some(Fallback::Server { ip, port }) = &vs.fallback {
        servers.push(RealServer {
            label: String::from("fallback"),
            ip: *ip,
            port: *port,
            // Never scheduled: only taken when nothing else may be.
            weight: 0,
            min_connections: 0,
            max_connections: 0,
            state: AdminState::Online,
            check_port: None,
            agent_port: None,
            send_proxy: crate::config::SendProxy::None,
        });
    }
    servers
}

impl ServiceRuntime {
    /// The runtime of `vs`, its SNAT and layer 7 servers given port spaces
    /// from `snat`.
    fn build(vs: &VirtualService, config: &Config, snat: &mut apply::SnatPorts) -> Self {
        let servers = servers_with_fallback(vs);
        let proxied = vs.forwarding == Forwarding::Snat
            || (vs.forwarding == Forwarding::Layer7 && !vs.l7_transparent);
        // Layer 7 is TCP; it shares SNAT's port spaces, so the two never
        // hand out the same reply 4-tuple. One port space per (protocol,
        // server address): the reply 5-tuple is then unique whatever the
        // ports.
        let allocators = servers
            .iter()
            .map(|rs| proxied.then(|| snat.index((vs.protocol, rs.ip))))
            .collect();
        let mut rt = ServiceRuntime::from_config(vs, config, servers, allocators);
        rt.outbound = outbound::allocators(vs, snat);
        rt
    }

    fn from_config(
        vs: &VirtualService,
        config: &Config,
        servers: Vec<RealServer>,
        snat_allocator: Vec<Option<usize>>,
    ) -> Self {
        let fallback = match &vs.fallback {
            None => FallbackRuntime::None,
            Some(Fallback::Server { .. }) => FallbackRuntime::Server(vs.real_servers.len()),
            Some(Fallback::Local) => FallbackRuntime::Local,
            Some(Fallback::Page(_)) => FallbackRuntime::Page,
        };
        ServiceRuntime {
            vip: Endpoint::new(vs.vip, vs.ports.first().copied().unwrap_or(0)),
            protocol: vs.protocol,
            forwarding: vs.forwarding,
            // An identity (calling AE, HL7 sender) is a key, not an address
            // to mask.
            persistence: vs
                .persistence_mask()
                .map(|m| match vs.persistence {
                    crate::config::PersistenceKey::SourceIp => m,
                    _ => Ipv4Addr::BROADCAST,
                })
                .zip(vs.persistence_duration()),
            established_timeout: vs.established_timeout(&config.l4),
            scheduler: Scheduler::for_service(vs),
            servers: servers.iter().map(RealServerState::from_config).collect(),
            l7: l7::L7Service::from_config(vs),
            aware: crate::aware::Awareness::from_config(vs),
            outbound: None,
            stats: ServiceStats {
                service: Counters::default(),
                servers: alloc::vec![Counters::default(); servers.len()],
                fallback_refused: 0,
                fallback_syns: 0,
                fallback_pages: 0,
                outbound: 0,
            },
            server_config: servers,
            snat_allocator,
            fallback,
            page: match &vs.fallback {
                Some(Fallback::Page(body)) => Some(page::response(body)),
                _ => None,
            },
        }
    }
}

/// What a forwarded frame puts on the wire, for the counters: a
/// super-frame leaves as several segments, each with its own headers.
#[derive(Clone, Copy, Debug)]
struct Sent {
    packets: u64,
    bytes: u64,
}

impl Sent {
    fn of(frame: &[u8], pkt: &L4Packet, offload: &Offload) -> Sent {
        let total = u64::from(pkt.ip.total_len);
        let l4 = pkt.ip.transport_offset();
        let l4_header = match pkt.key.proto {
            Protocol::Tcp => frame.get(l4 + 12).map_or(20, |b| usize::from(b >> 4) * 4),
            Protocol::Udp => 8,
        };
        let headers = usize::from(pkt.ip.header_len) + l4_header;
        let payload = usize::from(pkt.ip.total_len).saturating_sub(headers);
        let packets = offload.wire_frames(payload);
        Sent {
            packets,
            bytes: total + (packets - 1) * headers as u64,
        }
    }
}

/// log2 of the persistence refresh period: the largest power of two of
/// milliseconds not above timeout/16, and at least 2^10 ms.
fn refresh_period_shift(timeout: Duration) -> u32 {
    let sixteenth = (timeout.millis() / 16).max(1024);
    63 - sixteenth.leading_zeros()
}

/// Persistence sends a client back to its server unless the server is down
/// or halted; a drained server keeps its persistent clients (that is what
/// lets their sessions finish).
fn persistence_allows(s: &RealServerState) -> bool {
    s.admin != AdminState::Halt && s.health != Health::Down
}

/// Why a new flow the connection table refused is dropped.
fn insert_drop_reason(e: &InsertError) -> DropReason {
    match e {
        InsertError::Full => DropReason::ConnTableFull,
        InsertError::SourceLimit => DropReason::SourceLimit,
        InsertError::KeyInUse { .. } => DropReason::KeyInUse,
    }
}

/// Bookkeeping when the connection table lets go of a flow.
/// Most slab entries a SNAT port's early drop examines (see
/// [`Engine::snat_port`]).
const SNAT_EARLY_DROP_SCAN: usize = 4 * crate::conntrack::EARLY_DROP_SCAN;

impl Engine {
    /// A source port for a new SNAT flow of `proto` to the real server
    /// `srv` (at `server`) of service `svc`. When every port towards that
    /// server is taken, a TCP flow evicts a half-open SNAT flow to the same
    /// server (counted as an early drop) and takes its port: a spoofed SYN
    /// flood at a SNAT VIP holds a port per fake handshake, and without
    /// this it would refuse real clients until the handshakes time out,
    /// long before the table's half-open cap is reached.
    fn snat_port(
        &mut self,
        svc: usize,
        srv: usize,
        proto: Protocol,
        server: Ipv4Addr,
    ) -> Option<u16> {
        let i = self.services[svc].snat_allocator[srv]?;
        if let Some(port) = self.snat_ports.get_mut(i)?.allocate() {
            return Some(port);
        }
        if proto != Protocol::Tcp {
            return None;
        }
        let Engine {
            services,
            conntrack,
            snat_ports,
            ..
        } = self;
        // A SNAT flow's replies come from the server to the appliance (a
        // NAT flow's go to the client): the allocator is per (protocol,
        // server address).
        let evicted = conntrack.early_drop_where(
            SNAT_EARLY_DROP_SCAN,
            |f| {
                f.has_reply_key()
                    && !f.is_outbound()
                    && f.original.proto == proto
                    && f.reply.src.addr == server
                    && f.reply.dst.addr != f.original.src.addr
            },
            &mut |f: &Flow| on_flow_removed(services, snat_ports, f),
        );
        if evicted {
            snat_ports.get_mut(i)?.allocate()
        } else {
            None
        }
    }
}

fn on_flow_removed(services: &mut [ServiceRuntime], snat_ports: &mut [PortAllocator], flow: &Flow) {
    if flow.is_outbound() {
        // Not a connection of the server's: only its port to give back.
        outbound::free_port(services, snat_ports, flow);
        return;
    }
    let Some(service) = services.get_mut(usize::from(flow.service)) else {
        return;
    };
    let srv = usize::from(flow.server);
    if let Some(state) = service.servers.get_mut(srv) {
        state.flow_closed();
    }
    if let (true, Some(Some(i))) = (flow.has_reply_key(), service.snat_allocator.get(srv))
        && let Some(ports) = snat_ports.get_mut(*i)
    {
        ports.free(flow.reply.dst.port);
    }
}
