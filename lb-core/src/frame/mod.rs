//! Frames on the L4 data path: classification and in-place rewriting.
//!
//! * [`classify()`] reads an Ethernet frame through `smoltcp::wire` views and
//!   says what it is (ARP, TCP/UDP with its [`FlowKey`](crate::flow::FlowKey),
//!   an ICMP error quoting a TCP/UDP packet, a fragment, something else), or
//!   why it must be dropped.
//! * [`rewrite`] changes addresses, ports, TTL and MACs in place with
//!   RFC 1624 incremental checksum updates.
//! * [`ports`] hands out SNAT source ports per real server.
//! * [`mod@drop`] names the reasons a frame is dropped and counts them.
//!
//! Decisions documented here because they shape the data path:
//! * **IP options** are accepted: the transport header is found through the
//!   IHL and the options are carried through untouched. Loose and strict
//!   source routes are dropped (the destination field is not the final
//!   destination, and routers refuse them by default), as are option lists
//!   whose lengths do not add up.
//! * **Fragments** carry ports only in the first piece, so a fragment
//!   addressed to a virtual service cannot be mapped to its flow without a
//!   reassembly table; it is dropped and counted. The services this
//!   appliance balances (DICOM, HL7/MLLP, HTTPS) are TCP, whose senders use
//!   path MTU discovery (DF set), so fragments there are a misconfiguration.
//! * **TTL**: NAT and SNAT route, so they decrement and drop at TTL ≤ 1; DR
//!   is a layer-2 forward to a host on the same segment and keeps the TTL.
//! * **Checksums** of TCP and UDP are not verified: they are end-to-end, the
//!   incremental update carries a bad checksum through as bad, and the
//!   receiving host drops it. The IPv4 header checksum is verified, since
//!   the appliance acts on the header.

pub mod build;
pub mod checksum;
pub mod classify;
pub mod drop;
pub mod offload;
pub mod ports;
pub mod refuse;
pub mod rewrite;
#[cfg(test)]
pub(crate) mod testutil;

pub use classify::{
    Class, ETHERNET_HEADER_LEN, IcmpError, Ipv4Info, L4Packet, Quoted, TcpFlags, classify,
};
pub use drop::{DropCounters, DropReason};
pub use offload::{Gso, L4Checksum, Offload};
pub use ports::PortAllocator;
pub use rewrite::{
    IcmpTranslation, Ttl, set_macs, translate, translate_icmp_error, translate_with,
};
