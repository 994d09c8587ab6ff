//! Counters per virtual service and per real server.

use alloc::vec::Vec;

use crate::frame::{DropCounters, DropReason};

/// Traffic of one virtual service or one real server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Flows started.
    pub connections: u64,
    /// Packets forwarded (both directions).
    pub packets: u64,
    /// IPv4 bytes forwarded (both directions).
    pub bytes: u64,
    pub drops: DropCounters,
}

impl Counters {
    #[inline]
    pub(crate) fn forwarded(&mut self, packets: u64, bytes: u64) {
        self.packets = self.packets.wrapping_add(packets);
        self.bytes = self.bytes.wrapping_add(bytes);
    }

    #[inline]
    pub(crate) fn dropped(&mut self, reason: DropReason) {
        self.drops.count(reason);
    }
}

/// A virtual service's counters and those of its real servers (in
/// configuration order).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    pub service: Counters,
    /// One per configured real server, then the fallback server, if any.
    pub servers: Vec<Counters>,
    /// New connections refused with a reset by `fallback = "local"`.
    pub fallback_refused: u64,
    /// Handshakes answered by `fallback = { page = ... }`.
    pub fallback_syns: u64,
    /// Requests answered with the fallback page.
    pub fallback_pages: u64,
    /// Flows the real servers opened themselves (`outbound_snat`).
    pub outbound: u64,
}
