//! The management allow list: which source addresses may reach the
//! management ports. The frame path asks [`AllowList::permits`] for every
//! frame to a management port before the IP stack sees it, so a source
//! outside the list gets nothing back (not even a TCP reset).

use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

/// An IPv4 prefix, `10.12.1.0/24` (or one address, `/32`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub network: Ipv4Addr,
    pub prefix: u8,
}

/// Why an allow-list entry was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CidrError {
    /// Not `a.b.c.d` or `a.b.c.d/n`.
    Format,
    /// A prefix length over 32.
    Prefix,
    /// Bits set after the prefix (`10.12.1.5/24`): probably a typo.
    HostBits,
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CidrError::Format => "expected an address or address/prefix, e.g. 10.12.1.0/24",
            CidrError::Prefix => "prefix length over 32",
            CidrError::HostBits => {
                "address has bits set after the prefix (did you mean the network?)"
            }
        })
    }
}

fn mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| CidrError::Format)?),
            None => (text, 32),
        };
        let network: Ipv4Addr = addr.parse().map_err(|_| CidrError::Format)?;
        if prefix > 32 {
            return Err(CidrError::Prefix);
        }
        if u32::from(network) & !mask(prefix) != 0 {
            return Err(CidrError::HostBits);
        }
        Ok(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }
}

/// Who may reach management.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowList {
    /// No list configured: any source.
    #[default]
    Any,
    /// Only these (an empty list: nobody; the console still works).
    Only(Vec<Cidr>),
}

impl AllowList {
    /// From `management.allow` (validated; entries that do not parse are
    /// left out, which only narrows the list).
    pub fn from_config(allow: Option<&[alloc::string::String]>) -> AllowList {
        match allow {
            None => AllowList::Any,
            Some(list) => {
                AllowList::Only(list.iter().filter_map(|s| Cidr::parse(s).ok()).collect())
            }
        }
    }

    pub fn permits(&self, source: Ipv4Addr) -> bool {
        match self {
            AllowList::Any => true,
            AllowList::Only(list) => list.iter().any(|c| c.contains(source)),
        }
    }
}

/// The source of `frame` when it is a TCP segment (IPv4 in Ethernet II)
/// to a management port ([`super::is_management_port`]); `None` for
/// anything else, including malformed frames (the stack judges those).
pub fn management_source(frame: &[u8]) -> Option<Ipv4Addr> {
    use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket};
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.next_header() != IpProtocol::Tcp || ip.frag_offset() != 0 {
        return None;
    }
    let tcp = TcpPacket::new_checked(ip.payload()).ok()?;
    super::is_management_port(tcp.dst_port()).then(|| ip.src_addr())
}

/// Whether `frame` must be dropped before the IP stack sees it: TCP to a
/// management port from a source the list does not permit.
pub fn refuses(list: &AllowList, frame: &[u8]) -> bool {
    management_source(frame).is_some_and(|src| !list.permits(src))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::String;

    #[test]
    fn frames_to_management_ports_are_judged_by_source() {
        use crate::flow::Endpoint;
        use crate::frame::build;
        let list = AllowList::from_config(Some(&[String::from("10.0.0.0/24")]));
        let frame = |src: [u8; 4], port: u16| {
            build::tcp(
                Endpoint::new(Ipv4Addr::from(src), 40000),
                Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), port),
                0x02,
                &[],
            )
        };
        assert!(!refuses(
            &list,
            &frame([10, 0, 0, 9], super::super::HTTP_PORT)
        ));
        assert!(refuses(
            &list,
            &frame([10, 0, 1, 9], super::super::HTTP_PORT)
        ));
        assert!(refuses(
            &list,
            &frame([10, 0, 1, 9], super::super::COMMAND_PORT)
        ));
        // Other ports are none of the list's business.
        assert!(!refuses(&list, &frame([10, 0, 1, 9], 104)));
        assert_eq!(
            management_source(&frame([10, 0, 1, 9], 9080)),
            Some(Ipv4Addr::new(10, 0, 1, 9))
        );
        // Truncated or foreign frames are left to the stack.
        let f = frame([10, 0, 1, 9], 9080);
        for n in 0..f.len() - 20 {
            let _ = refuses(&list, &f[..n]);
        }
        assert!(!refuses(&list, &[0u8; 60]));
    }

    #[test]
    fn prefixes_match_what_they_say() {
        let c = Cidr::parse("10.12.1.0/24").unwrap();
        assert!(c.contains(Ipv4Addr::new(10, 12, 1, 0)));
        assert!(c.contains(Ipv4Addr::new(10, 12, 1, 255)));
        assert!(!c.contains(Ipv4Addr::new(10, 12, 2, 1)));
        let one = Cidr::parse("10.12.9.7").unwrap();
        assert_eq!(one.prefix, 32);
        assert!(one.contains(Ipv4Addr::new(10, 12, 9, 7)));
        assert!(!one.contains(Ipv4Addr::new(10, 12, 9, 8)));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains(Ipv4Addr::new(1, 2, 3, 4))
        );
        assert_eq!(Cidr::parse("10.12.1.5/24"), Err(CidrError::HostBits));
        assert_eq!(Cidr::parse("10.12.1.0/33"), Err(CidrError::Prefix));
        for bad in [
            "",
            "10.12.1",
            "10.12.1.0/",
            "x/24",
            "10.12.1.0/24/1",
            "10.12.1.0/-1",
        ] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unset_allows_all_and_empty_allows_none() {
        let ip = Ipv4Addr::new(192, 168, 2, 5);
        assert!(AllowList::from_config(None).permits(ip));
        assert!(!AllowList::from_config(Some(&[])).permits(ip));
        let list = [String::from("192.168.2.0/24")];
        assert!(AllowList::from_config(Some(&list)).permits(ip));
        assert!(!AllowList::from_config(Some(&list)).permits(Ipv4Addr::new(192, 168, 3, 5)));
    }
}
