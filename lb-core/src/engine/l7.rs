//! Layer 7 services in the engine: the TCP splice relay (see
//! [`crate::splice`] for how a connection goes).
//!
//! The relay's connections live in a second [`ConnTable`] (the same table
//! type as L4 flows, with the splice state as per-flow data): the original
//! key is the client's 4-tuple (client → VIP:port), the reply key the real
//! server's (server → appliance:port, or → client when transparent). The
//! relay originates segments (SYN-ACKs, SYNs, ACKs with the PROXY header,
//! RSTs, released early data): they wait in the engine's outbox, which the
//! caller drains after every [`Engine::process`] and [`Engine::expire`].
//!
//! Bounds, and what happens when each is reached (all counted in
//! [`L7Stats`]):
//! - connection table full: a completed client handshake is answered with
//!   a RST (`table_full`); a new SYN still gets a SYN cookie;
//! - half-open entries at `l7.half_open`: new SYNs get stateless SYN
//!   cookies (`cookies_sent`), established connections are unaffected;
//! - early data over 4 KiB or 4 segments for one connection, or over
//!   `l7.hold_bytes` in all: the segment is dropped unacknowledged
//!   (`hold_full`) and the client retransmits it;
//! - outbox at [`OUTBOX_LIMIT`] frames (the caller stopped draining):
//!   further originated frames are dropped (`outbox_full`); TCP recovers.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::{Decision, Engine, FallbackRuntime, Sent, ServiceRuntime, refresh_period_shift};
use crate::aware::Outcome;
use crate::config::{AdminState, Forwarding, VirtualService};
use crate::conntrack::{ConnTable, Direction, Flow, FlowId, InsertError, TcpState, Timeouts};
use crate::flow::{Endpoint, FlowKey, Protocol};
use crate::frame::offload::{L4Checksum, Offload, complete_checksum};
use crate::frame::{self, Class, DropReason, L4Packet, PortAllocator};
use crate::splice::options::parse_syn;
use crate::splice::segment::{self, seq_ge};
use crate::splice::{
    Conn, Cookies, HOLD_PER_CONN, HOLD_SEGMENTS, Originate, Phase, ProxyRepr, Seg, SynOptions,
};
use crate::time::{Duration, Instant};
use crate::wire::dicom::{self, AbortRepr, AeTitle};

/// Most frames waiting in the outbox.
pub const OUTBOX_LIMIT: usize = 4096;
/// Server index of a connection not bound to a server yet.
pub(super) const UNBOUND: u16 = u16::MAX;
/// First retransmission interval of our SYN and PROXY header.
const FIRST_RTO_MS: u32 = 1000;
const PROXY_RTO_MS: u32 = 300;
const MAX_RTO_MS: u32 = 8000;
/// Most aborted associations whose A-ABORTs are resent at once (beyond,
/// the A-ABORT is sent once).
pub const MAX_ABORTING: usize = 1024;
/// How long an aborted association's entry stays to resend its A-ABORTs.
const ABORT_LINGER: Duration = Duration::from_secs(30);
/// Length of the A-ABORT PDU.
const ABORT_LEN: u32 = crate::wire::dicom::SHORT_PDU_LEN as u32;

/// How long a DICOM association whose server was halted in the middle of
/// a PDU may take, from its last segment, to reach a PDU boundary (then it
/// ends with an A-ABORT) before it is reset.
pub const HALT_GRACE: Duration = Duration::from_secs(10);

/// A frame the engine originated: send it on `nic` to the MAC of
/// `next_hop` (the caller writes both MAC addresses, as for forwards).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub nic: usize,
    pub next_hop: Ipv4Addr,
    pub frame: Vec<u8>,
}

/// Counters of the relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct L7Stats {
    /// Client SYNs answered.
    pub syns: u64,
    /// SYNs answered with a cookie and no table entry (over the half-open
    /// threshold, or the table was full).
    pub cookies_sent: u64,
    /// Handshakes completed by a valid cookie.
    pub cookies_accepted: u64,
    /// ACKs to a VIP that matched no connection and no valid cookie.
    pub cookies_rejected: u64,
    /// SYNs sent to real servers (first attempts and retries).
    pub connects: u64,
    /// Connect attempts that were retries (after a refusal or timeout).
    pub retries: u64,
    /// Real servers that refused (RST) a connect.
    pub refused: u64,
    /// Real servers that did not answer within `connect_timeout`.
    pub connect_timeouts: u64,
    /// Clients reset because every attempt failed or no server was
    /// eligible.
    pub failed: u64,
    /// Connections spliced (server handshake complete).
    pub spliced: u64,
    /// Early client segments held, and refused for lack of room.
    pub held: u64,
    pub hold_full: u64,
    /// Connections reset on both sides for idleness.
    pub idle_closed: u64,
    /// Connections reset because their server was halted.
    pub halted: u64,
    pub syn_retransmits: u64,
    pub proxy_retransmits: u64,
    /// Completed handshakes refused because the table was full.
    pub table_full: u64,
    pub outbox_full: u64,
    /// Protocol-aware services: connections routed by their first bytes,
    /// refused by the appliance (no route: A-ASSOCIATE-RJ, HL7 AR), and
    /// whose first bytes were not the protocol (A-ABORT or reset).
    pub aware_routed: u64,
    pub aware_refused: u64,
    pub aware_not_protocol: u64,
    /// The appliance's own answers resent for lack of acknowledgement.
    pub answer_retransmits: u64,
    /// DICOM-aware connections ended (halt, idle timeout) with an A-ABORT
    /// to both sides instead of resets.
    pub aborts_sent: u64,
    /// Segments that began a new PDU of an association being halted, held
    /// back until it ends between PDUs.
    pub halt_held: u64,
    /// A-ABORTs sent again (the first was not acknowledged).
    pub abort_retransmits: u64,
}

/// Most AE title (or HL7 application) pairs counted; later pairs are
/// counted in [`L7Stats`] only (`pairs_full`).
pub const MAX_PAIRS: usize = 256;

/// Counters of one (called, calling) pair of a protocol-aware service.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairStats {
    pub service: u16,
    pub pair: Option<crate::aware::Pair>,
    pub routed: u64,
    pub refused: u64,
    /// Bytes relayed both ways for the pair's routed connections.
    pub bytes: u64,
}

/// Per-service layer 7 settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct L7Service {
    connect_timeout: Duration,
    retries: u8,
    client_timeout: Duration,
    server_timeout: Duration,
    transparent: bool,
    /// Content-routing hook: bytes of client data to wait for before
    /// choosing the server (0: choose as soon as the handshake completes,
    /// which is what plain layer 7 does). The bytes are given to
    /// [`Engine::choose_server`]'s caller, [`Engine::l7_bind`].
    bind_after: u16,
}

impl L7Service {
    pub(super) fn from_config(vs: &VirtualService) -> Option<Self> {
        (vs.forwarding == Forwarding::Layer7).then(|| L7Service {
            connect_timeout: vs.connect_timeout.duration(),
            retries: vs.retries,
            client_timeout: vs.client_timeout.duration(),
            server_timeout: vs.server_timeout.duration(),
            transparent: vs.l7_transparent,
            // Protocol-aware: the first byte starts the reading.
            bind_after: u16::from(vs.protocol_aware != crate::config::ProtocolAware::None),
        })
    }
}

/// How a received frame was offloaded, and what forwarding it counts as.
#[derive(Clone, Copy, Debug)]
struct Wire {
    checksum: L4Checksum,
    sent: Sent,
}

