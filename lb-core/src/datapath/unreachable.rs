//! ICMP "destination unreachable" for packets routed to the appliance that
//! it does not forward.
//!
//! NAT real servers use the appliance as their default gateway, so all
//! their traffic arrives here, not only replies of virtual-service flows.
//! The appliance routes nothing else (RFC 1812 §5.2.7.1: a router without
//! a route answers "network unreachable"); answering instead of dropping in
//! silence lets the servers fail fast, e.g. a reverse DNS lookup of a
//! client that would otherwise stall each new DICOM association for the
//! resolver's whole timeout.
//!
//! The reply is built with smoltcp's `Icmpv4Repr`: the quoted header is
//! re-encoded from its `Ipv4Repr` (addresses, protocol and TTL kept; no
//! options), followed by the first 8 bytes of the transport header (RFC
//! 792), which is what receivers match an error to a socket by.

use core::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, Icmpv4DstUnreachable,
    Icmpv4Packet, Icmpv4Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
};

use crate::frame::ETHERNET_HEADER_LEN;
use crate::time::Instant;

/// At most this many messages per second (RFC 1812 §4.3.2.8 rate limit;
/// Linux allows 1000/s). Servers resolving names retry fast, and a message
/// withheld costs them a whole resolver timeout.
pub const PER_SECOND: u32 = 200;
/// Transport bytes quoted (RFC 792).
const QUOTE_TRANSPORT: usize = 8;
/// TTL of the messages the appliance originates.
pub const TTL: u8 = 64;
const ICMP_ECHO_REQUEST: u8 = 8;

/// What to answer: the packet's source (MAC and address) and what to quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unreachable<'a> {
    pub to_mac: [u8; 6],
    pub to_ip: Ipv4Addr,
    /// The offending packet's header.
    quoted: Ipv4Repr,
    /// Its first transport bytes.
    data: &'a [u8],
}

/// Rate limit of the messages.
#[derive(Debug, Default)]
pub struct Limiter {
    second: u64,
    sent: u32,
}

impl Limiter {
    pub fn allow(&mut self, now: Instant) -> bool {
        let s = now.0 / 1000;
        if s != self.second {
            self.second = s;
            self.sent = 0;
        }
        self.sent = self.sent.saturating_add(1);
        self.sent <= PER_SECOND
    }
}

/// Whether `frame` (which the engine handed to the stack) is an IPv4 packet
/// sent to `our_mac` for a destination that is not local: unicast, not a
/// first-fragment-less piece, not itself an ICMP error.
pub fn check(
    frame: &[u8],
    our_mac: [u8; 6],
    is_local: impl Fn(Ipv4Addr) -> bool,
) -> Option<Unreachable<'_>> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    if eth.dst_addr().0 != our_mac || eth.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
    if ip.version() != 4 {
        return None;
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let bad_dst = dst.is_broadcast() || dst.is_multicast() || dst.is_unspecified();
    let bad_src = src.is_broadcast() || src.is_multicast() || src.is_unspecified();
    if bad_dst || bad_src || ip.frag_offset() != 0 || is_local(dst) || is_local(src) {
        return None;
    }
    let header_len = usize::from(ip.header_len());
    let payload = eth.payload().get(header_len..usize::from(ip.total_len()))?;
    // Never answer an ICMP message other than an echo request (RFC 1812 §4.3.2.7).
    if ip.next_header() == IpProtocol::Icmp && payload.first() != Some(&ICMP_ECHO_REQUEST) {
        return None;
    }
    let to_mac = eth.src_addr().0;
    if to_mac[0] & 1 != 0 {
        return None;
    }
    let data = &payload[..payload.len().min(QUOTE_TRANSPORT)];
    Some(Unreachable {
        to_mac,
        to_ip: src,
        quoted: Ipv4Repr {
            src_addr: src,
            dst_addr: dst,
            next_header: ip.next_header(),
            payload_len: data.len(),
            hop_limit: ip.hop_limit(),
        },
        data,
    })
}

