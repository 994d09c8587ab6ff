//! Live apply: a new configuration replaces the running one in one step,
//! without a restart and without touching what did not change.
//!
//! Virtual services and real servers that continue (see
//! [`crate::config::diff`]) keep their connections, persistence entries,
//! health, counters and SNAT ports; their new settings (weights, limits,
//! state, scheduler, timeouts) apply from now on. A real server or service
//! that was removed stops taking new connections and its existing ones
//! drain: it stays in the engine, behind the configured ones and reachable
//! only by its flows, until the next apply finds it without flows. New ones
//! start with health unknown (eligible, as a fresh server is) until their
//! checks say otherwise.
//!
//! The indices of the new configuration are the engine's identities from
//! now on; flows and persistence entries are renumbered in one pass over
//! each table (an administrative event, not per packet). Table sizes cannot
//! change live, nor does `[ha]` ([`ApplyReport::at_next_boot`]); network settings are applied
//! separately ([`Engine::set_interface_address`], [`Engine::set_gateway`]).

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::{Engine, EngineError, FallbackRuntime, ServiceRuntime, l7, lookups};
use crate::config::diff::{self, Plan};
use crate::config::{AdminState, Config, Forwarding};

use crate::conntrack::{ConnTable, Timeouts};
use crate::flow::Protocol;
use crate::frame::PortAllocator;

/// What a live apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// How the new configuration continues the old one.
    pub plan: Plan,
    /// Connections left draining on removed services and servers.
    pub draining: u64,
    /// Settings that changed but take effect only at the next boot.
    pub at_next_boot: Vec<&'static str>,
}

/// SNAT (and layer 7) port allocators, one per (protocol, server
/// address); for a live apply, keeping every allocator (and so every port
/// in use) whose (protocol, server) remains.
pub(super) struct SnatPorts {
    pub(super) keys: Vec<(Protocol, Ipv4Addr)>,
    pub(super) ports: Vec<PortAllocator>,
    old_keys: Vec<(Protocol, Ipv4Addr)>,
    old_ports: Vec<Option<PortAllocator>>,
    range: core::ops::RangeInclusive<u16>,
}

impl SnatPorts {
    pub(super) fn new(range: core::ops::RangeInclusive<u16>) -> Self {
        SnatPorts {
            keys: Vec::new(),
            ports: Vec::new(),
            old_keys: Vec::new(),
            old_ports: Vec::new(),
            range,
        }
    }

    /// The allocator for `key`, made (or taken over from before) if new.
    pub(super) fn index(&mut self, key: (Protocol, Ipv4Addr)) -> usize {
        if let Some(i) = self.keys.iter().position(|k| *k == key) {
            return i;
        }
        let kept = self
            .old_keys
            .iter()
            .position(|k| *k == key)
            .and_then(|i| self.old_ports[i].take());
        self.keys.push(key);
        self.ports
            .push(kept.unwrap_or_else(|| PortAllocator::new(self.range.clone())));
        self.ports.len() - 1
    }
}

/// A runtime that takes no new flows: removed service, or its servers.
fn retire(rt: &mut ServiceRuntime, server: usize) {
    if let Some(s) = rt.servers.get_mut(server) {
        s.admin = AdminState::Drain;
    }
}

