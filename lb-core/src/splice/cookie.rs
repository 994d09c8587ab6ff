//! The relay's initial sequence numbers: keyed, and usable as SYN cookies.
//!
//! Every SYN-ACK the relay sends carries an ISN made like a SYN cookie
//! (Bernstein's idea, the layout our own):
//!
//! ```text
//! bits 31..27  time slot (64 s each, mod 32)
//! bits 26..25  MSS class (index into MSS_CLASSES, rounded down)
//! bit  24      client offered SACK
//! bits 23..20  client's window shift, 15 = no window scaling
//! bits 19..0   MAC: keyed hash of the 4-tuple, client ISN, and bits 31..20
//! ```
//!
//! Below the half-open threshold the relay also keeps a table entry, so
//! the cookie is just an unpredictable ISN. Above it nothing is stored:
//! the client's ACK (ack = ISN + 1, seq = client ISN + 1) is checked by
//! recomputing the MAC, and the options come back from the ISN. A cookie
//! is accepted in its own slot and the next one (64 to 128 s), and a guess
//! succeeds with probability 2^-20 per segment.

use crate::conntrack::hash::KeyedHash;
use crate::flow::FlowKey;
use crate::time::Instant;

use super::options::SynOptions;

/// MSS values a cookie can carry (the client's MSS is rounded down to one).
pub const MSS_CLASSES: [u16; 4] = [536, 1220, 1440, 1460];
const SLOT_MS: u64 = 64_000;
const NO_WSCALE: u32 = 15;

/// What a valid cookie says about the client's SYN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CookieOptions {
    pub mss: u16,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
}

/// Makes and checks cookies with one secret.
#[derive(Clone, Copy, Debug)]
pub struct Cookies {
    hash: KeyedHash,
}

fn slot(now: Instant) -> u32 {
    ((now.millis() / SLOT_MS) & 0x1f) as u32
}

impl Cookies {
    pub fn new(seed: u64) -> Self {
        Cookies {
            hash: KeyedHash::new(seed),
        }
    }

    fn mac(&self, key: &FlowKey, client_isn: u32, high: u32) -> u32 {
        let a = (u64::from(u32::from(key.src.addr)) << 32) | u64::from(u32::from(key.dst.addr));
        let b = (u64::from(key.src.port) << 48)
            | (u64::from(key.dst.port) << 32)
            | u64::from(client_isn ^ high);
        (self.hash.hash2(a, b) as u32) & 0x000f_ffff
    }

    /// The ISN for a SYN with `key` (client → VIP), sequence number
    /// `client_isn` and options `opts`, at `now`.
    pub fn make(&self, key: &FlowKey, client_isn: u32, opts: &SynOptions, now: Instant) -> u32 {
        let mss = opts.mss.unwrap_or(536);
        let class = MSS_CLASSES.iter().rposition(|&m| m <= mss).unwrap_or(0) as u32;
        let ws = opts.wscale.map_or(NO_WSCALE, u32::from);
        let high =
            (slot(now) << 27) | (class << 25) | (u32::from(opts.sack_permitted) << 24) | (ws << 20);
        high | self.mac(key, client_isn, high)
    }

    /// Checks the ACK that completes a handshake answered statelessly:
    /// `ack` and `seq` as the client sent them.
    pub fn check(&self, key: &FlowKey, seq: u32, ack: u32, now: Instant) -> Option<CookieOptions> {
        let isn = ack.wrapping_sub(1);
        let client_isn = seq.wrapping_sub(1);
        let high = isn & 0xfff0_0000;
        let age = slot(now).wrapping_sub(isn >> 27) & 0x1f;
        if age > 1 || self.mac(key, client_isn, high) != isn & 0x000f_ffff {
            return None;
        }
        let ws = (isn >> 20) & 0xf;
        Some(CookieOptions {
            mss: MSS_CLASSES[((isn >> 25) & 3) as usize],
            wscale: (ws != NO_WSCALE).then_some(ws.min(14) as u8),
            sack_permitted: isn & (1 << 24) != 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{Endpoint, Protocol};
    use core::net::Ipv4Addr;

    fn key() -> FlowKey {
        FlowKey {
            proto: Protocol::Tcp,
            src: Endpoint::new(Ipv4Addr::new(198, 51, 100, 7), 40000),
            dst: Endpoint::new(Ipv4Addr::new(192, 0, 2, 14), 2575),
        }
    }

    #[test]
    fn round_trip_and_expiry() {
        let c = Cookies::new(7);
        let opts = SynOptions {
            mss: Some(1448),
            wscale: Some(7),
            sack_permitted: true,
            timestamps: true,
        };
        let now = Instant::from_secs(1000);
        let isn = c.make(&key(), 12345, &opts, now);
        let ok = c.check(
            &key(),
            12346,
            isn.wrapping_add(1),
            now.add(crate::time::Duration::from_secs(70)),
        );
        assert_eq!(
            ok,
            Some(CookieOptions {
                mss: 1440,
                wscale: Some(7),
                sack_permitted: true
            })
        );
        // Another client ISN, another port, another secret, or too late: no.
        assert_eq!(c.check(&key(), 12347, isn.wrapping_add(1), now), None);
        let mut k = key();
        k.src.port += 1;
        assert_eq!(c.check(&k, 12346, isn.wrapping_add(1), now), None);
        assert_eq!(
            Cookies::new(8).check(&key(), 12346, isn.wrapping_add(1), now),
            None
        );
        assert_eq!(
            c.check(
                &key(),
                12346,
                isn.wrapping_add(1),
                now.add(crate::time::Duration::from_secs(200))
            ),
            None
        );
        let none = c.make(&key(), 1, &SynOptions::default(), now);
        assert_eq!(
            c.check(&key(), 2, none.wrapping_add(1), now),
            Some(CookieOptions {
                mss: 536,
                wscale: None,
                sack_permitted: false
            })
        );
    }
}
