//! The sync link between the two appliances of a pair: one replication
//! stream, from whichever is master to the other, over UDP on a dedicated
//! interface (or the internal one), authenticated with the pair's key.
//!
//! What it carries (see [`super::wire`]): hellos both ways (role, config
//! serial, table sizes, whether the sender needs a full copy); from the
//! master, the engine's journal of changes as they happen and, every
//! `sync_refresh` seconds or at once when the backup asks, a full refresh
//! pass over the connection and persistence tables; and the master's
//! config envelope while the backup runs a lower serial.
//!
//! Bounds: the journal is bounded in the engine (overflow counted, the next
//! pass repairs it); a pass walks at most [`WALK_BUDGET`] table entries and
//! sends at most [`SEND_BUDGET`] messages per [`SyncLink::poll`] (called
//! every few milliseconds: about 3 MB/s at most); a config being received
//! is held up to [`MAX_CONFIG`] bytes. The backup keeps nothing else: the
//! records go straight into its own (bounded) tables.
//!
//! Loss: every message has a sequence number; gaps are counted and make
//! the backup's copy incomplete until the next whole pass arrives. The
//! backup's copy is "complete" once it has received one pass from its first
//! message to its last without a gap, and stops being so when the master
//! falls silent ([`PEER_TIMEOUT`]): the pair holds preemption until then
//! (see [`super::Pair`]).

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::wire::{self, ConfigPiece, Error, Hello, Kind, Message, RecordsHeader};
use crate::engine::{Engine, Record};
use crate::time::{Duration, Instant};

/// Between hellos.
pub const HELLO_INTERVAL: Duration = Duration::from_millis(200);
/// A peer silent this long is reported (sync fault) and the copy taken
/// from it stops counting as complete.
pub const PEER_TIMEOUT: Duration = Duration::from_millis(1500);
/// Table entries a pass examines per poll.
pub const WALK_BUDGET: usize = 4096;
/// Messages sent per poll at most (journal and pass together).
pub const SEND_BUDGET: usize = 8;
/// Largest config envelope the link carries.
pub const MAX_CONFIG: usize = 1 << 20;
/// Between two sends of the config while the peer runs an older one.
pub const CONFIG_RESEND: Duration = Duration::from_secs(2);

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub sent: u64,
    pub received: u64,
    /// Datagrams the transmit path refused.
    pub send_failed: u64,
    /// Messages of the peer never received (sequence gaps).
    pub lost: u64,
    /// Refused datagrams, by [`Error`].
    pub rejected: [u64; Error::ALL.len()],
    pub records_sent: u64,
    pub records_received: u64,
    /// Records whose import failed (see the engine's replica counters).
    pub records_refused: u64,
    /// Full refresh passes sent, and received whole.
    pub passes_sent: u64,
    pub passes_received: u64,
    pub configs_sent: u64,
    pub configs_received: u64,
    /// Configs refused: not decodable, invalid, or not newer.
    pub configs_refused: u64,
}

/// Where the sender's full refresh pass is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pass {
    generation: u32,
    /// Next slab entry of the connection table, then of persistence.
    flows: Option<usize>,
    persist: Option<usize>,
    started: bool,
}

/// A config envelope being received.
#[derive(Debug)]
struct Assembly {
    serial: u64,
    buf: Vec<u8>,
    have: Vec<bool>,
    missing: usize,
}

/// What the receiving side asks of the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    Nothing,
    /// A whole config envelope with a serial above ours: decode, merge
    /// with our own network and pair settings, store and apply it.
    Config {
        serial: u64,
        envelope: Vec<u8>,
    },
}

/// Our role as the hello says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Local {
    pub role: u8,
    pub priority: u8,
    pub master: bool,
    /// The config serial we run.
    pub serial: u64,
}