impl Engine {
    /// Replaces `old` (the configuration the engine runs) by `new` (already
    /// validated) in place. See the module docs.
    pub fn apply(&mut self, old: &Config, new: &Config) -> Result<ApplyReport, EngineError> {
        if new.virtual_services.len() >= usize::from(u16::MAX)
            || new
                .virtual_services
                .iter()
                .any(|s| s.real_servers.len() >= usize::from(u16::MAX))
        {
            return Err(EngineError::TooManyServices);
        }
        let plan = diff::plan(old, new);
        let old_services = core::mem::take(&mut self.services);
        let mut snat = SnatPorts {
            keys: Vec::new(),
            ports: Vec::new(),
            old_keys: core::mem::take(&mut self.snat_keys),
            old_ports: core::mem::take(&mut self.snat_ports)
                .into_iter()
                .map(Some)
                .collect(),
            range: self.snat_range.clone(),
        };
        // Old (service, server) -> new (service, server).
        let mut map: Vec<Vec<Option<(u16, u16)>>> = old_services
            .iter()
            .map(|s| vec![None; s.servers.len()])
            .collect();
        let mut draining = 0u64;
        let mut services = Vec::with_capacity(new.virtual_services.len());
        // Layer 7 connections not yet bound to a server belong to their
        // service only: a removed service holding some drains too.
        let unbound: Vec<bool> = (0..old_services.len())
            .map(|oi| {
                self.l7_table
                    .count_where(|f| usize::from(f.service) == oi && f.server == l7::UNBOUND)
                    > 0
            })
            .collect();
        // Old service -> new service, for unbound layer 7 connections.
        let mut service_map: Vec<Option<u16>> = vec![None; old_services.len()];
        for (ni, vs) in new.virtual_services.iter().enumerate() {
            let mut rt = ServiceRuntime::build(vs, new, &mut snat);
            if let Some(oi) = plan.services[ni] {
                let ort = &old_services[oi];
                service_map[oi] = Some(ni as u16);
                rt.stats.service = ort.stats.service.clone();
                rt.stats.fallback_refused = ort.stats.fallback_refused;
                rt.stats.outbound = ort.stats.outbound;
                let mut pairs: Vec<(usize, usize)> = plan.servers[ni]
                    .iter()
                    .enumerate()
                    .filter_map(|(nj, oj)| Some((nj, (*oj)?)))
                    .collect();
                // The fallback server continues when it stays at the same
                // address and port.
                if let (FallbackRuntime::Server(nf), FallbackRuntime::Server(of)) =
                    (rt.fallback, ort.fallback)
                    && diff::same_server(&ort.server_config[of], &rt.server_config[nf])
                {
                    pairs.push((nf, of));
                }
                for (nj, oj) in pairs {
                    rt.servers[nj].continue_from(&ort.servers[oj]);
                    rt.stats.servers[nj] = ort.stats.servers[oj].clone();
                    map[oi][oj] = Some((ni as u16, nj as u16));
                }
                // Removed servers with connections drain behind the others.
                for (oj, st) in ort.servers.iter().enumerate() {
                    if map[oi][oj].is_some() || st.active == 0 {
                        continue;
                    }
                    let nj = rt.servers.len();
                    rt.servers.push(st.clone());
                    rt.server_config.push(ort.server_config[oj].clone());
                    rt.stats.servers.push(ort.stats.servers[oj].clone());
                    let key = (vs.protocol, ort.server_config[oj].ip);
                    rt.snat_allocator
                        .push(ort.snat_allocator[oj].map(|_| snat.index(key)));
                    retire(&mut rt, nj);
                    draining += u64::from(st.active);
                    map[oi][oj] = Some((ni as u16, nj as u16));
                }
            }
            services.push(rt);
        }
        // Removed services with connections drain behind the configured ones.
        let removed = plan.removed_services(old);
        for (oi, mut ort) in old_services.into_iter().enumerate() {
            let active: u64 = ort.servers.iter().map(|s| u64::from(s.active)).sum();
            if !removed.contains(&oi) || (active == 0 && !unbound[oi]) {
                continue;
            }
            let ni = services.len() as u16;
            service_map[oi] = Some(ni);
            let protocol = old
                .virtual_services
                .get(oi)
                .map_or(Protocol::Tcp, |v| v.protocol);
            for (oj, to) in map[oi].iter_mut().enumerate() {
                retire(&mut ort, oj);
                let key = (protocol, ort.server_config[oj].ip);
                ort.snat_allocator[oj] = ort.snat_allocator[oj].map(|_| snat.index(key));
                if ort.servers[oj].active > 0 {
                    *to = Some((ni, oj as u16));
                }
            }
            // No new bindings: persistence belongs to configured services.
            ort.persistence = None;
            // Its outbound flows drain too; their allocators follow the VIP.
            let vip = ort.vip.addr;
            ort.outbound = ort
                .outbound
                .map(|_| [Protocol::Tcp, Protocol::Udp].map(|p| snat.index((p, vip))));
            ort.fallback = FallbackRuntime::None;
            draining += active;
            services.push(ort);
        }
        self.services = services;
        self.snat_keys = snat.keys;
        self.snat_ports = snat.ports;
        self.rebuild_lookups(new);
        self.conntrack.set_timeouts(Timeouts::from_l4(&new.l4));

        let n_configured = new.virtual_services.len();
        let lookup = |s: u16, r: u16| {
            map.get(usize::from(s))
                .and_then(|v| v.get(usize::from(r)))
                .copied()
                .flatten()
        };
        // A flow whose server has no live count cannot exist; drop it if
        // one does. Outbound flows of a removed server end here: their
        // port goes back to the VIP's allocator, if it remains.
        let (keys, ports) = (&self.snat_keys, &mut self.snat_ports);
        self.conntrack.remap(lookup, &mut |f| {
            if f.is_outbound()
                && let Some(i) = keys
                    .iter()
                    .position(|k| *k == (f.original.proto, f.reply.dst.addr))
            {
                ports[i].free(f.reply.dst.port);
            }
        });
        // Likewise for layer 7 connections: bound ones follow their server,
        // unbound ones their service.
        self.l7_table.remap(
            |s, r| {
                if r == l7::UNBOUND {
                    Some((service_map.get(usize::from(s)).copied().flatten()?, r))
                } else {
                    lookup(s, r)
                }
            },
            &mut |_| {},
        );
        self.l7_table.set_timeouts(Timeouts::from_l4(&new.l4));
        let has_l7 = new
            .virtual_services
            .iter()
            .any(|vs| vs.forwarding == Forwarding::Layer7);
        // The first layer 7 service gets the table its memory was kept for.
        if has_l7 && self.l7_table.is_empty() && self.l7_table.capacity() < self.l7_capacity {
            self.l7_table =
                ConnTable::new(self.l7_capacity, Timeouts::from_l4(&new.l4), self.l7_seed);
        }
        self.persist.remap(|s, r| {
            let (ns, nr) = lookup(s, r)?;
            let (ns_i, nr_i) = (usize::from(ns), usize::from(nr));
            let vs = new.virtual_services.get(ns_i)?;
            let oi = plan.services.get(ns_i).copied().flatten()?;
            let same_mask = old
                .virtual_services
                .get(oi)
                .is_some_and(|o| o.persistence_mask() == vs.persistence_mask());
            (ns_i < n_configured && nr_i < vs.real_servers.len() && same_mask).then_some((ns, nr))
        });
        // Servers halted by the new configuration lose their flows now.
        for (ni, vs) in new.virtual_services.iter().enumerate() {
            for (nj, rs) in vs.real_servers.iter().enumerate() {
                let was = plan.services[ni].and_then(|oi| {
                    let oj = plan.servers[ni][nj]?;
                    Some(old.virtual_services[oi].real_servers[oj].state)
                });
                if rs.state == AdminState::Halt && was != Some(AdminState::Halt) {
                    self.set_server_admin(ni, nj, AdminState::Halt);
                }
            }
        }
        let mut at_next_boot = Vec::new();
        if new.l4.conntrack_capacity != old.l4.conntrack_capacity {
            at_next_boot.push("l4.conntrack_capacity");
        }
        if new.l4.persistence_capacity != old.l4.persistence_capacity {
            at_next_boot.push("l4.persistence_capacity");
        }
        // The pair (election, owned addresses, sync link) is built at boot.
        if new.ha != old.ha {
            at_next_boot.push("ha");
        }
        Ok(ApplyReport {
            plan,
            draining,
            at_next_boot,
        })
    }

    /// The VIP and NAT-server lookups of the configured services.
    fn rebuild_lookups(&mut self, config: &Config) {
        (self.vips, self.nat_servers) = lookups(config, &self.services);
        let configured = config.virtual_services.len().min(self.services.len());
        self.outbound_servers = super::outbound::servers(&self.services[..configured]);
    }

    /// Table sizes the engine was built with: (flows, persistence entries).
    pub fn table_sizes(&self) -> (usize, usize) {
        self.capacities
    }
}
