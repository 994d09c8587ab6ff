//! Shorthands for the unit tests of this module and the engine.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::wire::Ipv4Packet;

use super::build;
pub use super::build::{fix_ip_checksum, truncate_ip, with_ip_options};
use super::classify::ETHERNET_HEADER_LEN;
use crate::flow::Endpoint;

pub const C: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
pub const RS1: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 11);
pub const ROUTER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);

pub fn tcp_frame(
    src: Ipv4Addr,
    sp: u16,
    dst: Ipv4Addr,
    dp: u16,
    flags: u8,
    payload: &[u8],
) -> Vec<u8> {
    build::tcp(
        Endpoint::new(src, sp),
        Endpoint::new(dst, dp),
        flags,
        payload,
    )
}

pub fn udp_frame(src: Ipv4Addr, sp: u16, dst: Ipv4Addr, dp: u16, payload: &[u8]) -> Vec<u8> {
    build::udp(Endpoint::new(src, sp), Endpoint::new(dst, dp), payload)
}

pub fn icmp_error_frame(src: Ipv4Addr, dst: Ipv4Addr, t: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    build::icmp(src, dst, t, code, quoted)
}

/// Changes the IPv4 header with `f`, then fixes its checksum.
pub fn set_ip_field(frame: &mut [u8], f: impl FnOnce(&mut Ipv4Packet<&mut [u8]>)) {
    let mut ip = Ipv4Packet::new_unchecked(&mut frame[ETHERNET_HEADER_LEN..]);
    f(&mut ip);
    fix_ip_checksum(frame);
}
