//! Rate limits on what reaches the IP stack unasked: UDP datagrams and
//! ICMP echo requests to the appliance's own addresses.
//!
//! The stack (smoltcp) answers every UDP datagram to a port nobody listens
//! on with an ICMP "port unreachable" and every echo request with a reply,
//! with no limit of its own; a flood at the appliance's address would keep
//! it busy and turn it into a reflector. Linux limits ICMP errors to about
//! 1000/s; here the frame path lets at most [`PER_SECOND`] such datagrams
//! and as many echo requests a second through to the stack, and drops and
//! counts the rest before the stack sees them. DHCP (client port 68) is
//! never limited: the appliance's own lease depends on it.

use core::net::Ipv4Addr;

use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, UdpPacket};

use crate::time::Instant;

/// Datagrams (and echo requests) a second the stack gets, each kind.
pub const PER_SECOND: u32 = 1000;
const DHCP_CLIENT_PORT: u16 = 68;
const ICMP_ECHO_REQUEST: u8 = 8;

/// What the guard says about a frame for the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guard {
    Pass,
    /// Over the UDP rate: drop.
    UdpLimited,
    /// Over the echo-request rate: drop.
    EchoLimited,
}

/// A token bucket refilled every millisecond of `now`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: u32,
    last: Instant,
}

impl Bucket {
    fn new() -> Self {
        Bucket {
            tokens: PER_SECOND,
            last: Instant(0),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let ms = now.0.saturating_sub(self.last.0);
        if ms > 0 {
            let add =
                u32::try_from(ms.saturating_mul(u64::from(PER_SECOND)) / 1000).unwrap_or(u32::MAX);
            self.tokens = self.tokens.saturating_add(add).min(PER_SECOND);
            self.last = now;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

/// The stack's guard: one bucket for UDP, one for echo requests.
#[derive(Clone, Copy, Debug)]
pub struct StackGuard {
    udp: Bucket,
    echo: Bucket,
}

impl StackGuard {
    /// Takes one echo request from the echo bucket (pings the frame path
    /// answers itself, for the pair's addresses).
    pub fn echo_allowed(&mut self, now: Instant) -> bool {
        self.echo.take(now)
    }
}

impl Default for StackGuard {
    fn default() -> Self {
        StackGuard {
            udp: Bucket::new(),
            echo: Bucket::new(),
        }
    }
}

impl StackGuard {
    /// Whether `frame`, which goes to the stack, may; `is_own` says which
    /// addresses are the appliance's.
    pub fn check(
        &mut self,
        frame: &[u8],
        now: Instant,
        is_own: impl Fn(Ipv4Addr) -> bool,
    ) -> Guard {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return Guard::Pass;
        };
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return Guard::Pass;
        }
        let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
            return Guard::Pass;
        };
        if !is_own(ip.dst_addr()) {
            return Guard::Pass;
        }
        match ip.next_header() {
            IpProtocol::Udp => {
                let dhcp = UdpPacket::new_checked(ip.payload())
                    .is_ok_and(|u| u.dst_port() == DHCP_CLIENT_PORT);
                if dhcp || self.udp.take(now) {
                    Guard::Pass
                } else {
                    Guard::UdpLimited
                }
            }
            IpProtocol::Icmp if ip.payload().first() == Some(&ICMP_ECHO_REQUEST) => {
                if self.echo.take(now) {
                    Guard::Pass
                } else {
                    Guard::EchoLimited
                }
            }
            _ => Guard::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Endpoint;
    use crate::frame::build;

    const OWN: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 9);

    fn own(ip: Ipv4Addr) -> bool {
        ip == OWN
    }

    #[test]
    fn udp_and_echo_to_us_are_limited_per_second_dhcp_and_others_never() {
        let mut g = StackGuard::default();
        let udp = build::udp(Endpoint::new(PEER, 1), Endpoint::new(OWN, 9999), b"x");
        let passed = (0..3000)
            .filter(|_| g.check(&udp, Instant(10), own) == Guard::Pass)
            .count();
        assert_eq!(passed, PER_SECOND as usize);
        assert_eq!(g.check(&udp, Instant(10), own), Guard::UdpLimited);
        // Half a second later, half a second's worth.
        let later = (0..3000)
            .filter(|_| g.check(&udp, Instant(510), own) == Guard::Pass)
            .count();
        assert_eq!(later, PER_SECOND as usize / 2);
        let dhcp = build::udp(Endpoint::new(PEER, 67), Endpoint::new(OWN, 68), b"offer");
        assert_eq!(g.check(&dhcp, Instant(510), own), Guard::Pass);
        let elsewhere = build::udp(Endpoint::new(PEER, 1), Endpoint::new(PEER, 2), b"");
        assert_eq!(g.check(&elsewhere, Instant(510), own), Guard::Pass);
        let tcp = build::tcp(Endpoint::new(PEER, 1), Endpoint::new(OWN, 22), 0x02, b"");
        assert_eq!(g.check(&tcp, Instant(510), own), Guard::Pass);
        let ping = build::icmp(PEER, OWN, 8, 0, &[0; 8]);
        let pings = (0..3000)
            .filter(|_| g.check(&ping, Instant(510), own) == Guard::Pass)
            .count();
        assert_eq!(pings, PER_SECOND as usize);
        let error = build::icmp(PEER, OWN, 3, 3, &[0; 28]);
        assert_eq!(g.check(&error, Instant(510), own), Guard::Pass);
        assert_eq!(g.check(&[0u8; 5], Instant(510), own), Guard::Pass);
    }
}