/// One end of the sync link.
pub struct SyncLink {
    key: [u8; 32],
    pub peer: Ipv4Addr,
    pub port: u16,
    boot_id: u64,
    seq: u32,
    next_hello: Instant,
    // What we heard.
    peer_boot: Option<u64>,
    peer_seq: u32,
    peer_heard: Option<Instant>,
    peer_hello: Option<Hello>,
    /// A pass of this generation is arriving without a gap so far.
    pass_in: Option<u32>,
    complete: bool,
    // What we send.
    refresh: Duration,
    generation: u32,
    pass: Option<Pass>,
    /// Records of the pass walked but not sent yet (at most one message
    /// and one walk step).
    pending: Vec<Record>,
    next_pass: Instant,
    pass_wanted: bool,
    config_out: Option<(u64, Vec<u8>)>,
    next_config: Instant,
    config_in: Option<Assembly>,
    pub stats: SyncStats,
}

impl SyncLink {
    pub fn new(
        key: [u8; 32],
        peer: Ipv4Addr,
        port: u16,
        refresh: Duration,
        boot_id: u64,
        now: Instant,
    ) -> SyncLink {
        SyncLink {
            key,
            peer,
            port,
            boot_id,
            seq: 0,
            next_hello: now,
            peer_boot: None,
            peer_seq: 0,
            peer_heard: None,
            peer_hello: None,
            pass_in: None,
            complete: false,
            refresh,
            generation: 0,
            pass: None,
            pending: Vec::new(),
            next_pass: now,
            pass_wanted: false,
            config_out: None,
            next_config: now,
            config_in: None,
            stats: SyncStats::default(),
        }
    }

    /// Whether the peer spoke within [`PEER_TIMEOUT`].
    pub fn peer_alive(&self, now: Instant) -> bool {
        self.peer_heard.is_some_and(|t| now < t.add(PEER_TIMEOUT))
    }

    pub fn peer_heard(&self) -> Option<Instant> {
        self.peer_heard
    }

    /// The peer's last hello.
    pub fn peer_hello(&self) -> Option<&Hello> {
        self.peer_hello.as_ref()
    }

    /// Whether our copy of the master's tables is complete (see the module
    /// documentation).
    pub fn complete(&self) -> bool {
        self.complete
    }

