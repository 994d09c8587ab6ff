//! The engine's tables as the other appliance of a pair needs them: what
//! a flow or a persistence binding is, in terms that do not depend on
//! table slots or configuration order (addresses and ports), taken out
//! ([`Engine::journal`], [`Engine::export_flows`],
//! [`Engine::export_persistence`]) and put in ([`Engine::import`]).
//!
//! A record names its virtual service by the VIP, port and protocol, and
//! its real server by address and port, so two appliances whose
//! configurations list the same services in another order still agree. A
//! replicated flow is forwarded exactly as on the appliance it came from:
//! same real server, same NAT or SNAT translation (SNAT's source address is
//! the pair's floating address, so it means the same on both, and its port
//! is taken from the allocator here too).
//!
//! What is replicated, and when (the journal): a TCP flow once its
//! handshake completes and when it starts closing or is reset (half-open
//! flows are not: a SYN flood would otherwise flood the backup, and a
//! client whose handshake was cut retries); a UDP flow when it starts; a
//! persistence binding when it is made. Everything live is also sent again
//! by the periodic full refresh (the caller walks the tables with the
//! export functions), which carries the current expiry of flows and
//! bindings that stay busy, and repairs what a lost message or a full
//! journal missed.

use alloc::collections::VecDeque;
use core::net::Ipv4Addr;

use super::{Engine, on_flow_removed};
use crate::config::Forwarding;
use crate::conntrack::{Flow, FlowId, InsertError, TcpState};
use crate::flow::{Endpoint, FlowKey, Protocol};
use crate::time::{Duration, Instant};

/// One tracked flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// The client's packets as they arrive: client → VIP:port.
    pub original: FlowKey,
    /// The real server and the port its packets go to.
    pub server: Endpoint,
    /// SNAT: the appliance's source towards the server (floating address
    /// and allocated port).
    pub snat: Option<Endpoint>,
    pub state: TcpState,
    /// Time left until the flow expires (idle timeout from its last packet).
    pub remaining: Duration,
    /// The flow's idle timeout once established.
    pub established: Duration,
}

/// One persistence binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistRecord {
    /// The virtual service: its VIP, first port and protocol.
    pub vip: Endpoint,
    pub proto: Protocol,
    /// The client's address, masked with the service's persistence mask.
    pub client: Ipv4Addr,
    /// The real server: address and configured port (0 when it has none).
    pub server: Endpoint,
    pub remaining: Duration,
}

/// What travels to the other appliance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record {
    Flow(FlowRecord),
    Persist(PersistRecord),
}

/// Why a record was not taken in (counted, never fatal: the periodic
/// refresh tries again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportError {
    /// No L4 virtual service here has that VIP, port and protocol.
    UnknownService,
    /// The service has no such real server here.
    UnknownServer,
    /// A SNAT record without its source, or a state that cannot be.
    BadRecord,
    /// Expired already.
    Expired,
    /// The connection or persistence table is full.
    TableFull,
    /// The SNAT port is held here by another flow to that server.
    PortInUse,
}

impl ImportError {
    pub const ALL: [ImportError; 6] = [
        ImportError::UnknownService,
        ImportError::UnknownServer,
        ImportError::BadRecord,
        ImportError::Expired,
        ImportError::TableFull,
        ImportError::PortInUse,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ImportError::UnknownService => "unknown-service",
            ImportError::UnknownServer => "unknown-server",
            ImportError::BadRecord => "bad-record",
            ImportError::Expired => "expired",
            ImportError::TableFull => "table-full",
            ImportError::PortInUse => "port-in-use",
        }
    }

    pub fn index(self) -> usize {
        ImportError::ALL
            .iter()
            .position(|e| *e == self)
            .unwrap_or(0)
    }
}

/// Counters of the journal and of imports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStats {
    /// Records journaled.
    pub journaled: u64,
    /// Records the full journal could not take (the refresh repairs them).
    pub journal_overflow: u64,
    /// Flows and bindings taken in (new or updated).
    pub imported_flows: u64,
    pub imported_persist: u64,
    /// Local flows replaced by a replicated one for the same client or
    /// SNAT port (the master's view wins).
    pub replaced: u64,
    /// Records refused, by [`ImportError`].
    pub refused: [u64; ImportError::ALL.len()],
}

/// The bounded queue of changes waiting to be sent.
#[derive(Debug)]
pub(super) struct Journal {
    queue: VecDeque<Record>,
    capacity: usize,
}

impl Journal {
    pub(super) fn new(capacity: usize) -> Journal {
        Journal {
            queue: VecDeque::with_capacity(capacity),
            capacity,
        }
    }
}

impl Engine {
    /// Starts keeping a journal of at most `capacity` changes for the pair
    /// (`0` stops it and drops what it held).
    pub fn set_journal(&mut self, capacity: usize) {
        self.journal = (capacity > 0).then(|| Journal::new(capacity));
    }