/// Early data of a connection whose server is not connected yet.
#[derive(Clone, Debug)]
struct Held {
    id: FlowId,
    generation: u32,
    seq: u32,
    frame: Vec<u8>,
}

/// The relay's state besides its connection table.
pub(super) struct L7 {
    cookies: Cookies,
    half_open: usize,
    half_open_limit: usize,
    generation: u32,
    /// Connections with a running timer (connecting, PROXY unacknowledged).
    timers: Vec<(FlowId, u32)>,
    held: Vec<Held>,
    held_bytes: usize,
    hold_limit: usize,
    pub(super) outbox: Vec<Outgoing>,
    pub(super) stats: L7Stats,
    linger: Duration,
    handshake: Duration,
    /// Set while a halt removes connections (they count as halted, not
    /// idle).
    halting: bool,
    /// Answers the appliance sent clients itself, kept for resending.
    answers: Vec<Held>,
    /// Connections just aborted, to be tracked again (phase `Aborted`) so
    /// their A-ABORTs are resent until acknowledged.
    aborted: Vec<Flow<Conn>>,
    pub(super) pairs: Vec<PairStats>,
    pub(super) pairs_full: u64,
    /// Numbers the control IDs of HL7 rejects.
    rejects: u32,
}

impl L7 {
    pub(super) fn new(half_open: usize, hold_bytes: usize, timeouts: &Timeouts, seed: u64) -> L7 {
        L7 {
            cookies: Cookies::new(seed ^ 0x636f_6f6b_6965),
            half_open: 0,
            half_open_limit: half_open,
            generation: 0,
            timers: Vec::new(),
            held: Vec::new(),
            held_bytes: 0,
            hold_limit: hold_bytes,
            outbox: Vec::new(),
            stats: L7Stats::default(),
            linger: timeouts.reset,
            handshake: timeouts.handshake,
            halting: false,
            answers: Vec::new(),
            aborted: Vec::new(),
            pairs: Vec::new(),
            pairs_full: 0,
            rejects: 0,
        }
    }

    /// Whether connections just aborted wait to be tracked again.
    pub(super) fn has_aborted(&self) -> bool {
        !self.aborted.is_empty()
    }

    /// Counts a routed or refused connection of `pair`; the counter's
    /// index, unless the pair table is full.
    fn count_pair(
        &mut self,
        service: u16,
        pair: crate::aware::Pair,
        refused: bool,
    ) -> Option<usize> {
        let i = match self
            .pairs
            .iter()
            .position(|p| p.service == service && p.pair == Some(pair))
        {
            Some(i) => i,
            None if self.pairs.len() < MAX_PAIRS => {
                self.pairs.push(PairStats {
                    service,
                    pair: Some(pair),
                    ..PairStats::default()
                });
                self.pairs.len() - 1
            }
            None => {
                self.pairs_full += 1;
                return None;
            }
        };
        if refused {
            self.pairs[i].refused += 1;
        } else {
            self.pairs[i].routed += 1;
        }
        Some(i)
    }

    fn push(&mut self, out: Outgoing) {
        if self.outbox.len() >= OUTBOX_LIMIT {
            self.stats.outbox_full += 1;
        } else {
            self.outbox.push(out);
        }
    }

    /// Routes and queues a segment we originate.
    pub(super) fn send(&mut self, routes: &super::Routes, seg: &Originate) {
        if let Some((nic, next_hop)) = routes.route(seg.dst.addr) {
            self.push(Outgoing {
                nic,
                next_hop,
                frame: seg.frame(),
            });
        }
    }

    /// Takes the held segments `pred` selects out of the pool.
    fn take_held(&mut self, pred: impl Fn(&Held) -> bool) -> Vec<Vec<u8>> {
        let mut taken = Vec::new();
        self.held.retain_mut(|h| {
            if pred(h) {
                taken.push(core::mem::take(&mut h.frame));
                false
            } else {
                true
            }
        });
        self.held_bytes -= taken.iter().map(Vec::len).sum::<usize>();
        taken
    }

    fn drop_held(&mut self, id: FlowId, generation: u32) {
        self.take_held(|h| h.id == id && h.generation == generation);
    }

    fn drop_answer(&mut self, id: FlowId, generation: u32) {
        let before = self.answers.len();
        let mut freed = 0;
        self.answers.retain(|a| {
            let keep = !(a.id == id && a.generation == generation);
            if !keep {
                freed += a.frame.len();
            }
            keep
        });
        if self.answers.len() != before {
            self.held_bytes -= freed;
        }
    }
}

/// What the connection table's removal of a layer 7 connection costs:
/// the server's connection count and source port, and — for a connection
/// that was still alive (idle timeout, halted server) — a RST to each side.
fn on_l7_removed(
    services: &mut [ServiceRuntime],
    snat_ports: &mut [PortAllocator],
    routes: &super::Routes,
    l7: &mut L7,
    flow: &Flow<Conn>,
) {
    let c = &flow.ext;
    match c.phase {
        Phase::SynReceived => l7.half_open = l7.half_open.saturating_sub(1),
        Phase::Closed | Phase::Aborted => {}
        Phase::AwaitingData | Phase::Connecting | Phase::Spliced | Phase::Answered => {
            if l7.halting || c.halting {
                l7.stats.halted += 1;
            } else {
                l7.stats.idle_closed += 1;
            }
            let (client, vip) = (flow.original.src, flow.original.dst);
            if c.quiet_between_pdus() {
                // Both peers log a clean abort instead of a reset.
                let abort = AbortRepr::BY_PROVIDER.emit();
                l7.stats.aborts_sent += 1;
                l7.send(routes, &c.abort_client(client, vip, &abort));
                l7.send(routes, &c.abort_server(&abort));
                if l7.aborted.len() < MAX_ABORTING {
                    // Tracked again (keeping its server and port) until
                    // both acknowledge; see `Engine::l7_track_aborted`.
                    let mut again = *flow;
                    again.ext.phase = Phase::Aborted;
                    l7.aborted.push(again);
                    return;
                }
                unbind(services, snat_ports, flow);
                return;
            }
            l7.send(routes, &c.reset_client(client, vip));
            if !matches!(c.phase, Phase::AwaitingData | Phase::Answered) {
                l7.send(routes, &c.reset_server());
            }
        }
    }
    unbind(services, snat_ports, flow);
}

/// An aborted connection whose A-ABORTs are not all acknowledged yet.
pub(super) fn abort_pending(c: &Conn) -> bool {
    c.phase == Phase::Aborted && c.abort_acked(ABORT_LEN) != (true, true)
}

/// The key persistence uses for a connection: its protocol identity when
/// the service persists by one, else the client's address.
fn persistence_key(c: &Conn, client: Ipv4Addr) -> Ipv4Addr {
    if c.identity != 0 {
        Ipv4Addr::from(c.identity)
    } else {
        client
    }
}

/// Gives back what a connection's binding to a server took.
fn unbind(services: &mut [ServiceRuntime], snat_ports: &mut [PortAllocator], flow: &Flow<Conn>) {
    let (svc, srv, c) = (flow.service, flow.server, &flow.ext);
    if srv == UNBOUND {
        return;
    }
    let Some(service) = services.get_mut(usize::from(svc)) else {
        return;
    };
    let srv = usize::from(srv);
    if let Some(s) = service.servers.get_mut(srv) {
        s.flow_closed();
    }
    if !c.transparent(flow.original.src.addr)
        && let Some(Some(i)) = service.snat_allocator.get(srv)
        && let Some(ports) = snat_ports.get_mut(*i)
    {
        ports.free(c.local.port);
    }
}