    /// The config envelope to offer the peer while we are master.
    pub fn set_config(&mut self, serial: u64, envelope: Vec<u8>) {
        if envelope.len() <= MAX_CONFIG {
            self.config_out = Some((serial, envelope));
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Takes one received datagram (UDP payload from the peer).
    pub fn on_datagram(
        &mut self,
        data: &[u8],
        engine: &mut Engine,
        local: &Local,
        now: Instant,
    ) -> Received {
        match self.accept(data, engine, local, now) {
            Ok(r) => {
                self.stats.received += 1;
                r
            }
            Err(e) => {
                self.stats.rejected[e.index()] += 1;
                Received::Nothing
            }
        }
    }

    fn accept(
        &mut self,
        data: &[u8],
        engine: &mut Engine,
        local: &Local,
        now: Instant,
    ) -> Result<Received, Error> {
        let msg = Message::new_checked(data)?;
        if !msg.verify(&self.key) {
            return Err(Error::BadMac);
        }
        let kind = msg.kind()?;
        let (boot, seq) = (msg.boot_id(), msg.sequence());
        if self.peer_boot == Some(boot) {
            if seq <= self.peer_seq {
                return Err(Error::Replayed);
            }
            let gap = seq - self.peer_seq - 1;
            if gap > 0 {
                self.stats.lost += u64::from(gap);
                // A pass with a hole is no complete copy.
                self.pass_in = None;
            }
        } else {
            // The peer (re)booted: whatever it sent before is void.
            self.peer_boot = Some(boot);
            self.pass_in = None;
        }
        self.peer_seq = seq;
        self.peer_heard = Some(now);
        let body = msg.body();
        match kind {
            Kind::Hello => {
                let h = Hello::parse(body)?;
                if h.need_refresh && local.master {
                    self.pass_wanted = true;
                }
                self.peer_hello = Some(h);
                Ok(Received::Nothing)
            }
            Kind::Records => {
                let (h, records) = wire::parse_records(body)?;
                // Records from a master while we are master too (split
                // brain) are not taken: our own view holds until VRRP
                // settles who is master.
                let take = !local.master;
                for r in records {
                    let Ok(rec) = wire::parse_record(r) else {
                        self.stats.records_refused += 1;
                        continue;
                    };
                    self.stats.records_received += 1;
                    if take && engine.import(&rec, now).is_err() {
                        self.stats.records_refused += 1;
                    }
                }
                if h.generation != 0 {
                    if h.pass_start {
                        self.pass_in = Some(h.generation);
                    }
                    if h.pass_end && self.pass_in == Some(h.generation) {
                        self.pass_in = None;
                        self.stats.passes_received += 1;
                        if take {
                            self.complete = true;
                        }
                    }
                }
                Ok(Received::Nothing)
            }
            Kind::Config => {
                let p = ConfigPiece::parse(body)?;
                Ok(self.config_piece(&p, local))
            }
        }
    }

    fn config_piece(&mut self, p: &ConfigPiece, local: &Local) -> Received {
        if local.master || p.serial <= local.serial || p.total as usize > MAX_CONFIG || p.total == 0
        {
            return Received::Nothing;
        }
        let total = p.total as usize;
        let restart = self
            .config_in
            .as_ref()
            .is_none_or(|a| a.serial != p.serial || a.buf.len() != total);
        if restart {
            let pieces = total.div_ceil(wire::MAX_CONFIG_PIECE);
            self.config_in = Some(Assembly {
                serial: p.serial,
                buf: vec![0; total],
                have: vec![false; pieces],
                missing: pieces,
            });
        }
        let Some(a) = self.config_in.as_mut() else {
            return Received::Nothing;
        };
        let off = p.offset as usize;
        // Pieces are whole MAX_CONFIG_PIECE slices: anything else is not
        // from our sender.
        if !off.is_multiple_of(wire::MAX_CONFIG_PIECE)
            || p.data.len() != wire::MAX_CONFIG_PIECE.min(total - off)
        {
            return Received::Nothing;
        }
        let i = off / wire::MAX_CONFIG_PIECE;
        if !a.have[i] {
            a.buf[off..off + p.data.len()].copy_from_slice(p.data);
            a.have[i] = true;
            a.missing -= 1;
        }
        if a.missing > 0 {
            return Received::Nothing;
        }
        let Some(a) = self.config_in.take() else {
            return Received::Nothing;
        };
        self.stats.configs_received += 1;
        Received::Config {
            serial: a.serial,
            envelope: a.buf,
        }
    }

    /// The caller refused a received config (undecodable, invalid).
    pub fn config_refused(&mut self) {
        self.stats.configs_refused += 1;
    }

    /// Sends what is due: a hello, and while master the journal, the
    /// refresh pass and the config. `send` takes each datagram (the UDP
    /// payload) and says whether it went out. Returns when to call again.
    pub fn poll(
        &mut self,
        engine: &mut Engine,
        local: &Local,
        now: Instant,
        send: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Instant {
        if !self.peer_alive(now) && self.complete {
            // A copy we can no longer keep current.
            self.complete = false;
        }
        if now >= self.next_hello {
            self.next_hello = now.add(HELLO_INTERVAL);
            let h = Hello {
                role: local.role,
                priority: local.priority,
                need_refresh: !local.master && !self.complete,
                complete: self.complete,
                serial: local.serial,
                flows: engine.conntrack().len() as u32,
                persistence: engine.persistence().len() as u32,
                acked: self.peer_seq,
            };
            let seq = self.next_seq();
            let b = wire::hello(&self.key, self.boot_id, seq, &h);
            self.transmit(b.datagram(), send);
        }
        if !local.master {
            engine.clear_journal();
            self.pass = None;
            self.pending.clear();
            return self.next_hello;
        }
        // We are master: our tables are the reference.
        self.complete = false;
        let mut budget = SEND_BUDGET;
        budget -= self.send_journal(engine, budget, send);
        if self.pass.is_none()
            && (now >= self.next_pass || self.pass_wanted)
            && self.peer_alive(now)
        {
            self.generation = self.generation.wrapping_add(1).max(1);
            self.pass = Some(Pass {
                generation: self.generation,
                flows: Some(0),
                persist: Some(0),
                started: false,
            });
            self.pass_wanted = false;
        }
        if budget > 0 && self.pass.is_some() {
            self.send_pass(engine, budget, now, send);
        }
        if self.pass.is_none() && now >= self.next_pass {
            self.next_pass = now.add(self.refresh);
        }
        self.send_config(local, now, send);
        if self.pass.is_some() || engine.journal_len() > 0 {
            now
        } else {
            self.next_hello.min(self.next_pass)
        }
    }

    fn transmit(&mut self, datagram: &[u8], send: &mut dyn FnMut(&[u8]) -> bool) -> bool {
        let ok = send(datagram);
        if ok {
            self.stats.sent += 1;
        } else {
            self.stats.send_failed += 1;
        }
        ok
    }

    /// Sends journaled changes; returns the messages used.
    fn send_journal(
        &mut self,
        engine: &mut Engine,
        budget: usize,
        send: &mut dyn FnMut(&[u8]) -> bool,
    ) -> usize {
        let key = self.key;
        let mut used = 0;
        while used < budget && engine.journal_len() > 0 {
            let seq = self.next_seq();
            let mut b = wire::records(self.boot_id, seq, &RecordsHeader::default());
            let mut n = 0;
            while n < wire::MAX_RECORDS
                && let Some(r) = engine.journal()
            {
                wire::push_record(&mut b, &r);
                n += 1;
            }
            self.stats.records_sent += n as u64;
            let d = wire::finish_records(&mut b, &key, false);
            self.transmit(d, send);
            used += 1;
        }
        used
    }

    /// Sends up to `budget` messages of the refresh pass, walking at most
    /// [`WALK_BUDGET`] table entries.
    fn send_pass(
        &mut self,
        engine: &mut Engine,
        budget: usize,
        now: Instant,
        send: &mut dyn FnMut(&[u8]) -> bool,
    ) {
        let Some(mut pass) = self.pass else {
            return;
        };
        let key = self.key;
        let mut walked = 0;
        let mut messages = 0;
        while messages < budget {
            let pending = &mut self.pending;
            while pending.len() < wire::MAX_RECORDS && walked < WALK_BUDGET {
                let step = (WALK_BUDGET - walked).min(64);
                if let Some(from) = pass.flows {
                    pass.flows = engine.export_flows(from, step, now, &mut |r| pending.push(r));
                } else if let Some(from) = pass.persist {
                    pass.persist =
                        engine.export_persistence(from, step, now, &mut |r| pending.push(r));
                } else {
                    break;
                }
                walked += step;
            }
            let walk_done = pass.flows.is_none() && pass.persist.is_none();
            if self.pending.len() < wire::MAX_RECORDS && !walk_done {
                // Out of walk budget for this poll: go on next time.
                break;
            }
            let seq = self.next_seq();
            let header = RecordsHeader {
                generation: pass.generation,
                pass_start: !pass.started,
                pass_end: false,
                count: 0,
            };
            let mut b = wire::records(self.boot_id, seq, &header);
            let take = self.pending.len().min(wire::MAX_RECORDS);
            for r in self.pending.drain(..take) {
                wire::push_record(&mut b, &r);
            }
            self.stats.records_sent += take as u64;
            let end = walk_done && self.pending.is_empty();
            let d = wire::finish_records(&mut b, &key, end);
            self.transmit(d, send);
            pass.started = true;
            messages += 1;
            if end {
                self.stats.passes_sent += 1;
                self.pass = None;
                self.next_pass = now.add(self.refresh);
                return;
            }
        }
        self.pass = Some(pass);
    }

    fn send_config(&mut self, local: &Local, now: Instant, send: &mut dyn FnMut(&[u8]) -> bool) {
        let Some(peer) = self.peer_hello else {
            return;
        };
        let Some((serial, envelope)) = &self.config_out else {
            return;
        };
        if peer.serial >= *serial
            || *serial != local.serial
            || now < self.next_config
            || !self.peer_alive(now)
        {
            return;
        }
        let (serial, envelope) = (*serial, envelope.clone());
        self.next_config = now.add(CONFIG_RESEND);
        for (i, piece) in envelope.chunks(wire::MAX_CONFIG_PIECE).enumerate() {
            let seq = self.next_seq();
            let b = wire::config_piece(
                &self.key,
                self.boot_id,
                seq,
                &ConfigPiece {
                    serial,
                    total: envelope.len() as u32,
                    offset: (i * wire::MAX_CONFIG_PIECE) as u32,
                    data: piece,
                },
            );
            self.transmit(b.datagram(), send);
        }
        self.stats.configs_sent += 1;
    }
}