impl Unreachable<'_> {
    fn icmp(&self) -> Icmpv4Repr<'_> {
        Icmpv4Repr::DstUnreachable {
            reason: Icmpv4DstUnreachable::NetUnreachable,
            header: self.quoted,
            data: self.data,
        }
    }

    fn ip(&self, from: Ipv4Addr) -> Ipv4Repr {
        Ipv4Repr {
            src_addr: from,
            dst_addr: self.to_ip,
            next_header: IpProtocol::Icmp,
            payload_len: self.icmp().buffer_len(),
            hop_limit: TTL,
        }
    }

    /// Length of the reply frame (before padding to the Ethernet minimum).
    pub fn frame_len(&self) -> usize {
        ETHERNET_HEADER_LEN + self.ip(Ipv4Addr::UNSPECIFIED).buffer_len() + self.icmp().buffer_len()
    }

    /// Writes the reply from `our_mac`/`our_ip` into `buf`; bytes past
    /// [`Self::frame_len`] are zeroed. Returns false if `buf` is short.
    pub fn emit(&self, our_mac: [u8; 6], our_ip: Ipv4Addr, buf: &mut [u8]) -> bool {
        let len = self.frame_len();
        if buf.len() < len {
            return false;
        }
        buf.fill(0);
        let caps = ChecksumCapabilities::default();
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..len]);
        EthernetRepr {
            src_addr: EthernetAddress(our_mac),
            dst_addr: EthernetAddress(self.to_mac),
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let ip_repr = self.ip(our_ip);
        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        ip_repr.emit(&mut ip, &caps);
        let mut icmp = Icmpv4Packet::new_unchecked(ip.payload_mut());
        self.icmp().emit(&mut icmp, &caps);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::testutil::{set_ip_field, tcp_frame, udp_frame};
    use alloc::vec;

    const US: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const THEM: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const OWN: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const SERVER: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 21);
    const FAR: Ipv4Addr = Ipv4Addr::new(8, 8, 8, 8);

    fn to_us(mut f: alloc::vec::Vec<u8>) -> alloc::vec::Vec<u8> {
        f[..6].copy_from_slice(&US);
        f[6..12].copy_from_slice(&THEM);
        f
    }

    fn local(ip: Ipv4Addr) -> bool {
        ip == OWN
    }

    #[test]
    fn answers_a_routed_datagram_with_a_valid_net_unreachable() {
        let f = to_us(udp_frame(SERVER, 5353, FAR, 53, b"query"));
        let u = check(&f, US, local).expect("routed to us, not local");
        assert_eq!((u.to_mac, u.to_ip), (THEM, SERVER));
        let mut buf = vec![0xAAu8; 80];
        assert!(u.emit(US, OWN, &mut buf));
        assert!(buf[u.frame_len()..].iter().all(|&b| b == 0));
        let eth = EthernetFrame::new_checked(&buf[..u.frame_len()]).unwrap();
        assert_eq!((eth.dst_addr().0, eth.src_addr().0), (THEM, US));
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (OWN, SERVER));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        let repr = Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).unwrap();
        let Icmpv4Repr::DstUnreachable {
            reason,
            header,
            data,
        } = repr
        else {
            panic!("not an unreachable: {repr:?}")
        };
        assert_eq!(reason, Icmpv4DstUnreachable::NetUnreachable);
        assert_eq!((header.src_addr, header.dst_addr), (SERVER, FAR));
        assert_eq!(header.next_header, IpProtocol::Udp);
        // The UDP header: ports, length, checksum of the original.
        assert_eq!(data, &f[34..42]);
    }

    #[test]
    fn leaves_local_broadcast_fragment_and_icmp_error_traffic_alone() {
        let to_own = to_us(tcp_frame(SERVER, 40000, OWN, 22, 0x02, b""));
        assert!(check(&to_own, US, local).is_none());
        let from_own = to_us(tcp_frame(OWN, 40000, FAR, 22, 0x02, b""));
        assert!(check(&from_own, US, local).is_none());
        let mut not_ours = to_us(udp_frame(SERVER, 1, FAR, 2, b""));
        not_ours[..6].copy_from_slice(&THEM);
        assert!(check(&not_ours, US, local).is_none());
        let mut frag = to_us(udp_frame(SERVER, 1, FAR, 2, b"x"));
        set_ip_field(&mut frag, |ip| ip.set_frag_offset(8));
        assert!(check(&frag, US, local).is_none());
        let mut bcast_src = to_us(udp_frame(SERVER, 1, FAR, 2, b""));
        bcast_src[6] = 0x03; // group bit in the source MAC
        assert!(check(&bcast_src, US, local).is_none());
        let mut error = to_us(crate::frame::build::icmp(SERVER, FAR, 3, 1, &[0; 28]));
        assert!(check(&error, US, local).is_none());
        error[34] = 8; // an echo request is answered
        assert!(check(&error, US, local).is_some());
        assert!(check(&to_own[..30], US, local).is_none(), "truncated");
    }

    #[test]
    fn limits_to_the_rate_per_second() {
        let mut l = Limiter::default();
        let sent = (0..PER_SECOND + 50)
            .filter(|_| l.allow(Instant(1500)))
            .count();
        assert_eq!(sent, PER_SECOND as usize);
        assert!(l.allow(Instant(2000)));
    }
}
