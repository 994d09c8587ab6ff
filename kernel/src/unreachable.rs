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

use core::net::Ipv4Addr;
use lb_core::time::Instant;

const ETH: usize = 14;
/// At most this many messages per second (RFC 1812 §4.3.2.8 rate limit;
/// Linux allows 1000/s). Servers resolving names retry fast, and a message
/// withheld costs them a whole resolver timeout.
const PER_SECOND: u32 = 200;

/// What to answer: the packet's source (MAC and address) and the quote (the
/// IPv4 header plus 8 bytes, RFC 792).
pub struct Unreachable<'a> {
    pub to_mac: [u8; 6],
    pub to_ip: Ipv4Addr,
    pub quote: &'a [u8],
}

/// Rate limit of the messages.
#[derive(Default)]
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
        self.sent += 1;
        self.sent <= PER_SECOND
    }
}

/// Whether `frame` (which the engine handed to the stack) is an IPv4 packet
/// sent to `our_mac` for a destination that is not local: unicast, not a
/// first-fragment-less piece, not itself an ICMP error.
pub fn check<'a>(
    frame: &'a [u8],
    our_mac: [u8; 6],
    is_local: impl Fn(Ipv4Addr) -> bool,
) -> Option<Unreachable<'a>> {
    if frame.len() < ETH + 20 || frame[..6] != our_mac || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < 20 || ip.len() < ihl {
        return None;
    }
    let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
    let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
    let frag_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    let bad_dst = dst.is_broadcast() || dst.is_multicast() || dst.is_unspecified();
    let bad_src = src.is_broadcast() || src.is_multicast() || src.is_unspecified();
    if bad_dst || bad_src || frag_offset != 0 || is_local(dst) || is_local(src) {
        return None;
    }
    // Never answer an ICMP message other than an echo request (RFC 1812 §4.3.2.7).
    if ip[9] == 1 && ip.get(ihl) != Some(&8) {
        return None;
    }
    let mut to_mac = [0u8; 6];
    to_mac.copy_from_slice(&frame[6..12]);
    if to_mac[0] & 1 != 0 {
        return None;
    }
    Some(Unreachable {
        to_mac,
        to_ip: src,
        quote: &ip[..(ihl + 8).min(ip.len())],
    })
}
