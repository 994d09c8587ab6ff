//! Connection tracking for layer 4 flows: one entry per flow, found by the
//! key of a packet in either direction.
//!
//! Each flow has its *original* key (the client's first packet, client →
//! VIP) and, when replies pass through the appliance (NAT, SNAT), its
//! *reply* key — the 5-tuple of the real server's replies as they arrive:
//! `RIP:port → client` for NAT, `RIP:port → appliance:allocated port` for
//! SNAT. Both are indexed, so the frame path looks a packet up by its own
//! 5-tuple and learns the flow and the direction. DR flows have no reply
//! key (replies go straight to the client).
//!
//! Layout, chosen for ≤ 128 bytes per tracked flow and few cache misses:
//! - a slab of [`Flow`] entries (48 bytes), allocated once at full capacity
//!   so the data path never allocates, plus a free-index stack (4 bytes);
//! - an open-addressing index (linear probing, backward-shift deletion, no
//!   tombstones) of 8-byte slots `{hash tag, entry index | direction}`,
//!   a power of two with room for two keys per flow at load ≤ 1/2.
//!
//! At 1 M flows that is 48 + 4 + 32 = 84 bytes per flow (see
//! [`ConnTable::bytes_per_flow`]; the benchmark prints it).
//!
//! Expiry is incremental: a flow carries its expiry instant, an expired flow
//! reads as absent at once, and its memory is reclaimed by a bounded sweep
//! ([`ConnTable::expire`], call it with a small budget per batch of
//! packets), by an insert that meets it, or by an insert into a full table.
//!
//! Pressure policy (spoofed SYN floods): flows whose handshake has not
//! completed ("half-open": a SYN seen, not yet the client's ACK) may hold
//! at most a quarter of the table ([`ConnTable::half_open_limit`]). A new
//! flow beyond that, or into a full table, first evicts a half-open flow
//! found by a bounded clock sweep over the slab (Linux conntrack's "early
//! drop"; counted in `stats.early_drop`), so a flood churns only half-open
//! entries while established flows are never evicted. One source may hold
//! at most [`ConnTable::source_limit`] half-open flows (counted per keyed
//! hash bucket of the source address; beyond it the new flow is refused,
//! `stats.source_limited`), so one flooding host cannot push out the
//! handshakes of everybody else. When no half-open flow can be found, the
//! new flow is refused and counted (`stats.refused_full`).

pub mod hash;

use alloc::vec;
use alloc::vec::Vec;

use crate::config::L4Settings;
use crate::flow::{FlowKey, Protocol};
use crate::time::{Duration, Instant};
use hash::KeyedHash;

/// How many slab entries an insert into a full table examines for expired
/// flows before refusing.
pub const RECLAIM_BUDGET: usize = 64;

/// Most flows a table may hold (entry indices use 31 bits).
pub const MAX_CAPACITY: usize = 1 << 30;

/// Half-open flows may hold at most 1/`HALF_OPEN_SHARE` of the table.
pub const HALF_OPEN_SHARE: usize = 4;
/// Slab entries an early drop examines for a half-open flow.
pub const EARLY_DROP_SCAN: usize = 256;
/// Buckets of the per-source half-open counters (a power of two).
const SOURCE_BUCKETS: usize = 4096;

/// Handle of a tracked flow (valid until the flow is removed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowId(u32);

impl FlowId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Which way a packet travels relative to the flow's first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Client → virtual service (the original key).
    Original,
    /// Real server → client (the reply key).
    Reply,
}

/// Where a flow is in its life; decides its idle timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TcpState {
    /// SYN seen, handshake not complete.
    Handshake,
    /// Data may flow; idle timeout = the flow's established timeout.
    Established,
    /// A FIN was seen (either side).
    Closing,
    /// A RST was seen.
    Reset,
    /// Not TCP: UDP flows have one state.
    Udp,
}

