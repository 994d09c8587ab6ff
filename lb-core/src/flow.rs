//! Flow identity shared by classification, connection tracking and persistence.

use core::net::Ipv4Addr;

/// Transport protocol of a virtual service or a flow.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Protocol {
    Tcp,
    Udp,
}

/// One IPv4 transport endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: u16,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint::new(Ipv4Addr::UNSPECIFIED, 0)
    }
}

impl Endpoint {
    pub const fn new(addr: Ipv4Addr, port: u16) -> Self {
        Endpoint { addr, port }
    }
}

/// The 5-tuple of a packet as it was seen on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: Protocol,
    pub src: Endpoint,
    pub dst: Endpoint,
}

impl FlowKey {
    /// The key of the packets flowing the other way.
    pub const fn reversed(self) -> Self {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
        }
    }
}
