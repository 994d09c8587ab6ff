//! Keeps the IP stack's ephemeral ports inside
//! [`lb_core::frame::ports::STACK_RANGE`] (49152–65535), disjoint from the
//! source ports SNAT flows and layer 7 connections use
//! ([`lb_core::frame::ports::DEFAULT_RANGE`], 1024–49151), so that a reply
//! to a health check never matches a relayed connection and the other way
//! round.
//!
//! embassy-net 0.9 hands out ports 1025–65535 in sequence from a random
//! start and has no setting to narrow that. So before each connect, [`steer`]
//! draws ports with a throwaway UDP bind to port 0 (each bind takes the
//! next one) until the one after the last draw lies in the range. Nothing
//! awaits between `steer` and the connect that follows, so no other task
//! draws in between. Normally that is one draw; after the counter wraps,
//! up to ~48 000 (a few milliseconds, once per ~16 000 connects).

use embassy_net::Stack;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use lb_core::frame::ports::STACK_RANGE;

/// Makes the next ephemeral port `stack` hands out lie in [`STACK_RANGE`].
pub fn steer(stack: Stack<'_>) {
    let (mut rx_meta, mut tx_meta) = ([PacketMetadata::EMPTY; 1], [PacketMetadata::EMPTY; 1]);
    let (mut rx, mut tx) = ([0u8; 1], [0u8; 1]);
    let mut socket = UdpSocket::new(stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
    // The port after `last` is `last + 1`, or the bottom of embassy-net's
    // range after 65535.
    let (lo, hi) = (*STACK_RANGE.start(), *STACK_RANGE.end());
    for _ in 0..=u32::from(u16::MAX) {
        if socket.bind(0).is_err() {
            break;
        }
        let last = socket.endpoint().port;
        socket.close();
        if last >= lo - 1 && last < hi {
            break;
        }
    }
}