    /// Takes the oldest journaled change.
    pub fn journal(&mut self) -> Option<Record> {
        self.journal.as_mut()?.queue.pop_front()
    }

    /// Changes waiting in the journal.
    pub fn journal_len(&self) -> usize {
        self.journal.as_ref().map_or(0, |j| j.queue.len())
    }

    /// Drops every journaled change (e.g. while this appliance is backup).
    pub fn clear_journal(&mut self) {
        if let Some(j) = &mut self.journal {
            j.queue.clear();
        }
    }

    pub fn replica_stats(&self) -> &ReplicaStats {
        &self.replica
    }

    fn journal_push(&mut self, r: Record) {
        let Some(j) = &mut self.journal else {
            return;
        };
        if j.queue.len() >= j.capacity {
            self.replica.journal_overflow += 1;
            return;
        }
        j.queue.push_back(r);
        self.replica.journaled += 1;
    }

    /// Journals flow `id` after a state change (see the module
    /// documentation for which changes).
    pub(super) fn journal_flow(&mut self, id: FlowId, now: Instant) {
        if self.journal.is_none() {
            return;
        }
        if let Some(r) = self
            .conntrack
            .flow(id)
            .and_then(|f| self.flow_record(f, now))
        {
            self.journal_push(Record::Flow(r));
        }
    }

    /// Journals the binding of `client` (already masked or not) in `service`.
    pub(super) fn journal_persist(
        &mut self,
        service: u16,
        client: Ipv4Addr,
        server: u16,
        timeout: Duration,
    ) {
        if self.journal.is_none() {
            return;
        }
        let Some(svc) = self.services.get(usize::from(service)) else {
            return;
        };
        let Some((mask, _)) = svc.persistence else {
            return;
        };
        let Some(server) = svc.server_config.get(usize::from(server)) else {
            return;
        };
        let r = PersistRecord {
            vip: svc.vip,
            proto: svc.protocol,
            client: Ipv4Addr::from(u32::from(client) & u32::from(mask)),
            server: Endpoint::new(server.ip, server.port.unwrap_or(0)),
            remaining: timeout,
        };
        self.journal_push(Record::Persist(r));
    }

    /// The record of a live flow (none for half-open or expired ones).
    fn flow_record(&self, f: &Flow, now: Instant) -> Option<FlowRecord> {
        // Outbound SNAT flows stay on this appliance (their record would
        // name no VIP the backup could find them by).
        if f.state == TcpState::Handshake || f.expires <= now || f.is_outbound() {
            return None;
        }
        let svc = self.services.get(usize::from(f.service))?;
        let rs = svc.server_config.get(usize::from(f.server))?;
        let server = Endpoint::new(rs.ip, rs.target_port(svc.forwarding, f.original.dst.port));
        let snat = (svc.forwarding == Forwarding::Snat && f.has_reply_key()).then_some(f.reply.dst);
        Some(FlowRecord {
            original: f.original,
            server,
            snat,
            state: f.state,
            remaining: f.expires.since(now),
            established: f.established_timeout(),
        })
    }

    /// Flow records of slab entries `from..` (at most `budget` entries
    /// examined); returns where to go on, `None` once the walk is through
    /// the table.
    pub fn export_flows(
        &self,
        from: usize,
        budget: usize,
        now: Instant,
        out: &mut impl FnMut(Record),
    ) -> Option<usize> {
        let end = self.conntrack.slab_len();
        let stop = from.saturating_add(budget).min(end);
        for i in from..stop {
            if let Some((_, f)) = self.conntrack.flow_at(i)
                && let Some(r) = self.flow_record(f, now)
            {
                out(Record::Flow(r));
            }
        }
        (stop < end).then_some(stop)
    }

    /// Persistence records of slots `from..`, like [`Engine::export_flows`].
    pub fn export_persistence(
        &self,
        from: usize,
        budget: usize,
        now: Instant,
        out: &mut impl FnMut(Record),
    ) -> Option<usize> {
        let end = self.persist.slot_count();
        let stop = from.saturating_add(budget).min(end);
        for i in from..stop {
            let Some(e) = self.persist.entry_at(i, now) else {
                continue;
            };
            let Some(svc) = self.services.get(usize::from(e.service)) else {
                continue;
            };
            let Some(rs) = svc.server_config.get(usize::from(e.server)) else {
                continue;
            };
            out(Record::Persist(PersistRecord {
                vip: svc.vip,
                proto: svc.protocol,
                client: e.client,
                server: Endpoint::new(rs.ip, rs.port.unwrap_or(0)),
                remaining: e.expires.since(now),
            }));
        }
        (stop < end).then_some(stop)
    }

