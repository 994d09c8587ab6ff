//! Frame builders for tests, benchmarks and fuzzing.
//!
//! Built with smoltcp's emitters (not with the code under test), so a frame
//! from here is an independent reference: valid checksums, exact lengths.
//! These are helpers for code that makes its own frames; they panic on
//! arguments that make no frame (see each function), never on received
//! data.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

use super::checksum;
use super::classify::ETHERNET_HEADER_LEN;
use crate::flow::Endpoint;

/// Source MAC of built frames.
pub const SRC_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x01]);
/// Destination MAC of built frames.
pub const DST_MAC: EthernetAddress = EthernetAddress([0x02, 0, 0, 0, 0, 0x02]);
const TTL: u8 = 64;

fn ethernet_ipv4(
    protocol: IpProtocol,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    ip_payload_len: usize,
) -> Vec<u8> {
    let mut buf = alloc::vec![0u8; ETHERNET_HEADER_LEN + 20 + ip_payload_len];
    let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr {
        src_addr: SRC_MAC,
        dst_addr: DST_MAC,
        ethertype: EthernetProtocol::Ipv4,
    }
    .emit(&mut eth);
    let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
    Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: protocol,
        payload_len: ip_payload_len,
        hop_limit: TTL,
    }
    .emit(&mut ip, &ChecksumCapabilities::default());
    buf
}

/// A TCP segment with the given control flags (as in the header's flags
/// byte: FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10) and payload.
pub fn tcp(src: Endpoint, dst: Endpoint, flags: u8, payload: &[u8]) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: src.port,
        dst_port: dst.port,
        control: TcpControl::None,
        seq_number: TcpSeqNumber(0x1234_5678),
        ack_number: (flags & 0x10 != 0).then_some(TcpSeqNumber(0x0abc_def0)),
        window_len: 64240,
        window_scale: None,
        max_seg_size: (flags & 0x02 != 0).then_some(1460),
        sack_permitted: false,
        sack_ranges: [None; 3],
        timestamp: None,
        payload,
    };
    let mut buf = ethernet_ipv4(IpProtocol::Tcp, src.addr, dst.addr, repr.buffer_len());
    let (s, d) = (IpAddress::Ipv4(src.addr), IpAddress::Ipv4(dst.addr));
    let mut tcp = TcpPacket::new_unchecked(&mut buf[ETHERNET_HEADER_LEN + 20..]);
    repr.emit(&mut tcp, &s, &d, &ChecksumCapabilities::default());
    tcp.set_fin(flags & 0x01 != 0);
    tcp.set_syn(flags & 0x02 != 0);
    tcp.set_rst(flags & 0x04 != 0);
    tcp.set_psh(flags & 0x08 != 0);
    tcp.set_ack(flags & 0x10 != 0);
    tcp.fill_checksum(&s, &d);
    buf
}