impl Engine {
    /// Splits the engine for a call that may remove layer 7 connections.
    fn l7_remove_cb(&mut self) -> (&mut ConnTable<Conn>, impl FnMut(&Flow<Conn>) + '_) {
        let Engine {
            services,
            snat_ports,
            routes,
            l7,
            l7_table,
            ..
        } = self;
        (l7_table, move |f: &Flow<Conn>| {
            on_l7_removed(services, snat_ports, routes, l7, f)
        })
    }

    /// Frames the engine originated, to send (see [`Outgoing`]).
    pub fn drain_outgoing(&mut self) -> alloc::vec::Drain<'_, Outgoing> {
        self.l7.outbox.drain(..)
    }

    /// Whether originated frames wait in the outbox.
    pub fn has_outgoing(&self) -> bool {
        !self.l7.outbox.is_empty()
    }

    pub fn l7_stats(&self) -> &L7Stats {
        &self.l7.stats
    }

    /// Per (called, calling) pair counters of protocol-aware services, and
    /// how many connections found the pair table full.
    pub fn l7_pairs(&self) -> &[PairStats] {
        &self.l7.pairs
    }

    pub fn l7_pairs_full(&self) -> u64 {
        self.l7.pairs_full
    }

    /// The layer 7 connection table.
    pub fn l7_connections(&self) -> &ConnTable<Conn> {
        &self.l7_table
    }

    /// Half-open layer 7 handshakes held as table entries.
    pub fn l7_half_open(&self) -> usize {
        self.l7.half_open
    }

    /// A segment of a known layer 7 connection.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn l7_segment(
        &mut self,
        frame: &mut [u8],
        pkt: &L4Packet,
        id: FlowId,
        dir: Direction,
        offload: &Offload,
        sent: Sent,
        now: Instant,
    ) -> Result<Decision, DropReason> {
        let wire = Wire {
            checksum: offload.checksum,
            sent,
        };
        let seg = Seg::read(frame, pkt)?;
        let Some(flow) = self.l7_table.flow(id).copied() else {
            return Err(DropReason::NoFlow);
        };
        if flow.server != UNBOUND
            && !flow.ext.halting
            && flow.ext.phase != Phase::Aborted
            && self
                .services
                .get(usize::from(flow.service))
                .and_then(|s| s.servers.get(usize::from(flow.server)))
                .is_some_and(|s| s.admin == AdminState::Halt)
        {
            // Halting resets connections at once; this is a straggler.
            return Err(self.count_drop(
                usize::from(flow.service),
                Some(usize::from(flow.server)),
                DropReason::ServerHalted,
            ));
        }
        match dir {
            Direction::Original => self.l7_from_client(frame, pkt, &seg, id, flow, wire, now),
            Direction::Reply => self.l7_from_server(frame, pkt, &seg, id, flow, wire, now),
        }
    }

    /// `fallback = "local"` and no real server may take a new connection:
    /// a client's SYN is refused at once, as on a layer 4 service, rather
    /// than after its handshake.
    pub(super) fn l7_refuses_at_once(&self, pkt: &L4Packet, svc: usize) -> bool {
        let f = pkt.tcp_flags;
        let service = &self.services[svc];
        f.syn()
            && !f.ack()
            && !f.rst()
            && !f.fin()
            && service.fallback == FallbackRuntime::Local
            && !service
                .servers
                .iter()
                .any(crate::schedule::RealServerState::accepts_new_flows)
    }

    /// A segment to an L7 VIP:port that belongs to no connection: a SYN,
    /// or the ACK that completes a handshake answered with a cookie.
    pub(super) fn l7_new(
        &mut self,
        frame: &mut [u8],
        pkt: &L4Packet,
        checksum: L4Checksum,
        svc: usize,
        now: Instant,
    ) -> Result<Decision, DropReason> {
        let seg = Seg::read(frame, pkt)?;
        let f = seg.flags;
        let (client, vip) = (pkt.key.src, pkt.key.dst);
        if f.syn() && !f.ack() && !f.rst() && !f.fin() {
            let opts = parse_syn(seg.options(frame));
            self.l7.stats.syns += 1;
            let isn = self.l7.cookies.make(&pkt.key, seg.seq, &opts, now);
            self.l7.generation = self.l7.generation.wrapping_add(1);
            let conn = Conn::new(self.l7.generation, seg.seq, isn, &opts, now);
            let mut stored = false;
            if self.l7.half_open < self.l7.half_open_limit {
                let expires = now.add(self.l7.handshake);
                let (table, mut cb) = self.l7_remove_cb();
                if let Ok(id) = table.insert_with(
                    pkt.key,
                    None,
                    (svc as u16, UNBOUND),
                    Duration::from_secs(0),
                    conn,
                    now,
                    &mut cb,
                ) {
                    drop(cb);
                    table.set_state(id, TcpState::Handshake, expires);
                    self.l7.half_open += 1;
                    stored = true;
                }
            }
            if !stored {
                self.l7.stats.cookies_sent += 1;
            }
            self.l7.send(&self.routes, &conn.synack(client, vip));
            return Ok(Decision::Consumed);
        }
        if f.ack() && !f.syn() && !f.rst() {
            let Some(co) = self.l7.cookies.check(&pkt.key, seg.seq, seg.ack, now) else {
                self.l7.stats.cookies_rejected += 1;
                return Err(self.count_drop(svc, None, DropReason::NoFlow));
            };
            self.l7.stats.cookies_accepted += 1;
            let opts = SynOptions {
                mss: Some(co.mss),
                wscale: co.wscale,
                sack_permitted: co.sack_permitted,
                timestamps: false,
            };
            self.l7.generation = self.l7.generation.wrapping_add(1);
            let mut conn = Conn::new(
                self.l7.generation,
                seg.seq.wrapping_sub(1),
                seg.ack.wrapping_sub(1),
                &opts,
                now,
            );
            conn.phase = Phase::AwaitingData;
            conn.client_window = seg.window;
            let expires = now.add(self.l7.handshake);
            let (table, mut cb) = self.l7_remove_cb();
            let inserted = table.insert_with(
                pkt.key,
                None,
                (svc as u16, UNBOUND),
                Duration::from_secs(0),
                conn,
                now,
                &mut cb,
            );
            drop(cb);
            let id = match inserted {
                Ok(id) => id,
                Err(_) => {
                    self.l7.stats.table_full += 1;
                    self.l7.send(&self.routes, &conn.reset_client(client, vip));
                    return Err(self.count_drop(svc, None, DropReason::ConnTableFull));
                }
            };
            // The client proved its address: no longer a half-open entry
            // the table may evict under a flood.
            self.l7_table.set_state(id, TcpState::Established, expires);
            return self.l7_handshake_done(frame, &seg, id, checksum, now);
        }
        Err(self.count_drop(svc, None, DropReason::NoFlow))
    }

    /// The client's handshake completed by `seg` (which may carry data).
    fn l7_handshake_done(
        &mut self,
        frame: &[u8],
        seg: &Seg,
        id: FlowId,
        checksum: L4Checksum,
        now: Instant,
    ) -> Result<Decision, DropReason> {
        let Some(flow) = self.l7_table.flow(id).copied() else {
            return Ok(Decision::Consumed);
        };
        let mut c = flow.ext;
        if c.phase == Phase::SynReceived {
            self.l7.half_open = self.l7.half_open.saturating_sub(1);
        }
        c.phase = Phase::AwaitingData;
        c.saw_client(seg.end(), Some(seg.ack), seg.flags, seg.window, now);
        self.l7_store(id, c);
        if seg.space() > 0 {
            self.l7_hold(frame, seg, id, checksum);
        }
        self.l7_data_arrived(id, now);
        Ok(Decision::Consumed)
    }

    fn l7_service(&self, svc: usize) -> Option<L7Service> {
        self.services.get(svc)?.l7
    }

    fn l7_store(&mut self, id: FlowId, c: Conn) {
        if let Some(x) = self.l7_table.ext_mut(id) {
            *x = c;
        }
    }

    fn l7_held_len(&self, id: FlowId, generation: u32) -> usize {
        self.l7
            .held
            .iter()
            .filter(|h| h.id == id && h.generation == generation)
            .map(|h| h.frame.len())
            .sum()
    }

    /// Keeps an early client segment for release once the server is
    /// connected; it is not acknowledged, so refusing it is safe.
    fn l7_hold(&mut self, frame: &[u8], seg: &Seg, id: FlowId, checksum: L4Checksum) {
        let Some(c) = self.l7_table.flow(id).map(|f| f.ext) else {
            return;
        };
        if self
            .l7
            .held
            .iter()
            .any(|h| h.id == id && h.generation == c.generation && h.seq == seg.seq)
        {
            return; // a retransmission of what we hold
        }
        let len = frame.len();
        if c.held_segments >= HOLD_SEGMENTS
            || usize::from(c.held_bytes) + len > usize::from(HOLD_PER_CONN) + 2 * 1514
            || self.l7.held_bytes + len > self.l7.hold_limit
        {
            self.l7.stats.hold_full += 1;
            return;
        }
        let mut copy = frame.to_vec();
        // Released later as an ordinary frame: finish an offloaded checksum.
        if let L4Checksum::Partial { start, offset } = checksum
            && complete_checksum(&mut copy, start, offset).is_err()
        {
            return;
        }
        self.l7.held.push(Held {
            id,
            generation: c.generation,
            seq: seg.seq,
            frame: copy,
        });
        self.l7.held_bytes += len;
        self.l7.stats.held += 1;
        if let Some(x) = self.l7_table.ext_mut(id) {
            x.held_segments += 1;
            x.held_bytes = x.held_bytes.saturating_add(len as u16);
        }
    }

    /// Chooses a real server for a connection and sends it our SYN; resets
    /// the client when none can be had.
    pub(super) fn l7_bind(&mut self, id: FlowId, now: Instant) {
        loop {
            match self.l7_try_bind(id, now) {
                Ok(()) => return,
                Err(Some(reason)) => {
                    // This server cannot be used (no route, no port): try
                    // another while attempts remain.
                    let Some(flow) = self.l7_table.flow(id).copied() else {
                        return;
                    };
                    self.count_drop(usize::from(flow.service), None, reason);
                    if !self.l7_next_attempt_allowed(&flow) {
                        self.l7_fail(id, now);
                        return;
                    }
                }
                Err(None) => {
                    self.l7_fail(id, now);
                    return;
                }
            }
        }
    }

    fn l7_next_attempt_allowed(&self, flow: &Flow<Conn>) -> bool {
        let retries = self
            .l7_service(usize::from(flow.service))
            .map_or(0, |s| s.retries);
        flow.ext.attempts <= retries
    }

    /// One connect attempt. `Err(None)`: no eligible server at all;
    /// `Err(Some(reason))`: the chosen one could not be used.
    fn l7_try_bind(&mut self, id: FlowId, now: Instant) -> Result<(), Option<DropReason>> {
        let flow = *self.l7_table.flow(id).ok_or(None)?;
        let svc = usize::from(flow.service);
        let (client, vip) = (flow.original.src, flow.original.dst);
        let mut c = flow.ext;
        let settings = self.l7_service(svc).ok_or(None)?;
        let first = c.attempts == 0;
        let key = persistence_key(&c, client.addr);
        let exclude = if first { 0 } else { c.tried };
        // No real server may take it: the fallback server, if there is one
        // (as in L4: no persistence entry, so the client returns to a real
        // server as soon as one is up); not for a connection an aware
        // route confines to some servers. `fallback = "local"` refuses:
        // the caller resets the client.
        let (srv, persistent, to_fallback) = match (
            self.choose_server(svc, key, now, exclude, c.route_exclude),
            self.services[svc].fallback,
        ) {
            (Some((srv, persistent)), _) => (srv, persistent, false),
            (None, FallbackRuntime::Server(fb)) if c.route_exclude == 0 => (fb, false, true),
            (None, FallbackRuntime::Local) => {
                self.services[svc].stats.fallback_refused += 1;
                return Err(None);
            }
            // None; a page (refused for layer 7 services by validation);
            // a fallback server outside the connection's route.
            (None, _) => return Err(None),
        };
        c.attempts = c.attempts.saturating_add(1);
        c.tried |= 1u64 << (srv % 64);
        self.l7_store(id, c);
        let service = &mut self.services[svc];
        let server = service.server_endpoint(srv, vip.port);
        let (out_nic, _) = self
            .routes
            .route(server.addr)
            .ok_or(Some(DropReason::NoRoute))?;
        let local = if settings.transparent {
            client
        } else {
            let own = self
                .routes
                .address(out_nic)
                .ok_or(Some(DropReason::NoRoute))?;
            let alloc = service.snat_allocator[srv].and_then(|i| self.snat_ports.get_mut(i));
            let port = alloc
                .and_then(PortAllocator::allocate)
                .ok_or(Some(DropReason::PortsExhausted))?;
            Endpoint::new(own, port)
        };
        let reply = FlowKey {
            proto: Protocol::Tcp,
            src: server,
            dst: local,
        };
        let rebound = {
            let (table, mut cb) = self.l7_remove_cb();
            table.rebind(id, srv as u16, Some(reply), now, &mut cb)
        };
        if let Err(e) = rebound {
            // The port is ours (the allocator handed it out), whoever else
            // uses the same 4-tuple: give it back.
            if !settings.transparent
                && let Some(i) = self.services[svc].snat_allocator[srv]
            {
                self.snat_ports[i].free(local.port);
            }
            return Err(Some(match e {
                InsertError::KeyInUse { .. } => DropReason::KeyInUse,
                InsertError::Full | InsertError::SourceLimit => DropReason::ConnTableFull,
            }));
        }
        self.flow_started(svc, srv, key, persistent, !to_fallback, now);
        let proxy = self.services[svc].server_config[srv].send_proxy;
        let proxy_len = ProxyRepr {
            version: proxy,
            src: client,
            dst: vip,
        }
        .buffer_len();
        c.local = local;
        c.server = server;
        c.proxy = proxy;
        c.proxy_len = proxy_len as u8;
        c.phase = Phase::Connecting;
        c.rto_ms = FIRST_RTO_MS;
        c.timer = now.add(Duration::from_millis(u64::from(FIRST_RTO_MS)));
        c.connect_deadline = now.add(settings.connect_timeout);
        self.l7_store(id, c);
        self.l7_table.set_state(
            id,
            TcpState::Established,
            c.connect_deadline.add(self.l7.handshake),
        );
        self.l7.stats.connects += 1;
        if !first {
            self.l7.stats.retries += 1;
        }
        self.l7.timers.push((id, c.generation));
        self.l7.send(&self.routes, &c.syn());
        Ok(())
    }

    /// Every attempt failed (or none could be made): the client gets a RST.
    fn l7_fail(&mut self, id: FlowId, now: Instant) {
        let Some(flow) = self.l7_table.flow(id).copied() else {
            return;
        };
        self.l7.stats.failed += 1;
        let svc = usize::from(flow.service);
        self.count_drop(svc, None, DropReason::NoRealServer);
        let c = flow.ext;
        self.l7.send(
            &self.routes,
            &c.reset_client(flow.original.src, flow.original.dst),
        );
        self.l7_close(id, now);
    }

    /// Ends a connection now (nothing more is sent): lingers as Closed.
    fn l7_close(&mut self, id: FlowId, now: Instant) {
        let Some(flow) = self.l7_table.flow(id).copied() else {
            return;
        };
        let mut c = flow.ext;
        if c.phase == Phase::SynReceived {
            self.l7.half_open = self.l7.half_open.saturating_sub(1);
        }
        self.l7.drop_held(id, c.generation);
        if matches!(
            c.phase,
            Phase::AwaitingData | Phase::Connecting | Phase::SynReceived
        ) && flow.server != UNBOUND
        {
            // Not spliced yet: give the binding back at once.
            unbind(&mut self.services, &mut self.snat_ports, &flow);
            let (table, mut cb) = self.l7_remove_cb();
            let _ = table.rebind(id, UNBOUND, None, now, &mut cb);
        }
        c.phase = Phase::Closed;
        c.held_segments = 0;
        c.held_bytes = 0;
        self.l7_store(id, c);
        self.l7_table
            .set_state(id, TcpState::Reset, now.add(self.l7.linger));
    }

    /// A connect attempt failed (refused, or timed out): next server, or
    /// give up.
    fn l7_attempt_failed(&mut self, id: FlowId, refused: bool, now: Instant) {
        let Some(flow) = self.l7_table.flow(id).copied() else {
            return;
        };
        let c = flow.ext;
        if refused {
            self.l7.stats.refused += 1;
        } else {
            self.l7.stats.connect_timeouts += 1;
            // A server that answers late must not keep a half-open
            // connection for us.
            self.l7.send(&self.routes, &c.reset_server());
        }
        unbind(&mut self.services, &mut self.snat_ports, &flow);
        {
            let (table, mut cb) = self.l7_remove_cb();
            let _ = table.rebind(id, UNBOUND, None, now, &mut cb);
        }
        if let Some(x) = self.l7_table.ext_mut(id) {
            x.phase = Phase::AwaitingData;
        }
        if self.l7_next_attempt_allowed(&flow) {
            self.l7_bind(id, now);
        } else {
            self.l7_fail(id, now);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn l7_from_client(
        &mut self,
        frame: &mut [u8],
        pkt: &L4Packet,
        seg: &Seg,
        id: FlowId,
        flow: Flow<Conn>,
        wire: Wire,
        now: Instant,
    ) -> Result<Decision, DropReason> {
        let mut c = flow.ext;
        let (client, vip) = (flow.original.src, flow.original.dst);
        let f = seg.flags;
        let svc = usize::from(flow.service);
        match c.phase {
            Phase::Aborted => Ok(self.l7_aborted_segment(id, &flow, seg, true, now)),
            Phase::SynReceived => {
                if f.rst() {
                    self.l7_close(id, now);
                    return Ok(Decision::Consumed);
                }
                if f.syn() && !f.ack() {
                    // Our SYN-ACK was lost (same ISN), or the client gave up
                    // and starts over (new ISN): answer the SYN it sent.
                    if seg.seq != c.client_isn {
                        let opts = parse_syn(seg.options(frame));
                        let isn = self.l7.cookies.make(&pkt.key, seg.seq, &opts, now);
                        c = Conn::new(c.generation, seg.seq, isn, &opts, now);
                        self.l7_store(id, c);
                    }
                    self.l7.stats.syns += 1;
                    self.l7.send(&self.routes, &c.synack(client, vip));
                    return Ok(Decision::Consumed);
                }
                if f.ack() && !f.syn() && seg.ack == c.our_isn.wrapping_add(1) {
                    return self.l7_handshake_done(frame, seg, id, wire.checksum, now);
                }
                Err(self.count_drop(svc, None, DropReason::NoFlow))
            }
            Phase::AwaitingData | Phase::Connecting => {
                if f.rst() {
                    if c.phase == Phase::Connecting {
                        self.l7.send(&self.routes, &c.reset_server());
                    }
                    self.l7_close(id, now);
                    return Ok(Decision::Consumed);
                }
                if f.syn() {
                    if !f.ack() && seg.seq == c.client_isn {
                        self.l7.send(&self.routes, &c.synack(client, vip));
                    }
                    return Ok(Decision::Consumed);
                }
                c.saw_client(seg.end(), f.ack().then_some(seg.ack), f, seg.window, now);
                self.l7_store(id, c);
                if seg.space() > 0 {
                    self.l7_hold(frame, seg, id, wire.checksum);
                }
                if c.phase == Phase::AwaitingData {
                    self.l7_data_arrived(id, now);
                }
                Ok(Decision::Consumed)
            }
            Phase::Answered => {
                if f.rst() {
                    self.l7_close(id, now);
                    return Ok(Decision::Consumed);
                }
                let before = c.client_next;
                c.saw_client(seg.end(), f.ack().then_some(seg.ack), f, seg.window, now);
                self.l7_store(id, c);
                if seq_ge(c.client_acked, c.answer_end()) {
                    // Our answer and FIN arrived: the client's FIN (now or
                    // later) gets its ACK, then the entry lingers.
                    self.l7.drop_answer(id, c.generation);
                    if f.fin() || c.client_next != before {
                        self.l7.send(&self.routes, &c.answer_ack(client, vip));
                    }
                    if f.fin() {
                        c.phase = Phase::Closed;
                        self.l7_store(id, c);
                        self.l7_table
                            .set_state(id, TcpState::Reset, now.add(self.l7.linger));
                    }
                }
                Ok(Decision::Consumed)
            }
            Phase::Spliced | Phase::Closed => {
                if f.syn() && !f.ack() {
                    if c.phase == Phase::Closed && seg.seq != c.client_isn {
                        // The client reuses its port for a new connection.
                        let (table, mut cb) = self.l7_remove_cb();
                        table.remove(id, &mut cb);
                        drop(cb);
                        return self.l7_new(frame, pkt, wire.checksum, svc, now);
                    }
                    return Err(self.count_drop(svc, None, DropReason::NoFlow));
                }
                if let Some(s) = self.l7_service(svc) {
                    if c.holds_for_halt(true, seg.seq, seg.len) {
                        // Only what it acknowledges counts.
                        let f = crate::frame::TcpFlags(f.0 & !crate::frame::TcpFlags::FIN);
                        c.saw_client(seg.seq, f.ack().then_some(seg.ack), f, seg.window, now);
                        self.l7_after_segment(id, &mut c, false, &s, now);
                        self.l7.stats.halt_held += 1;
                        return Ok(Decision::Consumed);
                    }
                    let key = persistence_key(&c, client.addr);
                    self.l7_refresh_persistence(svc, key, c.last_client, now);
                    c.follow_pdus(true, seg.seq, seg.payload(frame));
                    c.saw_client(seg.end(), f.ack().then_some(seg.ack), f, seg.window, now);
                    self.l7_after_segment(id, &mut c, f.rst(), &s, now);
                }
                segment::edit(frame, seg, &c.client_to_server(), wire.checksum)?;
                self.l7_forward(frame, pkt, wire, c.local, c.server, &flow)
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn l7_from_server(
        &mut self,
        frame: &mut [u8],
        pkt: &L4Packet,
        seg: &Seg,
        id: FlowId,
        flow: Flow<Conn>,
        wire: Wire,
        now: Instant,
    ) -> Result<Decision, DropReason> {
        let mut c = flow.ext;
        let f = seg.flags;
        let svc = usize::from(flow.service);
        match c.phase {
            Phase::Aborted => Ok(self.l7_aborted_segment(id, &flow, seg, false, now)),
            Phase::Connecting => {
                let answers = f.ack() && seg.ack == c.syn_isn().wrapping_add(1);
                if f.rst() && (answers || !f.ack()) {
                    self.l7_attempt_failed(id, true, now);
                    return Ok(Decision::Consumed);
                }
                if f.syn() && answers && !f.rst() {
                    let opts = parse_syn(seg.options(frame));
                    c.server_answered(seg.seq, &opts, now);
                    self.l7.stats.spliced += 1;
                    self.l7_store(id, c);
                    if let Some(s) = self.l7_service(svc) {
                        self.l7_after_segment(id, &mut c, false, &s, now);
                        self.l7_store(id, c);
                    }
                    self.l7_send_handshake_ack(&c, &flow);
                    if c.proxy_len > 0 {
                        if let Some(x) = self.l7_table.ext_mut(id) {
                            x.rto_ms = PROXY_RTO_MS;
                            x.timer = now.add(Duration::from_millis(u64::from(PROXY_RTO_MS)));
                        }
                        self.l7.timers.push((id, c.generation));
                    }
                    self.l7_release(id, now);
                    return Ok(Decision::Consumed);
                }
                Err(self.count_drop(svc, Some(usize::from(flow.server)), DropReason::NoFlow))
            }
            Phase::Spliced | Phase::Closed => {
                if f.syn() {
                    // Our ACK of its SYN-ACK was lost: say it again.
                    if f.ack() && !f.rst() && seg.seq == c.server_isn {
                        self.l7_send_handshake_ack(&c, &flow);
                    }
                    return Ok(Decision::Consumed);
                }
                if let Some(s) = self.l7_service(svc) {
                    if c.holds_for_halt(false, seg.seq, seg.len) {
                        let f = crate::frame::TcpFlags(f.0 & !crate::frame::TcpFlags::FIN);
                        c.saw_server(seg.seq, f.ack().then_some(seg.ack), f, now);
                        self.l7_after_segment(id, &mut c, false, &s, now);
                        self.l7.stats.halt_held += 1;
                        return Ok(Decision::Consumed);
                    }
                    c.follow_pdus(false, seg.seq, seg.payload(frame));
                    c.saw_server(seg.end(), f.ack().then_some(seg.ack), f, now);
                    self.l7_after_segment(id, &mut c, f.rst(), &s, now);
                }
                segment::edit(frame, seg, &c.server_to_client(), wire.checksum)?;
                self.l7_forward(
                    frame,
                    pkt,
                    wire,
                    flow.original.dst,
                    flow.original.src,
                    &flow,
                )
            }
            _ => Err(self.count_drop(svc, None, DropReason::NoFlow)),
        }
    }

    /// Rewrites the addresses of a relayed segment and routes it.
    fn l7_forward(
        &mut self,
        frame: &mut [u8],
        pkt: &L4Packet,
        wire: Wire,
        src: Endpoint,
        dst: Endpoint,
        flow: &Flow<Conn>,
    ) -> Result<Decision, DropReason> {
        let (svc, srv) = (usize::from(flow.service), usize::from(flow.server));
        let result = self.route_translated(frame, pkt, wire.checksum, src, dst);
        match result {
            Ok(d) => {
                let Sent { packets, bytes } = wire.sent;
                if let Some(s) = self.services.get_mut(svc) {
                    s.stats.service.forwarded(packets, bytes);
                    if let Some(c) = s.stats.servers.get_mut(srv) {
                        c.forwarded(packets, bytes);
                    }
                }
                if let Some(p) = usize::from(flow.ext.pair)
                    .checked_sub(1)
                    .and_then(|i| self.l7.pairs.get_mut(i))
                {
                    p.bytes += bytes;
                }
                Ok(d)
            }
            Err(r) => Err(self.count_drop(svc, Some(srv), r)),
        }
    }

    /// Updates a spliced connection's phase and expiry after a segment.
    fn l7_after_segment(
        &mut self,
        id: FlowId,
        c: &mut Conn,
        rst: bool,
        s: &L7Service,
        now: Instant,
    ) {
        let (state, expires) = if rst || c.fully_closed() {
            c.phase = Phase::Closed;
            self.l7.drop_held(id, c.generation);
            (TcpState::Reset, now.add(self.l7.linger))
        } else if c.phase == Phase::Closed {
            (TcpState::Reset, now.add(self.l7.linger))
        } else if c.halting {
            if c.quiet_between_pdus() {
                // Both directions between PDUs: the A-ABORTs go now.
                self.l7_store(id, *c);
                self.l7.halting = true;
                let (table, mut cb) = self.l7_remove_cb();
                table.remove(id, &mut cb);
                drop(cb);
                self.l7.halting = false;
                return;
            }
            // The halt's deadline stands.
            let expires = self.l7_table.flow(id).map_or(now, |f| f.expires);
            (TcpState::Established, expires)
        } else {
            let idle = c
                .last_client
                .add(s.client_timeout)
                .min(c.last_server.add(s.server_timeout));
            (TcpState::Established, idle)
        };
        self.l7_store(id, *c);
        self.l7_table.set_state(id, state, expires);
    }

    /// Source IP persistence is refreshed by the client's traffic, as for
    /// L4 flows (once per refresh period, not per segment).
    fn l7_refresh_persistence(
        &mut self,
        svc: usize,
        client: Ipv4Addr,
        last: Instant,
        now: Instant,
    ) {
        let Some((mask, timeout)) = self.services[svc].persistence else {
            return;
        };
        let shift = refresh_period_shift(timeout);
        if last.millis() >> shift != now.millis() >> shift {
            let extended = Duration::from_millis(timeout.millis() + (1 << shift));
            self.persist.touch(svc as u16, client, mask, extended, now);
        }
    }

    /// Our ACK of the server's SYN-ACK, with the PROXY header while it is
    /// unacknowledged.
    fn l7_send_handshake_ack(&mut self, c: &Conn, flow: &Flow<Conn>) {
        let mut buf = [0u8; crate::splice::proxy::V1_MAX_LEN];
        let n = if c.proxy_acked() {
            0
        } else {
            ProxyRepr {
                version: c.proxy,
                src: flow.original.src,
                dst: flow.original.dst,
            }
            .emit(&mut buf)
        };
        self.l7.send(&self.routes, &c.handshake_ack(&buf[..n]));
    }

    /// Sends the held early data of a connection that just got spliced.
    fn l7_release(&mut self, id: FlowId, _now: Instant) {
        let Some(flow) = self.l7_table.flow(id).copied() else {
            return;
        };
        let c = flow.ext;
        let mine = self
            .l7
            .take_held(|h| h.id == id && h.generation == c.generation);
        if let Some(x) = self.l7_table.ext_mut(id) {
            x.held_segments = 0;
            x.held_bytes = 0;
        }
        for mut f in mine {
            let Ok(Class::L4(pkt)) = frame::classify(&f) else {
                continue;
            };
            let Ok(seg) = Seg::read(&f, &pkt) else {
                continue;
            };
            if let Some(x) = self.l7_table.ext_mut(id) {
                x.follow_pdus(true, seg.seq, seg.payload(&f));
            }
            if segment::edit(&mut f, &seg, &c.client_to_server(), L4Checksum::Complete).is_err() {
                continue;
            }
            let wire = Wire {
                checksum: L4Checksum::Complete,
                sent: Sent::of(&f, &pkt, &Offload::NONE),
            };
            if let Ok(Decision::Forward { nic, next_hop }) =
                self.l7_forward(&mut f, &pkt, wire, c.local, c.server, &flow)
            {
                self.l7.push(Outgoing {
                    nic,
                    next_hop,
                    frame: f,
                });
            }
        }
    }

    /// Timers: SYN retransmission and connect timeout, PROXY header
    /// retransmission. Called from [`Engine::expire`].
    pub(super) fn l7_tick(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.l7.timers.len() {
            let (id, generation) = self.l7.timers[i];
            let Some(flow) = self
                .l7_table
                .flow(id)
                .filter(|f| f.ext.generation == generation)
                .copied()
            else {
                self.l7.timers.swap_remove(i);
                continue;
            };
            let c = flow.ext;
            let proxy_pending = c.phase == Phase::Spliced && c.proxy_len > 0 && !c.proxy_acked();
            let answer_pending =
                c.phase == Phase::Answered && !seq_ge(c.client_acked, c.answer_end());
            let abort_pending = abort_pending(&c);
            if c.phase != Phase::Connecting && !proxy_pending && !answer_pending && !abort_pending {
                self.l7.timers.swap_remove(i);
                continue;
            }
            // Only one timer entry per connection generation.
            if self.l7.timers[..i].contains(&(id, generation)) {
                self.l7.timers.swap_remove(i);
                continue;
            }
            i += 1;
            if c.phase == Phase::Connecting && now >= c.connect_deadline {
                self.l7_attempt_failed(id, false, now);
                continue;
            }
            if now < c.timer {
                continue;
            }
            let rto = (c.rto_ms * 2).min(MAX_RTO_MS);
            if let Some(x) = self.l7_table.ext_mut(id) {
                x.rto_ms = rto;
                x.timer = now.add(Duration::from_millis(u64::from(rto)));
            }
            if c.phase == Phase::Connecting {
                self.l7.stats.syn_retransmits += 1;
                self.l7.send(&self.routes, &c.syn());
            } else if abort_pending {
                let (client_done, server_done) = c.abort_acked(ABORT_LEN);
                let abort = AbortRepr::BY_PROVIDER.emit();
                if !client_done {
                    let (client, vip) = (flow.original.src, flow.original.dst);
                    self.l7
                        .send(&self.routes, &c.abort_client(client, vip, &abort));
                }
                if !server_done {
                    self.l7.send(&self.routes, &c.abort_server(&abort));
                }
                self.l7.stats.abort_retransmits += 1;
            } else if answer_pending {
                let (client, vip) = (flow.original.src, flow.original.dst);
                let seg = self
                    .l7
                    .answers
                    .iter()
                    .find(|a| a.id == id && a.generation == generation)
                    .map(|a| c.answer(client, vip, &a.frame).frame());
                if let (Some(frame), Some((nic, next_hop))) = (seg, self.routes.route(client.addr))
                {
                    self.l7.stats.answer_retransmits += 1;
                    self.l7.push(Outgoing {
                        nic,
                        next_hop,
                        frame,
                    });
                }
            } else {
                self.l7.stats.proxy_retransmits += 1;
                self.l7_send_handshake_ack(&c, &flow);
            }
        }
        // Early data of connections that went away.
        let table = &self.l7_table;
        self.l7.take_held(|h| {
            !table.flow(h.id).is_some_and(|f| {
                f.ext.generation == h.generation
                    && matches!(f.ext.phase, Phase::AwaitingData | Phase::Connecting)
            })
        });
        let gone: Vec<(FlowId, u32)> = self
            .l7
            .answers
            .iter()
            .filter(|a| {
                !table.flow(a.id).is_some_and(|f| {
                    f.ext.generation == a.generation
                        && f.ext.phase == Phase::Answered
                        && !seq_ge(f.ext.client_acked, f.ext.answer_end())
                })
            })
            .map(|a| (a.id, a.generation))
            .collect();
        for (id, generation) in gone {
            self.l7.drop_answer(id, generation);
        }
    }

    /// Expires idle layer 7 connections (resetting both sides).
    pub(super) fn l7_expire(&mut self, now: Instant, budget: usize) -> usize {
        self.l7_tick(now);
        let (table, mut cb) = self.l7_remove_cb();
        let n = table.expire(now, budget, &mut cb);
        drop(cb);
        self.l7_track_aborted(now);
        n
    }

    /// Tracks the connections just aborted again, in phase `Aborted`, so
    /// their A-ABORTs are resent until both sides acknowledge them (or
    /// [`ABORT_LINGER`] passes). A connection that finds no room is let go.
    pub(super) fn l7_track_aborted(&mut self, now: Instant) {
        for flow in core::mem::take(&mut self.l7.aborted) {
            let reply = flow.has_reply_key().then_some(flow.reply);
            let mut ext = flow.ext;
            ext.timer = now.add(Duration::from_millis(u64::from(FIRST_RTO_MS)));
            ext.rto_ms = FIRST_RTO_MS;
            let (table, mut cb) = self.l7_remove_cb();
            let inserted = table.insert_with(
                flow.original,
                reply,
                (flow.service, flow.server),
                ABORT_LINGER,
                ext,
                now,
                &mut cb,
            );
            drop(cb);
            match inserted {
                Ok(id) => {
                    self.l7_table
                        .set_state(id, TcpState::Established, now.add(ABORT_LINGER));
                    self.l7.timers.push((id, ext.generation));
                }
                Err(_) => unbind(&mut self.services, &mut self.snat_ports, &flow),
            }
        }
    }

    /// A segment of an aborted association: its acknowledgement counts
    /// (its data is not relayed); a FIN is acknowledged once our A-ABORT
    /// is; with both A-ABORTs acknowledged the entry lingers as closed.
    fn l7_aborted_segment(
        &mut self,
        id: FlowId,
        flow: &Flow<Conn>,
        seg: &Seg,
        from_client: bool,
        now: Instant,
    ) -> Decision {
        let mut c = flow.ext;
        let f = seg.flags;
        let done = c.abort_acked(ABORT_LEN);
        let ends = c.abort_ends(ABORT_LEN);
        let (acked, done, end) = if from_client {
            (&mut c.client_acked, done.0, ends.0)
        } else {
            (&mut c.server_acked, done.1, ends.1)
        };
        if f.rst() {
            // That side is gone: nothing more to resend to it.
            *acked = end;
        } else if f.ack() && !done && seq_ge(seg.ack, *acked) {
            *acked = if seq_ge(seg.ack, end) { end } else { seg.ack };
        }
        let (client_done, server_done) = c.abort_acked(ABORT_LEN);
        let now_done = if from_client {
            client_done
        } else {
            server_done
        };
        if !f.rst() && (f.fin() || seg.len > 0) && (done || now_done) {
            let upto = seg.end();
            let ack = if from_client {
                c.abort_ack_client(flow.original.src, flow.original.dst, ABORT_LEN, upto)
            } else {
                c.abort_ack_server(ABORT_LEN, upto)
            };
            self.l7.send(&self.routes, &ack);
        }
        self.l7_store(id, c);
        if client_done && server_done {
            self.l7_table
                .set_state(id, TcpState::Reset, now.add(self.l7.linger));
        }
        Decision::Consumed
    }

    /// Client bytes arrived for a connection without a server: plain
    /// layer 7 binds (once `bind_after` bytes are held); a protocol-aware
    /// service reads them and binds within the route, answers the client
    /// itself, or waits for more.
    fn l7_data_arrived(&mut self, id: FlowId, now: Instant) {
        let Some(flow) = self.l7_table.flow(id).copied() else {
            return;
        };
        let svc = usize::from(flow.service);
        let mut c = flow.ext;
        let Some(aware) = self.services.get(svc).and_then(|s| s.aware.as_ref()) else {
            let bind_after = self.l7_service(svc).map_or(0, |s| s.bind_after);
            if bind_after == 0 || self.l7_held_len(id, c.generation) >= usize::from(bind_after) {
                self.l7_bind(id, now);
            }
            return;
        };
        let (first, end) = self.l7_first_bytes(id, &c);
        if first.is_empty() {
            return;
        }
        self.l7.rejects = self.l7.rejects.wrapping_add(1);
        let control_id = alloc::format!("LB{:010}", self.l7.rejects);
        let outcome = aware.read(&first, control_id.as_bytes());
        let is_dicom = aware.is_dicom();
        let (client, vip) = (flow.original.src, flow.original.dst);
        match outcome {
            Outcome::NeedMore => {
                // The hold is full and the unit still incomplete: it is
                // not one a client of this protocol sends.
                if c.held_segments >= HOLD_SEGMENTS
                    || usize::from(c.held_bytes) >= usize::from(HOLD_PER_CONN)
                {
                    self.l7.stats.aware_not_protocol += 1;
                    self.l7_fail(id, now);
                }
            }
            Outcome::Bind {
                servers,
                identity,
                pair,
                rewrite_called,
            } => {
                if let Some(ae) = rewrite_called {
                    self.l7_rewrite_called(id, &c, &ae);
                }
                self.l7.stats.aware_routed += 1;
                let counter = self.l7.count_pair(flow.service, pair, false);
                c.pair = counter.map_or(0, |i| i as u16 + 1);
                c.route_exclude = !servers;
                c.identity = identity.unwrap_or(0);
                c.dicom = is_dicom;
                c.pdus[0] = crate::wire::dicom::PduCursor::new(c.client_isn.wrapping_add(1));
                self.l7_store(id, c);
                self.l7_bind(id, now);
            }
            Outcome::Refuse { reply, pair } => {
                self.l7.stats.aware_refused += 1;
                self.l7.count_pair(flow.service, pair, true);
                self.l7_answer(id, c, end, reply, client, vip, now);
            }
            Outcome::NotProtocol { reply: Some(reply) } => {
                self.l7.stats.aware_not_protocol += 1;
                self.l7_answer(id, c, end, reply, client, vip, now);
            }
            Outcome::NotProtocol { reply: None } => {
                self.l7.stats.aware_not_protocol += 1;
                self.l7_fail(id, now);
            }
        }
    }

    /// Writes `ae` over the called AE title of the held A-ASSOCIATE-RQ
    /// (16 bytes at stream offset 10, in whichever held segments carry
    /// them), checksums adjusted; nothing else of the request moves.
    fn l7_rewrite_called(&mut self, id: FlowId, c: &Conn, ae: &AeTitle) {
        let field = c
            .client_isn
            .wrapping_add(1 + dicom::CALLED_AE_OFFSET as u32);
        for h in self
            .l7
            .held
            .iter_mut()
            .filter(|h| h.id == id && h.generation == c.generation)
        {
            let Ok(Class::L4(pkt)) = frame::classify(&h.frame) else {
                continue;
            };
            let Ok(seg) = Seg::read(&h.frame, &pkt) else {
                continue;
            };
            for (i, &b) in ae.0.iter().enumerate() {
                let off = field.wrapping_add(i as u32).wrapping_sub(seg.seq) as usize;
                if off < seg.len as usize {
                    segment::set_payload_byte(&mut h.frame, &seg, off, b);
                }
            }
        }
    }

    /// The client's held bytes from its first one, as far as they are
    /// contiguous, and the sequence number after them.
    fn l7_first_bytes(&self, id: FlowId, c: &Conn) -> (Vec<u8>, u32) {
        let mut out = Vec::new();
        let mut next = c.client_isn.wrapping_add(1);
        loop {
            let mut grew = false;
            for h in self
                .l7
                .held
                .iter()
                .filter(|h| h.id == id && h.generation == c.generation)
            {
                let Ok(Class::L4(pkt)) = frame::classify(&h.frame) else {
                    continue;
                };
                let Ok(seg) = Seg::read(&h.frame, &pkt) else {
                    continue;
                };
                let payload = seg.payload(&h.frame);
                let skip = next.wrapping_sub(seg.seq) as usize;
                if seq_ge(next, seg.seq) && skip < payload.len() {
                    out.extend_from_slice(&payload[skip..]);
                    next = seg.seq.wrapping_add(payload.len() as u32);
                    grew = true;
                }
            }
            if !grew {
                return (out, next);
            }
        }
    }

    /// The appliance answers the client itself (`reply`, then FIN) and
    /// acknowledges its bytes up to `end`; resent until acknowledged.
    #[allow(clippy::too_many_arguments)]
    fn l7_answer(
        &mut self,
        id: FlowId,
        mut c: Conn,
        end: u32,
        reply: Vec<u8>,
        client: Endpoint,
        vip: Endpoint,
        now: Instant,
    ) {
        self.l7.drop_held(id, c.generation);
        c.held_segments = 0;
        c.held_bytes = 0;
        c.phase = Phase::Answered;
        c.client_next = end;
        c.answer_len = reply.len().min(usize::from(HOLD_PER_CONN)) as u16;
        let reply = &reply[..usize::from(c.answer_len)];
        c.rto_ms = FIRST_RTO_MS;
        c.timer = now.add(Duration::from_millis(u64::from(FIRST_RTO_MS)));
        self.l7_store(id, c);
        self.l7.send(&self.routes, &c.answer(client, vip, reply));
        // Kept for resending within the early-data budget; past it the
        // client's retransmission is what brings it again.
        if self.l7.held_bytes + reply.len() <= self.l7.hold_limit {
            self.l7.held_bytes += reply.len();
            self.l7.answers.push(Held {
                id,
                generation: c.generation,
                seq: c.our_isn.wrapping_add(1),
                frame: reply.to_vec(),
            });
            self.l7.timers.push((id, c.generation));
        }
        // Bounded: a client that never acknowledges is reset.
        self.l7_table
            .set_state(id, TcpState::Established, now.add(self.l7.handshake));
    }

    /// Halting a server resets its layer 7 connections on both sides.
    /// Ends the connections of a halted server: at once (A-ABORT when
    /// DICOM-aware and quiet between PDUs, else RST), except DICOM-aware
    /// associations in the middle of a PDU, which finish it and end with
    /// an A-ABORT at the next boundary, within [`HALT_GRACE`] of their
    /// last segment (then they are reset).
    pub(super) fn l7_halt(&mut self, service: usize, server: usize) {
        let (svc, srv) = (service as u16, server as u16);
        for i in 0..self.l7_table.slab_len() {
            let Some((id, f)) = self.l7_table.flow_at(i) else {
                continue;
            };
            let c = f.ext;
            if f.service != svc
                || f.server != srv
                || !c.dicom
                || c.phase != Phase::Spliced
                || c.quiet_between_pdus()
                || c.pdus.iter().any(|p| p.is_lost())
            {
                continue;
            }
            let deadline = c.last_client.max(c.last_server).add(HALT_GRACE);
            if let Some(x) = self.l7_table.ext_mut(id) {
                x.halting = true;
            }
            self.l7_table.set_state(id, TcpState::Established, deadline);
        }
        self.l7.halting = true;
        let (table, mut cb) = self.l7_remove_cb();
        table.remove_where(
            |f| f.service == svc && f.server == srv && !f.ext.halting,
            &mut cb,
        );
        drop(cb);
        self.l7.halting = false;
    }
}