    /// Takes in a record from the other appliance; counted either way.
    pub fn import(&mut self, record: &Record, now: Instant) -> Result<(), ImportError> {
        let result = match record {
            Record::Flow(f) => self.import_flow(f, now),
            Record::Persist(p) => self.import_persist(p, now),
        };
        match result {
            Ok(()) => match record {
                Record::Flow(_) => self.replica.imported_flows += 1,
                Record::Persist(_) => self.replica.imported_persist += 1,
            },
            Err(e) => self.replica.refused[e.index()] += 1,
        }
        result
    }

    fn import_flow(&mut self, r: &FlowRecord, now: Instant) -> Result<(), ImportError> {
        if r.remaining.millis() == 0 {
            return Err(ImportError::Expired);
        }
        let tcp = r.original.proto == Protocol::Tcp;
        if tcp == (r.state == TcpState::Udp) || r.state == TcpState::Handshake {
            return Err(ImportError::BadRecord);
        }
        let svc = self
            .service_for(r.original.dst, r.original.proto)
            .ok_or(ImportError::UnknownService)?;
        let service = &self.services[svc];
        let forwarding = service.forwarding;
        let srv = service
            .server_config
            .iter()
            .position(|rs| {
                rs.ip == r.server.addr
                    && rs.target_port(forwarding, r.original.dst.port) == r.server.port
            })
            .ok_or(ImportError::UnknownServer)?;
        let reply = match forwarding {
            Forwarding::Dr | Forwarding::Layer7 => None,
            Forwarding::Nat => Some(FlowKey {
                proto: r.original.proto,
                src: r.server,
                dst: r.original.src,
            }),
            Forwarding::Snat => Some(FlowKey {
                proto: r.original.proto,
                src: r.server,
                dst: r.snat.ok_or(ImportError::BadRecord)?,
            }),
        };
        let expires = now.add(r.remaining);
        // The same flow known here already: bring it up to date.
        if let Some((id, crate::conntrack::Direction::Original)) =
            self.conntrack.get(&r.original, now)
            && let Some(f) = self.conntrack.flow(id)
            && usize::from(f.service) == svc
            && usize::from(f.server) == srv
            && (f.has_reply_key().then_some(f.reply) == reply)
        {
            self.conntrack.set_replica_state(id, r.state, expires);
            return Ok(());
        }
        // Otherwise the master's view wins over whatever holds its keys.
        for key in core::iter::once(&r.original).chain(reply.as_ref()) {
            if let Some((id, _)) = self.conntrack.get(key, now) {
                self.remove_flow(id);
                self.replica.replaced += 1;
            }
        }
        let alloc = self.services[svc].snat_allocator[srv];
        if let (Some(reply), Some(i)) = (reply, alloc)
            && forwarding == Forwarding::Snat
            && !self.snat_ports[i].take(reply.dst.port)
        {
            return Err(ImportError::PortInUse);
        }
        let established = r.established;
        let Engine {
            services,
            conntrack,
            snat_ports,
            ..
        } = self;
        let inserted = conntrack.insert(
            r.original,
            reply,
            svc as u16,
            srv as u16,
            established,
            now,
            &mut |f: &Flow| on_flow_removed(services, snat_ports, f),
        );
        let id = match inserted {
            Ok(id) => id,
            Err(e) => {
                if let (Some(reply), Some(i)) = (reply, alloc)
                    && forwarding == Forwarding::Snat
                {
                    self.snat_ports[i].free(reply.dst.port);
                }
                return Err(match e {
                    InsertError::KeyInUse { .. } => ImportError::PortInUse,
                    InsertError::Full | InsertError::SourceLimit => ImportError::TableFull,
                });
            }
        };
        self.conntrack.set_replica_state(id, r.state, expires);
        self.services[svc].servers[srv].flow_opened();
        Ok(())
    }

    fn remove_flow(&mut self, id: FlowId) {
        let Engine {
            services,
            conntrack,
            snat_ports,
            ..
        } = self;
        conntrack.remove(id, &mut |f: &Flow| on_flow_removed(services, snat_ports, f));
    }

    fn import_persist(&mut self, r: &PersistRecord, now: Instant) -> Result<(), ImportError> {
        if r.remaining.millis() == 0 {
            return Err(ImportError::Expired);
        }
        let svc = self
            .services
            .iter()
            .position(|s| s.vip == r.vip && s.protocol == r.proto)
            .ok_or(ImportError::UnknownService)?;
        let service = &self.services[svc];
        let (mask, _) = service.persistence.ok_or(ImportError::UnknownService)?;
        let srv = service
            .server_config
            .iter()
            .position(|rs| rs.ip == r.server.addr && rs.port.unwrap_or(0) == r.server.port)
            .ok_or(ImportError::UnknownServer)?;
        self.persist
            .insert(svc as u16, r.client, mask, srv as u16, r.remaining, now)
            .map_err(|_| ImportError::TableFull)
    }
}