/// TCP header flags as in byte 13 of the TCP header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    pub fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// Idle timeouts by state (the established one is per flow).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub handshake: Duration,
    pub closing: Duration,
    pub reset: Duration,
    pub udp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts::from_l4(&L4Settings::default())
    }
}

impl Timeouts {
    pub fn from_l4(l4: &L4Settings) -> Self {
        Timeouts {
            handshake: l4.tcp_handshake_timeout.duration(),
            closing: l4.tcp_closing_timeout.duration(),
            reset: l4.tcp_reset_timeout.duration(),
            udp: l4.udp_timeout.duration(),
        }
    }
}

const IN_USE: u8 = 1;
const REPLY_INDEXED: u8 = 2;
/// Opened by the real server itself (outbound SNAT), not by a client.
const OUTBOUND: u8 = 4;

/// One tracked flow, with `X`: whatever else its user keeps per flow (the
/// L4 engine nothing, the L7 splice relay its sequence-number state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow<X = ()> {
    /// Dead once `now >= expires`.
    pub expires: Instant,
    /// The client's first packet: client → VIP:port.
    pub original: FlowKey,
    /// The replies as they arrive (meaningful when `has_reply_key`).
    pub reply: FlowKey,
    /// Idle timeout once established, in seconds.
    established_secs: u32,
    /// Virtual service index.
    pub service: u16,
    /// Real server index within the service — fixed for the flow's life.
    pub server: u16,
    pub state: TcpState,
    flags: u8,
    /// The user's per-flow data.
    pub ext: X,
}

impl<X: Copy + Default> Flow<X> {
    fn vacant() -> Self {
        Flow {
            expires: Instant(0),
            original: ZERO_KEY,
            reply: ZERO_KEY,
            established_secs: 0,
            service: 0,
            server: 0,
            state: TcpState::Udp,
            flags: 0,
            ext: X::default(),
        }
    }
}

impl<X> Flow<X> {
    /// Whether replies are looked up by `reply`.
    pub fn has_reply_key(&self) -> bool {
        self.flags & REPLY_INDEXED != 0
    }

    /// Whether the real server opened this flow (outbound SNAT): the
    /// original key is then `RIP:port → far end`, the reply key
    /// `far end → VIP:allocated port`.
    pub fn is_outbound(&self) -> bool {
        self.flags & OUTBOUND != 0
    }

    fn in_use(&self) -> bool {
        self.flags & IN_USE != 0
    }

    pub fn established_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.established_secs))
    }

    fn key(&self, dir: Direction) -> &FlowKey {
        match dir {
            Direction::Original => &self.original,
            Direction::Reply => &self.reply,
        }
    }
}

const ZERO_KEY: FlowKey = FlowKey {
    proto: Protocol::Tcp,
    src: crate::flow::Endpoint::new(core::net::Ipv4Addr::UNSPECIFIED, 0),
    dst: crate::flow::Endpoint::new(core::net::Ipv4Addr::UNSPECIFIED, 0),
};

