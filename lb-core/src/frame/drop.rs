//! Why a frame was dropped, and counters per reason.

/// The reason a frame was not forwarded nor handed to the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    TruncatedEthernet,
    /// EtherType IPv4 but shorter than the fixed IPv4 header.
    TruncatedIpv4,
    /// EtherType IPv4 with a version field other than 4.
    BadIpVersion,
    /// IHL below 5 or header longer than the frame or the total length.
    BadIhl,
    /// Total length below the header length or beyond the frame.
    BadTotalLength,
    /// IPv4 header checksum does not verify.
    BadIpChecksum,
    /// IPv4 options whose length fields do not add up.
    BadIpOptions,
    /// Loose or strict source route option: the destination field is not the
    /// final destination, so rewriting it would be wrong (and routers drop
    /// source-routed packets by default).
    SourceRouted,
    /// A fragment addressed to a virtual service (ports are only in the
    /// first fragment; see the module documentation).
    Fragment,
    /// TCP segment shorter than its fixed header.
    TruncatedTcp,
    /// TCP data offset below 5 words or beyond the segment.
    BadTcpDataOffset,
    /// UDP datagram shorter than its header or length field inconsistent.
    BadUdpLength,
    /// ICMP message shorter than its header.
    TruncatedIcmp,
    /// A routed (NAT/SNAT) packet arrived with TTL ≤ 1.
    TtlExpired,
    /// A packet in the middle of a flow the engine does not track (e.g. a
    /// TCP segment without SYN); only a SYN starts a TCP flow.
    NoFlow,
    /// No real server of the virtual service can take a new flow.
    NoRealServer,
    /// The flow belongs to a real server that is halted.
    ServerHalted,
    /// The connection table is full and could not make room.
    ConnTableFull,
    /// The client's source address already holds as many half-open TCP
    /// flows as one source may (see [`crate::conntrack`]).
    SourceLimit,
    /// Another tracked flow already uses the translated 5-tuple.
    KeyInUse,
    /// SNAT: the real server's source port range is used up.
    PortsExhausted,
    /// No route (interface and next hop) to the destination.
    NoRoute,
    /// The frame arrived on an interface number the engine does not know.
    UnknownInterface,
    /// Offload metadata that does not fit the frame (a partial checksum
    /// not at its TCP/UDP checksum field, segmentation of something other
    /// than TCP), or a super-frame that cannot be cut into segments.
    BadOffload,
    /// A new flow to a VIP while this appliance is the backup of a pair
    /// (the master takes new flows; known flows are still forwarded).
    Standby,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 25] = [
        DropReason::TruncatedEthernet,
        DropReason::TruncatedIpv4,
        DropReason::BadIpVersion,
        DropReason::BadIhl,
        DropReason::BadTotalLength,
        DropReason::BadIpChecksum,
        DropReason::BadIpOptions,
        DropReason::SourceRouted,
        DropReason::Fragment,
        DropReason::TruncatedTcp,
        DropReason::BadTcpDataOffset,
        DropReason::BadUdpLength,
        DropReason::TruncatedIcmp,
        DropReason::TtlExpired,
        DropReason::NoFlow,
        DropReason::NoRealServer,
        DropReason::ServerHalted,
        DropReason::ConnTableFull,
        DropReason::SourceLimit,
        DropReason::KeyInUse,
        DropReason::PortsExhausted,
        DropReason::NoRoute,
        DropReason::UnknownInterface,
        DropReason::BadOffload,
        DropReason::Standby,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// A short stable name for logs and the status page.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::TruncatedEthernet => "truncated-ethernet",
            DropReason::TruncatedIpv4 => "truncated-ipv4",
            DropReason::BadIpVersion => "bad-ip-version",
            DropReason::BadIhl => "bad-ihl",
            DropReason::BadTotalLength => "bad-total-length",
            DropReason::BadIpChecksum => "bad-ip-checksum",
            DropReason::BadIpOptions => "bad-ip-options",
            DropReason::SourceRouted => "source-routed",
            DropReason::Fragment => "fragment",
            DropReason::TruncatedTcp => "truncated-tcp",
            DropReason::BadTcpDataOffset => "bad-tcp-data-offset",
            DropReason::BadUdpLength => "bad-udp-length",
            DropReason::TruncatedIcmp => "truncated-icmp",
            DropReason::TtlExpired => "ttl-expired",
            DropReason::NoFlow => "no-flow",
            DropReason::NoRealServer => "no-real-server",
            DropReason::ServerHalted => "server-halted",
            DropReason::ConnTableFull => "conn-table-full",
            DropReason::SourceLimit => "source-limit",
            DropReason::KeyInUse => "key-in-use",
            DropReason::PortsExhausted => "ports-exhausted",
            DropReason::NoRoute => "no-route",
            DropReason::UnknownInterface => "unknown-interface",
            DropReason::BadOffload => "bad-offload",
            DropReason::Standby => "standby",
        }
    }

    const fn index(self) -> usize {
        self as usize
    }
}

/// Frames dropped, counted by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::COUNT],
}

impl DropCounters {
    #[inline]
    pub fn count(&mut self, reason: DropReason) {
        let c = &mut self.counts[reason.index()];
        *c = c.saturating_add(1);
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.counts[reason.index()]
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().fold(0u64, |a, &c| a.saturating_add(c))
    }

    /// Reasons with a non-zero count.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, c)| c != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_reason_in_index_order() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
    }

    #[test]
    fn counts_by_reason() {
        let mut c = DropCounters::default();
        c.count(DropReason::BadIhl);
        c.count(DropReason::BadIhl);
        c.count(DropReason::Fragment);
        assert_eq!(c.get(DropReason::BadIhl), 2);
        assert_eq!(c.get(DropReason::Fragment), 1);
        assert_eq!(c.get(DropReason::NoFlow), 0);
        assert_eq!(c.total(), 3);
        assert_eq!(c.iter().count(), 2);
    }
}
