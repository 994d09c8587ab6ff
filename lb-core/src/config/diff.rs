//! What a new configuration keeps of the old one, for a live apply.
//!
//! A virtual service continues from the old configuration when its label,
//! VIP, ports, protocol and forwarding method are the same (what its flows
//! were matched and rewritten by); a real server continues within such a
//! service when its label, address and port are the same. Everything else
//! about them (weights, limits, state, checks, persistence timeout) may
//! change and is applied to the continuing entry. Anything that does not
//! continue is new (health unknown, then checked) or removed (its flows
//! drain).

use alloc::vec::Vec;

use super::{Config, RealServer, VirtualService};

/// How a new configuration maps onto the old one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Per new virtual service: the old one it continues, if any.
    pub services: Vec<Option<usize>>,
    /// Per new virtual service, per real server: the old server (of the
    /// old service in `services`) it continues, if any.
    pub servers: Vec<Vec<Option<usize>>>,
}

/// Whether `new` continues `old` (same data-path identity).
pub fn same_service(old: &VirtualService, new: &VirtualService) -> bool {
    old.label == new.label
        && old.vip == new.vip
        && old.ports == new.ports
        && old.protocol == new.protocol
        && old.forwarding == new.forwarding
}

/// Whether `new` continues `old` within a continuing service.
pub fn same_server(old: &RealServer, new: &RealServer) -> bool {
    old.label == new.label && old.ip == new.ip && old.port == new.port
}

impl Plan {
    /// Old service indices that do not continue.
    pub fn removed_services(&self, old: &Config) -> Vec<usize> {
        (0..old.virtual_services.len())
            .filter(|o| !self.services.contains(&Some(*o)))
            .collect()
    }

    /// Old (service, server) pairs of continuing services whose server
    /// does not continue.
    pub fn removed_servers(&self, old: &Config) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (n, o) in self.services.iter().enumerate() {
            let Some(o) = *o else { continue };
            for r in 0..old.virtual_services[o].real_servers.len() {
                if !self.servers[n].contains(&Some(r)) {
                    out.push((o, r));
                }
            }
        }
        out
    }
}

/// Matches `new` against `old`.
pub fn plan(old: &Config, new: &Config) -> Plan {
    let mut p = Plan::default();
    for vs in &new.virtual_services {
        let o = old
            .virtual_services
            .iter()
            .position(|ovs| same_service(ovs, vs));
        let servers = match o {
            Some(o) => {
                let ovs = &old.virtual_services[o];
                vs.real_servers
                    .iter()
                    .map(|rs| ovs.real_servers.iter().position(|ors| same_server(ors, rs)))
                    .collect()
            }
            None => alloc::vec![None; vs.real_servers.len()],
        };
        p.services.push(o);
        p.servers.push(servers);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;

    const MEDICAL: &str = include_str!("../../configs/medical.toml");

    #[test]
    fn unchanged_services_and_servers_continue() {
        let old = from_toml(MEDICAL).unwrap();
        let mut new = old.clone();
        // Drop HL7 (index 1), add a service, change a weight, replace a server.
        new.virtual_services.remove(1);
        let mut extra = new.virtual_services[0].clone();
        extra.label = "EXTRA".into();
        extra.vip = "10.12.1.200".parse().unwrap();
        new.virtual_services.push(extra);
        new.virtual_services[0].real_servers[1].weight = 50;
        new.virtual_services[1].real_servers[0].ip = "10.12.2.160".parse().unwrap();
        let p = plan(&old, &new);
        assert_eq!(p.services, [Some(0), Some(2), Some(3), Some(4), None]);
        assert_eq!(p.servers[0], [Some(0), Some(1)]);
        assert_eq!(p.servers[1], [None, Some(1)]);
        assert_eq!(p.servers[4], [None, None]);
        assert_eq!(p.removed_services(&old), [1]);
        assert_eq!(p.removed_servers(&old), [(2, 0)]);
    }

    #[test]
    fn a_new_vip_or_method_is_a_new_service() {
        let old = from_toml(MEDICAL).unwrap();
        let mut new = old.clone();
        new.virtual_services[0].vip = "10.12.1.101".parse().unwrap();
        new.virtual_services[2].forwarding = crate::config::Forwarding::Snat;
        let p = plan(&old, &new);
        assert_eq!(p.services[0], None);
        assert_eq!(p.services[2], None);
        assert_eq!(p.removed_services(&old), [0, 2]);
    }
}