/// Why a flow was not inserted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertError {
    /// The table is full of live flows (counted in `stats.refused_full`).
    Full,
    /// A live flow already uses one of the keys (for SNAT: pick another
    /// port). `dir` tells which key of that flow matched.
    KeyInUse { id: FlowId, dir: Direction },
    /// The client's source already holds [`ConnTable::source_limit`]
    /// half-open flows (counted in `stats.source_limited`).
    SourceLimit,
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConntrackStats {
    pub inserted: u64,
    pub refused_full: u64,
    pub key_in_use: u64,
    /// Flows reclaimed after their timeout.
    pub expired: u64,
    /// Flows removed on request (halted server, explicit removal).
    pub removed: u64,
    /// Half-open flows evicted to make room (see the module documentation).
    pub early_drop: u64,
    /// New flows refused: their source held too many half-open flows.
    pub source_limited: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IndexSlot {
    /// Low 32 bits of the key's hash (its home slot is `tag & mask`).
    tag: u32,
    /// Entry index, bit 31 set for the reply key; `EMPTY` when free.
    entry: u32,
}

const EMPTY: u32 = u32::MAX;
const REPLY_BIT: u32 = 1 << 31;
const EMPTY_SLOT: IndexSlot = IndexSlot {
    tag: 0,
    entry: EMPTY,
};

/// The connection-tracking table.
pub struct ConnTable<X = ()> {
    flows: Vec<Flow<X>>,
    free: Vec<u32>,
    index: Vec<IndexSlot>,
    mask: usize,
    len: usize,
    cursor: usize,
    hash: KeyedHash,
    timeouts: Timeouts,
    /// Flows in [`TcpState::Handshake`].
    half_open: usize,
    half_open_limit: usize,
    /// Where the early-drop sweep goes on.
    evict_cursor: usize,
    /// One past the highest slab index ever used: the sweep stays below
    /// it (free indices are handed out lowest first).
    high_water: usize,
    /// Half-open flows per hash bucket of the source address.
    sources: Vec<u16>,
    source_limit: u16,
    pub stats: ConntrackStats,
}

impl<X: Copy + Default> ConnTable<X> {
    /// A table for at most `capacity` flows (1..=[`MAX_CAPACITY`]),
    /// allocated now. `seed` keys the hash (give it a boot-time random
    /// value so remote peers cannot predict collisions).
    pub fn new(capacity: usize, timeouts: Timeouts, seed: u64) -> Self {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let slots = (capacity * 4).next_power_of_two();
        ConnTable {
            flows: vec![Flow::vacant(); capacity],
            // Popped from the end: hand out low indices first.
            free: (0..capacity as u32).rev().collect(),
            index: vec![EMPTY_SLOT; slots],
            mask: slots - 1,
            len: 0,
            cursor: 0,
            hash: KeyedHash::new(seed),
            timeouts,
            half_open: 0,
            half_open_limit: (capacity / HALF_OPEN_SHARE).max(1),
            evict_cursor: 0,
            high_water: 0,
            sources: vec![0; SOURCE_BUCKETS],
            source_limit: u16::try_from((capacity / HALF_OPEN_SHARE / 64).max(32))
                .unwrap_or(u16::MAX),
            stats: ConntrackStats::default(),
        }
    }

    /// Most half-open flows (handshake not complete) the table holds.
    pub fn half_open_limit(&self) -> usize {
        self.half_open_limit
    }

    /// Half-open flows held now.
    pub fn half_open(&self) -> usize {
        self.half_open
    }

    /// Most half-open flows one source address may hold.
    pub fn source_limit(&self) -> usize {
        usize::from(self.source_limit)
    }

    fn source_bucket(&self, src: core::net::Ipv4Addr) -> usize {
        (self.hash.hash2(u64::from(u32::from(src)), 0x5352_4345) as usize) & (SOURCE_BUCKETS - 1)
    }

    /// Counts a flow entering (`+1`) or leaving (`-1`) the handshake.
    fn count_half_open(&mut self, f: &Flow<X>, entering: bool) {
        let b = self.source_bucket(f.original.src.addr);
        if entering {
            self.half_open += 1;
            self.sources[b] = self.sources[b].saturating_add(1);
        } else {
            self.half_open = self.half_open.saturating_sub(1);
            self.sources[b] = self.sources[b].saturating_sub(1);
        }
    }

    /// Evicts one half-open flow, sweeping on from where the last sweep
    /// stopped (examines at most [`EARLY_DROP_SCAN`] entries). Returns
    /// whether one was evicted.
    fn early_drop(&mut self, on_remove: &mut impl FnMut(&Flow<X>)) -> bool {
        self.early_drop_where(EARLY_DROP_SCAN, |_| true, on_remove)
    }

    /// Evicts one half-open flow that `pred` accepts, sweeping on from
    /// where the last sweep stopped (examines at most `scan` entries):
    /// an early drop aimed at what a new flow lacks, e.g. a SNAT source
    /// port towards one real server. Counted in `stats.early_drop`.
    /// Returns whether one was evicted.
    pub fn early_drop_where(
        &mut self,
        scan: usize,
        pred: impl Fn(&Flow<X>) -> bool,
        on_remove: &mut impl FnMut(&Flow<X>),
    ) -> bool {
        let end = self.high_water.min(self.flows.len());
        for _ in 0..scan.min(end) {
            let e = if self.evict_cursor >= end {
                0
            } else {
                self.evict_cursor
            };
            self.evict_cursor = e + 1;
            let f = &self.flows[e];
            if f.in_use() && f.state == TcpState::Handshake && pred(f) {
                self.remove_entry(e as u32, on_remove);
                self.stats.early_drop += 1;
                return true;
            }
        }
        false
    }

    pub fn capacity(&self) -> usize {
        self.flows.len()
    }

    /// Flows held, including expired ones not yet reclaimed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// Bytes of table memory per flow of capacity: entries, free stack and
    /// index together.
    pub fn bytes_per_flow(&self) -> usize {
        let bytes = self.flows.capacity() * core::mem::size_of::<Flow<X>>()
            + self.free.capacity() * core::mem::size_of::<u32>()
            + self.index.len() * core::mem::size_of::<IndexSlot>();
        bytes / self.capacity()
    }

    #[inline]
    fn hash_key(&self, k: &FlowKey) -> u32 {
        let a = (u64::from(u32::from(k.src.addr)) << 32) | u64::from(u32::from(k.dst.addr));
        let b = (u64::from(k.src.port) << 32)
            | (u64::from(k.dst.port) << 16)
            | match k.proto {
                Protocol::Tcp => 6,
                Protocol::Udp => 17,
            };
        self.hash.hash2(a, b) as u32
    }

    /// Index slot, entry and direction of `key`, live or expired.
    #[inline]
    fn find(&self, key: &FlowKey) -> Option<(usize, u32, Direction)> {
        let tag = self.hash_key(key);
        let mut i = tag as usize & self.mask;
        loop {
            let s = self.index[i];
            if s.entry == EMPTY {
                return None;
            }
            if s.tag == tag {
                let e = s.entry & !REPLY_BIT;
                let dir = if s.entry & REPLY_BIT != 0 {
                    Direction::Reply
                } else {
                    Direction::Original
                };
                if self.flows[e as usize].key(dir) == key {
                    return Some((i, e, dir));
                }
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The live flow a packet with 5-tuple `key` belongs to, and which way
    /// it travels. Expired flows read as absent.
    #[inline]
    pub fn get(&self, key: &FlowKey, now: Instant) -> Option<(FlowId, Direction)> {
        let (_, e, dir) = self.find(key)?;
        (self.flows[e as usize].expires > now).then_some((FlowId(e), dir))
    }

    /// One past the highest slab index that ever held a flow: a walk over
    /// `0..slab_len()` with [`ConnTable::flow_at`] sees every flow.
    pub fn slab_len(&self) -> usize {
        self.high_water.min(self.flows.len())
    }

    /// The flow in slab entry `index`, if one is tracked there (live or
    /// expired but not yet reclaimed).
    pub fn flow_at(&self, index: usize) -> Option<(FlowId, &Flow<X>)> {
        let f = self.flows.get(index).filter(|f| f.in_use())?;
        Some((FlowId(index as u32), f))
    }

    /// Sets a tracked flow's state and expiry as the other appliance of a
    /// pair reported them (see [`crate::engine::replica`]).
    pub fn set_replica_state(&mut self, id: FlowId, state: TcpState, expires: Instant) -> bool {
        let Some(f) = self.flows.get(id.index()).filter(|f| f.in_use()).copied() else {
            return false;
        };
        let state = if f.original.proto == Protocol::Udp {
            TcpState::Udp
        } else {
            state
        };
        let (was, is) = (f.state == TcpState::Handshake, state == TcpState::Handshake);
        if was != is {
            self.count_half_open(&f, is);
        }
        let e = &mut self.flows[id.index()];
        e.state = state;
        e.expires = expires;
        true
    }

    /// The flow behind `id`, if it is still tracked.
    pub fn flow(&self, id: FlowId) -> Option<&Flow<X>> {
        self.flows.get(id.index()).filter(|f| f.in_use())
    }

    /// Starts tracking a flow to real server `server` of service `service`.
    /// `reply` is the key of the replies when they pass through the
    /// appliance (NAT, SNAT), `None` for DR. `established` is the idle
    /// timeout once established (see
    /// [`VirtualService::established_timeout`](crate::config::VirtualService::established_timeout)).
    /// A TCP flow starts in [`TcpState::Handshake`]; pass the first
    /// packet's flags to [`touch`](Self::touch) right after (a flow picked
    /// up mid-stream, e.g. after a cluster failover, then becomes
    /// established at once).
    ///
    /// `on_remove` sees every flow this call reclaims (an expired flow with
    /// the same key, expired flows reclaimed from a full table), so the
    /// caller can keep its per-server connection counts.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        original: FlowKey,
        reply: Option<FlowKey>,
        service: u16,
        server: u16,
        established: Duration,
        now: Instant,
        on_remove: &mut impl FnMut(&Flow<X>),
    ) -> Result<FlowId, InsertError> {
        self.insert_with(
            original,
            reply,
            (service, server),
            established,
            X::default(),
            now,
            on_remove,
        )
    }

    /// [`insert`](Self::insert) with the user's data for the flow.
    #[allow(clippy::too_many_arguments)]
    pub fn insert_with(
        &mut self,
        original: FlowKey,
        reply: Option<FlowKey>,
        (service, server): (u16, u16),
        established: Duration,
        ext: X,
        now: Instant,
        on_remove: &mut impl FnMut(&Flow<X>),
    ) -> Result<FlowId, InsertError> {
        let reply = reply.filter(|r| *r != original);
        for key in core::iter::once(&original).chain(reply.as_ref()) {
            if let Some((_, e, dir)) = self.find(key) {
                if self.flows[e as usize].expires > now {
                    self.stats.key_in_use += 1;
                    return Err(InsertError::KeyInUse { id: FlowId(e), dir });
                }
                self.remove_entry(e, on_remove);
                self.stats.expired += 1;
            }
        }
        let tcp = original.proto == Protocol::Tcp;
        if tcp {
            let b = self.source_bucket(original.src.addr);
            if self.sources[b] >= self.source_limit {
                self.stats.source_limited += 1;
                return Err(InsertError::SourceLimit);
            }
            // Over the limit: sweep a little further if the first stretch
            // held no half-open flow (the limit is then exceeded only in
            // the rare case that four stretches held none).
            for _ in 0..4 {
                if self.half_open < self.half_open_limit || self.early_drop(on_remove) {
                    break;
                }
            }
        }
        if self.free.is_empty() {
            self.expire(now, RECLAIM_BUDGET, on_remove);
        }
        if self.free.is_empty() {
            self.early_drop(on_remove);
        }
        let Some(e) = self.free.pop() else {
            self.stats.refused_full += 1;
            return Err(InsertError::Full);
        };
        self.high_water = self.high_water.max(e as usize + 1);
        let state = match original.proto {
            Protocol::Tcp => TcpState::Handshake,
            Protocol::Udp => TcpState::Udp,
        };
        let mut flow = Flow {
            expires: now,
            original,
            reply: reply.unwrap_or(original.reversed()),
            established_secs: u32::try_from(established.millis() / 1000).unwrap_or(u32::MAX),
            service,
            server,
            state,
            flags: IN_USE | if reply.is_some() { REPLY_INDEXED } else { 0 },
            ext,
        };
        flow.expires = now.add(self.timeout_of(&flow));
        if state == TcpState::Handshake {
            self.count_half_open(&flow, true);
        }
        self.flows[e as usize] = flow;
        self.index_insert(&original, e);
        if let Some(r) = reply {
            self.index_insert(&r, e | REPLY_BIT);
        }
        self.len += 1;
        self.stats.inserted += 1;
        Ok(FlowId(e))
    }

    fn timeout_of(&self, f: &Flow<X>) -> Duration {
        match f.state {
            TcpState::Handshake => self.timeouts.handshake,
            TcpState::Established => f.established_timeout(),
            TcpState::Closing => self.timeouts.closing,
            TcpState::Reset => self.timeouts.reset,
            TcpState::Udp => self.timeouts.udp,
        }
    }

    /// A packet of the flow was forwarded: advance the TCP state from its
    /// flags (`None` for UDP) and restart the idle timer. Returns the new
    /// state, or `None` if `id` is not tracked.
    pub fn touch(
        &mut self,
        id: FlowId,
        dir: Direction,
        flags: Option<TcpFlags>,
        now: Instant,
    ) -> Option<TcpState> {
        let f = self.flows.get(id.index()).filter(|f| f.in_use())?;
        let mut f = *f;
        if let (Some(fl), true) = (flags, f.state != TcpState::Udp) {
            let before = f.state;
            f.state = next_state(f.state, dir, fl);
            let (was, is) = (
                before == TcpState::Handshake,
                f.state == TcpState::Handshake,
            );
            if was != is {
                self.count_half_open(&f, is);
            }
        }
        f.expires = now.add(self.timeout_of(&f));
        self.flows[id.index()] = f;
        Some(f.state)
    }

    /// The user's data of a tracked flow, to change.
    pub fn ext_mut(&mut self, id: FlowId) -> Option<&mut X> {
        self.flows
            .get_mut(id.index())
            .filter(|f| f.in_use())
            .map(|f| &mut f.ext)
    }

    /// Sets the flow's state and expiry directly (for users that run their
    /// own TCP state machine, like the L7 relay, instead of
    /// [`touch`](Self::touch)).
    pub fn set_state(&mut self, id: FlowId, state: TcpState, expires: Instant) -> bool {
        let Some(f) = self.flows.get_mut(id.index()).filter(|f| f.in_use()) else {
            return false;
        };
        let (was, is) = (f.state == TcpState::Handshake, state == TcpState::Handshake);
        f.state = state;
        f.expires = expires;
        if was != is {
            let f = *f;
            self.count_half_open(&f, is);
        }
        true
    }

    /// Moves a flow to another real server with another reply key (the L7
    /// relay retrying a connect elsewhere, or binding a connection whose
    /// handshake with the client just completed). On error nothing changed.
    pub fn rebind(
        &mut self,
        id: FlowId,
        server: u16,
        reply: Option<FlowKey>,
        now: Instant,
        on_remove: &mut impl FnMut(&Flow<X>),
    ) -> Result<(), InsertError> {
        let Some(f) = self.flow(id).copied() else {
            return Err(InsertError::Full);
        };
        let reply = reply.filter(|r| *r != f.original);
        let old = f.has_reply_key().then_some(f.reply);
        if reply != old
            && let Some(r) = reply
            && let Some((_, e, dir)) = self.find(&r)
        {
            if self.flows[e as usize].expires > now {
                self.stats.key_in_use += 1;
                return Err(InsertError::KeyInUse { id: FlowId(e), dir });
            }
            self.remove_entry(e, on_remove);
            self.stats.expired += 1;
        }
        if reply != old {
            if let Some(o) = old {
                self.index_remove(&o, id.0 | REPLY_BIT);
            }
            if let Some(r) = reply {
                self.index_insert(&r, id.0 | REPLY_BIT);
            }
        }
        let f = &mut self.flows[id.index()];
        f.server = server;
        match reply {
            Some(r) => {
                f.reply = r;
                f.flags |= REPLY_INDEXED;
            }
            None => {
                f.reply = f.original.reversed();
                f.flags &= !REPLY_INDEXED;
            }
        }
        Ok(())
    }

    /// Stops tracking a flow. Returns whether it was tracked.
    pub fn remove(&mut self, id: FlowId, on_remove: &mut impl FnMut(&Flow<X>)) -> bool {
        if self.flow(id).is_none() {
            return false;
        }
        self.remove_entry(id.0, on_remove);
        self.stats.removed += 1;
        true
    }

    /// Removes every flow to `server` of `service` (the server was halted).
    /// O(capacity): an administrative event, not per packet.
    /// Marks a flow just inserted as opened by its real server (see
    /// [`Flow::is_outbound`]).
    pub fn set_outbound(&mut self, id: FlowId) {
        if let Some(f) = self.flows.get_mut(id.index()).filter(|f| f.in_use()) {
            f.flags |= OUTBOUND;
        }
    }

    pub fn remove_server(
        &mut self,
        service: u16,
        server: u16,
        on_remove: &mut impl FnMut(&Flow<X>),
    ) -> usize {
        self.remove_where(|f| f.service == service && f.server == server, on_remove)
    }

    /// Removes every flow of `service` (it was removed or reconfigured).
    pub fn remove_service(&mut self, service: u16, on_remove: &mut impl FnMut(&Flow<X>)) -> usize {
        self.remove_where(|f| f.service == service, on_remove)
    }

    /// Gives every flow its service and server under a new configuration
    /// (a live apply): `map` returns the new pair, or `None` to remove the
    /// flow. Returns how many were removed. O(capacity): an administrative
    /// event, not per packet.
    pub fn remap(
        &mut self,
        mut map: impl FnMut(u16, u16) -> Option<(u16, u16)>,
        on_remove: &mut impl FnMut(&Flow<X>),
    ) -> usize {
        let mut removed = 0;
        for e in 0..self.flows.len() {
            let f = self.flows[e];
            if !f.in_use() {
                continue;
            }
            match map(f.service, f.server) {
                Some((service, server)) => {
                    self.flows[e].service = service;
                    self.flows[e].server = server;
                }
                None => {
                    self.remove_entry(e as u32, on_remove);
                    removed += 1;
                }
            }
        }
        self.stats.removed += removed as u64;
        removed
    }

    /// New idle timeouts for flows created from now on (live apply).
    pub fn set_timeouts(&mut self, timeouts: Timeouts) {
        self.timeouts = timeouts;
    }

    /// How many flows `pred` holds for. O(capacity).
    pub fn count_where(&self, pred: impl Fn(&Flow<X>) -> bool) -> usize {
        self.flows.iter().filter(|f| f.in_use() && pred(f)).count()
    }

    /// Removes every flow `pred` picks.
    pub fn remove_where(
        &mut self,
        pred: impl Fn(&Flow<X>) -> bool,
        on_remove: &mut impl FnMut(&Flow<X>),
    ) -> usize {
        let mut n = 0;
        for e in 0..self.flows.len() {
            let f = &self.flows[e];
            if f.in_use() && pred(f) {
                self.remove_entry(e as u32, on_remove);
                n += 1;
            }
        }
        self.stats.removed += n as u64;
        n
    }

    /// Examines up to `budget` entries, continuing where the last call
    /// stopped, and reclaims expired flows. Returns how many.
    pub fn expire(
        &mut self,
        now: Instant,
        budget: usize,
        on_remove: &mut impl FnMut(&Flow<X>),
    ) -> usize {
        // An empty table has nothing to expire: skip the walk.
        if self.len == 0 {
            return 0;
        }
        let mut n = 0;
        for _ in 0..budget.min(self.flows.len()) {
            let e = self.cursor;
            self.cursor = if e + 1 == self.flows.len() { 0 } else { e + 1 };
            let f = &self.flows[e];
            if f.in_use() && f.expires <= now {
                self.remove_entry(e as u32, on_remove);
                n += 1;
            }
        }
        self.stats.expired += n as u64;
        n
    }

    fn remove_entry(&mut self, e: u32, on_remove: &mut impl FnMut(&Flow<X>)) {
        let f = self.flows[e as usize];
        on_remove(&f);
        if f.state == TcpState::Handshake {
            self.count_half_open(&f, false);
        }
        self.index_remove(&f.original, e);
        if f.has_reply_key() {
            self.index_remove(&f.reply, e | REPLY_BIT);
        }
        self.flows[e as usize] = Flow::vacant();
        self.free.push(e);
        self.len -= 1;
    }

    fn index_insert(&mut self, key: &FlowKey, entry: u32) {
        let tag = self.hash_key(key);
        let mut i = tag as usize & self.mask;
        while self.index[i].entry != EMPTY {
            i = (i + 1) & self.mask;
        }
        self.index[i] = IndexSlot { tag, entry };
    }

    fn index_remove(&mut self, key: &FlowKey, entry: u32) {
        let tag = self.hash_key(key);
        let mut i = tag as usize & self.mask;
        loop {
            let s = self.index[i];
            if s.entry == entry {
                break;
            }
            if s.entry == EMPTY {
                debug_assert!(false, "index entry missing");
                return;
            }
            i = (i + 1) & self.mask;
        }
        // Backward-shift deletion.
        let mut hole = i;
        let mut j = i;
        loop {
            self.index[hole] = EMPTY_SLOT;
            loop {
                j = (j + 1) & self.mask;
                let s = self.index[j];
                if s.entry == EMPTY {
                    return;
                }
                let home = s.tag as usize & self.mask;
                let stays = if hole <= j {
                    hole < home && home <= j
                } else {
                    hole < home || home <= j
                };
                if !stays {
                    self.index[hole] = s;
                    hole = j;
                    break;
                }
            }
        }
    }

    /// Every tracked flow is reachable by its keys and nothing else is
    /// indexed (test helper).
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut used = 0;
        for (e, f) in self.flows.iter().enumerate() {
            if !f.in_use() {
                continue;
            }
            used += 1;
            let (_, got, dir) = self.find(&f.original).expect("original key indexed");
            assert_eq!((got as usize, dir), (e, Direction::Original));
            if f.has_reply_key() {
                let (_, got, dir) = self.find(&f.reply).expect("reply key indexed");
                assert_eq!((got as usize, dir), (e, Direction::Reply));
            }
        }
        let indexed = self.index.iter().filter(|s| s.entry != EMPTY).count();
        let keys: usize = self
            .flows
            .iter()
            .filter(|f| f.in_use())
            .map(|f| 1 + usize::from(f.has_reply_key()))
            .sum();
        assert_eq!(indexed, keys);
        assert_eq!(used, self.len);
        assert_eq!(self.len + self.free.len(), self.capacity());
        let half_open = self
            .flows
            .iter()
            .filter(|f| f.in_use() && f.state == TcpState::Handshake)
            .count();
        assert_eq!(half_open, self.half_open);
        assert_eq!(
            self.sources.iter().map(|&c| usize::from(c)).sum::<usize>(),
            half_open
        );
    }
}

/// TCP state from the flags of one packet. Only what both DR (where the
/// appliance sees the client's packets only) and NAT/SNAT can observe.
fn next_state(state: TcpState, dir: Direction, f: TcpFlags) -> TcpState {
    if f.rst() {
        return TcpState::Reset;
    }
    if f.syn() && !f.ack() && dir == Direction::Original {
        // A new SYN on a closed tuple starts a new connection (port reuse).
        return match state {
            TcpState::Closing | TcpState::Reset => TcpState::Handshake,
            s => s,
        };
    }
    if f.fin() {
        return TcpState::Closing;
    }
    match state {
        // The client's ACK completes the handshake (or a mid-stream
        // pickup: an ACK with no SYN ever seen).
        TcpState::Handshake if f.ack() && !f.syn() && dir == Direction::Original => {
            TcpState::Established
        }
        s => s,
    }
}

#[cfg(test)]
mod tests;
