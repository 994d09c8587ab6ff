//! A clean refusal: the SYN that arrived becomes, in place, the TCP reset
//! the VIP answers with (RFC 9293 3.10.7.1: RST with ACK of SEQ + SEG.LEN,
//! SYN counting one), so a client sees "connection refused" at once instead
//! of retrying into silence.

use super::checksum::compute;
use super::classify::{ETHERNET_HEADER_LEN, L4Packet};
use crate::flow::Protocol;

const IP_LEN: usize = 20;
const TCP_LEN: usize = 20;
/// IPv4 + TCP of the reset: what the frame's datagram becomes (the rest of
/// the frame is left as Ethernet padding).
pub const RESET_DATAGRAM_LEN: u16 = (IP_LEN + TCP_LEN) as u16;

/// Rewrites the TCP segment `pkt` in `frame` into the reset that refuses it.
/// Returns `None` (frame untouched) for anything but a TCP segment whose
/// header is in the frame. The Ethernet addresses are the caller's to set.
pub fn reset_in_place(frame: &mut [u8], pkt: &L4Packet) -> Option<()> {
    if pkt.key.proto != Protocol::Tcp {
        return None;
    }
    let l4 = pkt.ip.transport_offset();
    let tcp = frame.get(l4..l4 + TCP_LEN)?;
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    let payload = usize::from(pkt.ip.total_len)
        .saturating_sub(usize::from(pkt.ip.header_len))
        .saturating_sub(data_offset);
    let f = pkt.tcp_flags;
    let ack = seq
        .wrapping_add(payload as u32)
        .wrapping_add(u32::from(f.syn()))
        .wrapping_add(u32::from(f.fin()));
    if frame.len() < ETHERNET_HEADER_LEN + IP_LEN + TCP_LEN {
        return None;
    }
    let (src, dst) = (pkt.key.dst, pkt.key.src);
    let ip = &mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + IP_LEN];
    ip.copy_from_slice(&[
        0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    ip[12..16].copy_from_slice(&src.addr.octets());
    ip[16..20].copy_from_slice(&dst.addr.octets());
    let c = compute(ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let at = ETHERNET_HEADER_LEN + IP_LEN;
    let tcp = &mut frame[at..at + TCP_LEN];
    tcp.fill(0);
    tcp[0..2].copy_from_slice(&src.port.to_be_bytes());
    tcp[2..4].copy_from_slice(&dst.port.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x14; // RST, ACK
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.addr.octets());
    pseudo[4..8].copy_from_slice(&dst.addr.octets());
    pseudo[9] = 6;
    pseudo[11] = TCP_LEN as u8;
    let mut covered = [0u8; 12 + TCP_LEN];
    covered[..12].copy_from_slice(&pseudo);
    covered[12..].copy_from_slice(tcp);
    tcp[16..18].copy_from_slice(&compute(&covered).to_be_bytes());
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::Endpoint;
    use crate::frame::{Class, build, classify};
    use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, TcpPacket};

    #[test]
    fn syn_becomes_a_valid_reset_from_the_vip() {
        let client = Endpoint::new([192, 0, 2, 7].into(), 40000);
        let vip = Endpoint::new([198, 51, 100, 1].into(), 443);
        let mut frame = build::tcp(client, vip, 0x02, b"");
        let Ok(Class::L4(pkt)) = classify(&frame) else {
            panic!()
        };
        reset_in_place(&mut frame, &pkt).unwrap();
        let eth = EthernetFrame::new_checked(&frame[..]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (vip.addr, client.addr));
        assert_eq!(ip.total_len(), RESET_DATAGRAM_LEN);
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        let (s, d) = (IpAddress::Ipv4(vip.addr), IpAddress::Ipv4(client.addr));
        assert!(tcp.verify_checksum(&s, &d));
        assert!(tcp.rst() && tcp.ack() && !tcp.syn());
        assert_eq!((tcp.src_port(), tcp.dst_port()), (443, 40000));
        // build::tcp's SYN carries seq 0x12345678: the reset acknowledges it.
        assert_eq!(tcp.ack_number().0, 0x1234_5679);
    }

    #[test]
    fn udp_and_short_frames_are_left_alone() {
        let a = Endpoint::new([192, 0, 2, 7].into(), 40000);
        let b = Endpoint::new([198, 51, 100, 1].into(), 53);
        let mut frame = build::udp(a, b, b"q");
        let Ok(Class::L4(pkt)) = classify(&frame) else {
            panic!()
        };
        let before = frame.clone();
        assert_eq!(reset_in_place(&mut frame, &pkt), None);
        assert_eq!(frame, before);
    }
}
