//! Where a forwarded packet leaves: interface and next hop.
//!
//! The appliance's routing is small by design: the connected subnet of each
//! interface, plus one default gateway. NIC `n` is interface `n` of the
//! configuration.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::config::Network;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Connected {
    /// `None` until DHCP (or the wizard) supplies an address.
    addr: Option<Ipv4Addr>,
    prefix: u8,
}

impl Connected {
    fn contains(&self, dst: Ipv4Addr) -> bool {
        let Some(addr) = self.addr else {
            return false;
        };
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix.min(32)))
            .unwrap_or(0);
        u32::from(addr) & mask == u32::from(dst) & mask
    }
}

#[derive(Clone, Debug, Default)]
pub struct Routes {
    nics: Vec<Connected>,
    gateway: Option<Ipv4Addr>,
    /// SNAT source per interface when it is not the interface's address.
    snat: Vec<Option<Ipv4Addr>>,
}

impl Routes {
    pub fn from_network(net: &Network) -> Self {
        Routes {
            nics: net
                .interfaces
                .iter()
                .map(|i| Connected {
                    addr: i.address,
                    prefix: i.prefix.unwrap_or(32),
                })
                .collect(),
            gateway: net.gateway,
            snat: Vec::new(),
        }
    }

    /// The source address of SNAT flows leaving on `nic`.
    pub fn snat_source(&self, nic: usize) -> Option<Ipv4Addr> {
        self.snat.get(nic).copied().flatten().or(self.address(nic))
    }

    pub fn set_snat_source(&mut self, nic: usize, addr: Option<Ipv4Addr>) -> bool {
        if nic >= self.nics.len() {
            return false;
        }
        if self.snat.len() <= nic {
            self.snat.resize(nic + 1, None);
        }
        self.snat[nic] = addr;
        true
    }

    pub fn nic_count(&self) -> usize {
        self.nics.len()
    }

    /// The appliance's own address on `nic`.
    pub fn address(&self, nic: usize) -> Option<Ipv4Addr> {
        self.nics.get(nic)?.addr
    }

    pub fn set_address(&mut self, nic: usize, addr: Option<(Ipv4Addr, u8)>) -> bool {
        match self.nics.get_mut(nic) {
            Some(c) => {
                *c = match addr {
                    Some((a, p)) => Connected {
                        addr: Some(a),
                        prefix: p.min(32),
                    },
                    None => Connected::default(),
                };
                true
            }
            None => false,
        }
    }

    pub fn set_gateway(&mut self, gateway: Option<Ipv4Addr>) {
        self.gateway = gateway;
    }

    /// The interface whose subnet holds `dst`.
    pub fn on_link(&self, dst: Ipv4Addr) -> Option<usize> {
        self.nics.iter().position(|c| c.contains(dst))
    }

    /// Interface and next hop towards `dst`.
    pub fn route(&self, dst: Ipv4Addr) -> Option<(usize, Ipv4Addr)> {
        if let Some(nic) = self.on_link(dst) {
            return Some((nic, dst));
        }
        let gw = self.gateway?;
        Some((self.on_link(gw)?, gw))
    }

    /// Whether `addr` is one of the appliance's interface addresses.
    pub fn is_local(&self, addr: Ipv4Addr) -> bool {
        self.nics.iter().any(|c| c.addr == Some(addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Interface;

    fn iface(addr: [u8; 4], prefix: u8) -> Interface {
        Interface {
            name: "eth".into(),
            dhcp: false,
            address: Some(Ipv4Addr::from(addr)),
            prefix: Some(prefix),
            role: Default::default(),
        }
    }

    #[test]
    fn connected_then_gateway() {
        let net = Network {
            interfaces: alloc::vec![iface([192, 0, 2, 1], 24), iface([10, 1, 0, 1], 16)],
            gateway: Some(Ipv4Addr::new(192, 0, 2, 254)),
            ..Network::default()
        };
        let r = Routes::from_network(&net);
        let rs = Ipv4Addr::new(10, 1, 3, 4);
        assert_eq!(r.route(rs), Some((1, rs)));
        let c = Ipv4Addr::new(192, 0, 2, 77);
        assert_eq!(r.route(c), Some((0, c)));
        assert_eq!(
            r.route(Ipv4Addr::new(8, 8, 8, 8)),
            Some((0, Ipv4Addr::new(192, 0, 2, 254)))
        );
        assert!(r.is_local(Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(r.address(1), Some(Ipv4Addr::new(10, 1, 0, 1)));
    }

    #[test]
    fn no_route_without_address_or_gateway() {
        let mut r = Routes::from_network(&Network {
            interfaces: alloc::vec![Interface {
                dhcp: true,
                address: None,
                prefix: None,
                ..iface([0; 4], 0)
            }],
            ..Network::default()
        });
        assert_eq!(r.route(Ipv4Addr::new(10, 0, 0, 1)), None);
        assert!(r.set_address(0, Some((Ipv4Addr::new(10, 0, 0, 2), 8))));
        assert_eq!(
            r.route(Ipv4Addr::new(10, 0, 0, 1)),
            Some((0, Ipv4Addr::new(10, 0, 0, 1)))
        );
        assert!(!r.set_address(5, None));
        // /0 holds everything.
        assert!(r.set_address(0, Some((Ipv4Addr::new(10, 0, 0, 2), 0))));
        assert_eq!(r.on_link(Ipv4Addr::new(1, 2, 3, 4)), Some(0));
    }
}