/// A UDP datagram with a checksum.
pub fn udp(src: Endpoint, dst: Endpoint, payload: &[u8]) -> Vec<u8> {
    let repr = UdpRepr {
        src_port: src.port,
        dst_port: dst.port,
    };
    let mut buf = ethernet_ipv4(IpProtocol::Udp, src.addr, dst.addr, 8 + payload.len());
    let (s, d) = (IpAddress::Ipv4(src.addr), IpAddress::Ipv4(dst.addr));
    let mut udp = UdpPacket::new_unchecked(&mut buf[ETHERNET_HEADER_LEN + 20..]);
    repr.emit(
        &mut udp,
        &s,
        &d,
        payload.len(),
        |p| p.copy_from_slice(payload),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// An ICMP message of `icmp_type`/`code` whose body (after the 4 unused
/// bytes) is `body`, e.g. the quoted IPv4 packet of an error.
pub fn icmp(src: Ipv4Addr, dst: Ipv4Addr, icmp_type: u8, code: u8, body: &[u8]) -> Vec<u8> {
    let mut buf = ethernet_ipv4(IpProtocol::Icmp, src, dst, 8 + body.len());
    let at = ETHERNET_HEADER_LEN + 20;
    buf[at] = icmp_type;
    buf[at + 1] = code;
    buf[at + 8..].copy_from_slice(body);
    let c = checksum::compute(&buf[at..]);
    buf[at + 2..at + 4].copy_from_slice(&c.to_be_bytes());
    buf
}

/// Recomputes the IPv4 header checksum of `frame` in full.
pub fn fix_ip_checksum(frame: &mut [u8]) {
    let Some(ip_bytes) = frame.get_mut(ETHERNET_HEADER_LEN..) else {
        return;
    };
    let hl = usize::from(ip_bytes.first().map_or(0, |b| b & 0x0f)) * 4;
    if hl < 20 || hl > ip_bytes.len() {
        return;
    }
    ip_bytes[10] = 0;
    ip_bytes[11] = 0;
    let c = checksum::compute(&ip_bytes[..hl]);
    ip_bytes[10..12].copy_from_slice(&c.to_be_bytes());
}

/// `frame` with `options` (a multiple of 4 bytes) inserted after its fixed
/// IPv4 header; IHL, total length and header checksum are adjusted.
///
/// # Panics
/// If `options` is not a multiple of 4 bytes up to 40, or `frame` is
/// shorter than Ethernet + IPv4 headers.
pub fn with_ip_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    assert!(options.len().is_multiple_of(4) && options.len() <= 40);
    let ip = ETHERNET_HEADER_LEN;
    let mut out = Vec::with_capacity(frame.len() + options.len());
    out.extend_from_slice(&frame[..ip + 20]);
    out.extend_from_slice(options);
    out.extend_from_slice(&frame[ip + 20..]);
    out[ip] = 0x40 | ((20 + options.len()) / 4) as u8;
    let total = u16::from_be_bytes([out[ip + 2], out[ip + 3]]) + options.len() as u16;
    out[ip + 2..ip + 4].copy_from_slice(&total.to_be_bytes());
    fix_ip_checksum(&mut out);
    out
}

/// `frame` cut to an IPv4 datagram of `ip_len` bytes, total length and
/// header checksum adjusted (a truncated packet that is otherwise sound).
///
/// # Panics
/// If `frame` holds fewer than `ip_len` bytes after the Ethernet header.
pub fn truncate_ip(frame: &[u8], ip_len: usize) -> Vec<u8> {
    let mut out = frame[..ETHERNET_HEADER_LEN + ip_len].to_vec();
    out[ETHERNET_HEADER_LEN + 2..ETHERNET_HEADER_LEN + 4]
        .copy_from_slice(&(ip_len as u16).to_be_bytes());
    fix_ip_checksum(&mut out);
    out
}

/// Turns a frame with a whole TCP/UDP checksum into what a host with
/// checksum offload hands over (the pseudo-header sum in the checksum
/// field), with the metadata that says so; `gso` makes it a super-frame
/// of segments of that many payload bytes. Panics on a frame that is not
/// TCP/UDP over IPv4 (a builder for tests).
pub fn partial(frame: &mut [u8], gso: Option<u16>) -> super::offload::Offload {
    use super::offload::{Gso, L4Checksum, Offload, partial_offset_for, pseudo_header_sum};
    let ip = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).expect("an IPv4 frame");
    let hl = usize::from(ip.header_len());
    let l4_len = usize::from(ip.total_len()) - hl;
    let proto: u8 = ip.next_header().into();
    let p = pseudo_header_sum(ip.src_addr(), ip.dst_addr(), proto, l4_len);
    let off = partial_offset_for(proto).expect("TCP or UDP");
    let at = ETHERNET_HEADER_LEN + hl + usize::from(off);
    frame[at..at + 2].copy_from_slice(&p.to_be_bytes());
    Offload {
        checksum: L4Checksum::Partial {
            start: (ETHERNET_HEADER_LEN + hl) as u16,
            offset: off,
        },
        gso: gso.map(|mss| Gso { mss }),
    }
}
