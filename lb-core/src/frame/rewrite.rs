//! In-place rewrites of classified frames, with incremental checksums.
//!
//! The rewrites never change a length or move a header, so IPv4 options and
//! Ethernet padding are carried through untouched. The caller passes the
//! [`L4Packet`] or [`IcmpError`] that [`super::classify()`] returned for the
//! same bytes; lengths are still re-checked so a mismatch is an error, not a
//! panic.

use core::net::Ipv4Addr;

use smoltcp::wire::EthernetAddress;

use super::checksum::{self, Delta, read16, write16};
use super::classify::{ETHERNET_HEADER_LEN, IcmpError, L4Packet};
use super::drop::DropReason;
use super::offload::{L4Checksum, Offload};
use crate::flow::{Endpoint, Protocol};

const IP: usize = ETHERNET_HEADER_LEN;
const IP_TTL: usize = 8;
const IP_CHECKSUM: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;
const ICMP_CHECKSUM: usize = 2;

/// What a forward does to the IPv4 time to live.
///
/// NAT and SNAT route between subnets, so they decrement it and refuse a
/// packet that arrives with TTL ≤ 1 (RFC 1812). DR forwards at layer 2 to a
/// host on the same segment, like a bridge, and keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ttl {
    Keep,
    Decrement,
}

/// Sets the Ethernet destination and source addresses.
pub fn set_macs(
    frame: &mut [u8],
    dst: EthernetAddress,
    src: EthernetAddress,
) -> Result<(), DropReason> {
    let hdr = frame.get_mut(..12).ok_or(DropReason::TruncatedEthernet)?;
    hdr[..6].copy_from_slice(dst.as_bytes());
    hdr[6..].copy_from_slice(src.as_bytes());
    Ok(())
}

fn write_addr(frame: &mut [u8], at: usize, addr: Ipv4Addr) {
    frame[at..at + 4].copy_from_slice(&addr.octets());
}

/// Checks the TTL and, if asked, decrements it, recording the change.
fn ttl_step(frame: &mut [u8], ttl: Ttl, ip_delta: &mut Delta) -> Result<(), DropReason> {
    if ttl == Ttl::Decrement {
        let old = read16(frame, IP + IP_TTL).ok_or(DropReason::TruncatedIpv4)?;
        if old >> 8 <= 1 {
            return Err(DropReason::TtlExpired);
        }
        let new = old - 0x100;
        ip_delta.word(old, new);
        write16(frame, IP + IP_TTL, new);
    }
    Ok(())
}

/// Rewrites a TCP segment's or UDP datagram's endpoints to `src` and `dst`
/// (either may equal the current one), fixing the IPv4 header checksum and
/// the TCP or UDP checksum incrementally.
pub fn translate(
    frame: &mut [u8],
    pkt: &L4Packet,
    src: Endpoint,
    dst: Endpoint,
    ttl: Ttl,
) -> Result<(), DropReason> {
    translate_with(frame, pkt, src, dst, ttl, L4Checksum::Complete)
}

/// [`translate`] for a frame whose TCP/UDP checksum is in state `checksum`
/// (partial when a NIC with checksum offload will finish it; see
/// [`super::offload`]). A partial checksum that is not this packet's
/// checksum field is refused ([`DropReason::BadOffload`]).
pub fn translate_with(
    frame: &mut [u8],
    pkt: &L4Packet,
    src: Endpoint,
    dst: Endpoint,
    ttl: Ttl,
    checksum: L4Checksum,
) -> Result<(), DropReason> {
    let l4 = pkt.ip.transport_offset();
    if frame.len() < pkt.ip.end() || pkt.ip.end() < l4 + 8 {
        return Err(DropReason::BadTotalLength);
    }
    let tcp = pkt.key.proto == Protocol::Tcp;
    let offload = Offload {
        checksum,
        gso: None,
    };
    if !offload.fits(l4, tcp) {
        return Err(DropReason::BadOffload);
    }
    let mut ip_delta = Delta::NONE;
    ip_delta.addr(pkt.key.src.addr, src.addr);
    ip_delta.addr(pkt.key.dst.addr, dst.addr);
    // The transport checksum covers the addresses through the pseudo-header
    // and the ports directly.
    let pseudo = ip_delta;
    let mut ports = Delta::NONE;
    ports.word(pkt.key.src.port, src.port);
    ports.word(pkt.key.dst.port, dst.port);
    // Only now that nothing can fail does the frame change.
    ttl_step(frame, ttl, &mut ip_delta)?;

    write_addr(frame, IP + IP_SRC, src.addr);
    write_addr(frame, IP + IP_DST, dst.addr);
    checksum::patch(frame, IP + IP_CHECKSUM, ip_delta);
    write16(frame, l4, src.port);
    write16(frame, l4 + 2, dst.port);
    let at = l4 + if tcp { TCP_CHECKSUM } else { UDP_CHECKSUM };
    checksum.patch(frame, at, pseudo, ports, !tcp);
    Ok(())
}

/// New addresses for an ICMP error and for the packet it quotes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpTranslation {
    pub outer_src: Ipv4Addr,
    pub outer_dst: Ipv4Addr,
    pub quoted_src: Endpoint,
    pub quoted_dst: Endpoint,
}

/// Rewrites an ICMP error and the packet it quotes, so that the host
/// receiving it recognises its own packet (e.g. "fragmentation needed" for a
/// segment that went through NAT). Fixes the outer IPv4 checksum, the
/// quoted IPv4 checksum, the quoted TCP/UDP checksum when the quote includes
/// it, and the ICMP checksum that covers all of them.
pub fn translate_icmp_error(
    frame: &mut [u8],
    err: &IcmpError,
    t: &IcmpTranslation,
    ttl: Ttl,
) -> Result<(), DropReason> {
    let q = &err.quoted;
    let icmp = err.ip.transport_offset();
    if frame.len() < err.ip.end() || q.offset + q.len > err.ip.end() || q.len < q.header_len + 8 {
        return Err(DropReason::BadTotalLength);
    }
    let qk = q.key;
    let mut quoted_ip = Delta::NONE;
    quoted_ip.addr(qk.src.addr, t.quoted_src.addr);
    quoted_ip.addr(qk.dst.addr, t.quoted_dst.addr);
    let mut ports = Delta::NONE;
    ports.word(qk.src.port, t.quoted_src.port);
    ports.word(qk.dst.port, t.quoted_dst.port);
    let mut quoted_l4 = quoted_ip;
    quoted_l4.merge(ports);
    // The ICMP checksum covers every quoted byte that changes.
    let mut icmp_delta = quoted_ip;
    icmp_delta.merge(ports);
    let mut outer = Delta::NONE;
    outer.addr(err.ip.src, t.outer_src);
    outer.addr(err.ip.dst, t.outer_dst);
    ttl_step(frame, ttl, &mut outer)?;

    // Quoted IPv4 header.
    write_addr(frame, q.offset + IP_SRC, t.quoted_src.addr);
    write_addr(frame, q.offset + IP_DST, t.quoted_dst.addr);
    let at = q.offset + IP_CHECKSUM;
    let old = read16(frame, at).unwrap_or(0);
    let new = quoted_ip.apply(old);
    write16(frame, at, new);
    icmp_delta.word(old, new);
    // Quoted transport header.
    let l4 = q.offset + q.header_len;
    write16(frame, l4, t.quoted_src.port);
    write16(frame, l4 + 2, t.quoted_dst.port);
    if let Some(at) = q.transport_checksum_offset() {
        let old = read16(frame, at).unwrap_or(0);
        let new = match qk.proto {
            Protocol::Tcp => quoted_l4.apply(old),
            Protocol::Udp => quoted_l4.apply_udp(old),
        };
        write16(frame, at, new);
        icmp_delta.word(old, new);
    }
    checksum::patch(frame, icmp + ICMP_CHECKSUM, icmp_delta);
    // Outer IPv4 header (ICMP has no pseudo-header).
    write_addr(frame, IP + IP_SRC, t.outer_src);
    write_addr(frame, IP + IP_DST, t.outer_dst);
    checksum::patch(frame, IP + IP_CHECKSUM, outer);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::classify::{Class, classify};
    use super::super::testutil::*;
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket, UdpPacket};

    fn l4(frame: &[u8]) -> L4Packet {
        match classify(frame) {
            Ok(Class::L4(p)) => p,
            other => panic!("not L4: {other:?}"),
        }
    }

    /// Verifies every checksum of a TCP/UDP frame with smoltcp.
    fn checksums_ok(frame: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(&frame[IP..]).unwrap();
        let (s, d) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        let payload = ip.payload();
        ip.verify_checksum()
            && match ip.next_header() {
                smoltcp::wire::IpProtocol::Tcp => TcpPacket::new_checked(payload)
                    .unwrap()
                    .verify_checksum(&s, &d),
                smoltcp::wire::IpProtocol::Udp => UdpPacket::new_checked(payload)
                    .unwrap()
                    .verify_checksum(&s, &d),
                _ => false,
            }
    }

    #[test]
    fn nat_destination_rewrite_keeps_checksums_valid() {
        let mut f = tcp_frame(C, 40000, VIP, 104, 0x18, b"DICOM PDU bytes");
        let p = l4(&f);
        let rs = Endpoint::new(RS1, 11112);
        translate(&mut f, &p, p.key.src, rs, Ttl::Decrement).unwrap();
        let q = l4(&f);
        assert_eq!(q.key.src, p.key.src);
        assert_eq!(q.key.dst, rs);
        assert_eq!(q.ip.ttl, 63);
        assert!(checksums_ok(&f));
    }

    #[test]
    fn udp_without_checksum_keeps_zero() {
        let mut f = udp_frame(C, 5000, VIP, 514, b"syslog");
        f[IP + 20 + 6..IP + 20 + 8].copy_from_slice(&[0, 0]);
        let p = l4(&f);
        translate(
            &mut f,
            &p,
            Endpoint::new(VIP, 5000),
            Endpoint::new(RS1, 514),
            Ttl::Keep,
        )
        .unwrap();
        assert_eq!(&f[IP + 20 + 6..IP + 20 + 8], &[0, 0]);
        assert!(checksums_ok(&f));
    }

    #[test]
    fn ttl_one_is_refused_without_touching_the_frame() {
        let mut f = tcp_frame(C, 1, VIP, 104, 0x02, b"");
        set_ip_field(&mut f, |ip| ip.set_hop_limit(1));
        let before = f.clone();
        let p = l4(&f);
        assert_eq!(
            translate(
                &mut f,
                &p,
                p.key.src,
                Endpoint::new(RS1, 104),
                Ttl::Decrement
            ),
            Err(DropReason::TtlExpired)
        );
        assert_eq!(f, before);
        // DR-style forwarding keeps TTL 1 as it is.
        translate(&mut f, &p, p.key.src, p.key.dst, Ttl::Keep).unwrap();
        assert_eq!(f, before);
    }

    #[test]
    fn set_macs_writes_both_addresses() {
        let mut f = tcp_frame(C, 1, VIP, 104, 0x02, b"");
        let (d, s) = (
            EthernetAddress([2, 0, 0, 0, 0, 0xaa]),
            EthernetAddress([2, 0, 0, 0, 0, 0xbb]),
        );
        set_macs(&mut f, d, s).unwrap();
        assert_eq!(&f[..6], d.as_bytes());
        assert_eq!(&f[6..12], s.as_bytes());
        assert_eq!(
            set_macs(&mut f[..5], d, s),
            Err(DropReason::TruncatedEthernet)
        );
    }

    /// Checks outer IP, ICMP, quoted IP and (when whole) quoted TCP/UDP checksums.
    fn icmp_checksums_ok(frame: &[u8], quote_is_whole: bool) -> bool {
        let ip = Ipv4Packet::new_checked(&frame[IP..]).unwrap();
        let icmp = ip.payload();
        let quoted = Ipv4Packet::new_unchecked(&icmp[8..]);
        let mut ok = ip.verify_checksum()
            && checksum::sum(icmp) == 0xffff
            && checksum::sum(&icmp[8..8 + usize::from(quoted.header_len())]) == 0xffff;
        if quote_is_whole {
            let (s, d) = (
                IpAddress::Ipv4(quoted.src_addr()),
                IpAddress::Ipv4(quoted.dst_addr()),
            );
            let seg = &icmp[8 + usize::from(quoted.header_len())..];
            ok &= match quoted.next_header() {
                smoltcp::wire::IpProtocol::Tcp => {
                    TcpPacket::new_checked(seg).unwrap().verify_checksum(&s, &d)
                }
                _ => UdpPacket::new_checked(seg).unwrap().verify_checksum(&s, &d),
            };
        }
        ok
    }

    fn icmp_err(frame: &[u8]) -> IcmpError {
        match classify(frame) {
            Ok(Class::IcmpError(e)) => e,
            other => panic!("not an ICMP error: {other:?}"),
        }
    }

    #[test]
    fn icmp_frag_needed_about_nat_flow_is_translated() {
        // The client sent C->VIP, NAT made it C->RS1; RS1's router says
        // "fragmentation needed" to C quoting C->RS1. The client must see
        // VIP, both outside and in the quote.
        let quoted = tcp_frame(C, 40000, RS1, 11112, 0x18, &[7u8; 40]);
        let mut f = icmp_error_frame(ROUTER, C, 3, 4, &quoted[IP..]);
        let e = icmp_err(&f);
        let t = IcmpTranslation {
            outer_src: VIP,
            outer_dst: C,
            quoted_src: Endpoint::new(C, 40000),
            quoted_dst: Endpoint::new(VIP, 104),
        };
        translate_icmp_error(&mut f, &e, &t, Ttl::Decrement).unwrap();
        let e2 = icmp_err(&f);
        assert_eq!(e2.ip.src, VIP);
        assert_eq!(e2.ip.ttl, 63);
        assert_eq!(e2.quoted.key.dst, Endpoint::new(VIP, 104));
        assert_eq!((e2.icmp_type, e2.code), (3, 4));
        assert!(icmp_checksums_ok(&f, true));
    }

    #[test]
    fn icmp_error_with_short_quote_is_translated() {
        let quoted = udp_frame(RS1, 2575, C, 6000, b"ack");
        let mut f = icmp_error_frame(C, VIP, 3, 3, &quoted[IP..IP + 28]);
        let e = icmp_err(&f);
        let t = IcmpTranslation {
            outer_src: C,
            outer_dst: RS1,
            quoted_src: Endpoint::new(RS1, 2575),
            quoted_dst: Endpoint::new(C, 6000),
        };
        translate_icmp_error(&mut f, &e, &t, Ttl::Keep).unwrap();
        assert!(icmp_checksums_ok(&f, false));
        assert_eq!(icmp_err(&f).ip.dst, RS1);
    }

    fn endpoint() -> impl Strategy<Value = Endpoint> {
        (any::<[u8; 4]>(), any::<u16>()).prop_map(|(a, p)| Endpoint::new(Ipv4Addr::from(a), p))
    }

    prop_compose! {
        fn any_frame()(
            tcp in any::<bool>(),
            src in endpoint(),
            dst in endpoint(),
            flags in any::<u8>(),
            payload in proptest::collection::vec(any::<u8>(), 0..80),
            options in prop::sample::select(alloc::vec![0usize, 4, 8, 40]),
            udp_no_checksum in any::<bool>(),
        ) -> Vec<u8> {
            let f = if tcp {
                tcp_frame(src.addr, src.port, dst.addr, dst.port, flags & 0x1f, &payload)
            } else {
                let mut f = udp_frame(src.addr, src.port, dst.addr, dst.port, &payload);
                if udp_no_checksum {
                    f[IP + 20 + 6..IP + 20 + 8].copy_from_slice(&[0, 0]);
                }
                f
            };
            // NOPs then END: accepted options of any length.
            let mut opts = alloc::vec![1u8; options];
            if let Some(last) = opts.last_mut() { *last = 0; }
            with_ip_options(&f, &opts)
        }
    }

    proptest! {
        /// Rewrite followed by the reverse rewrite restores the frame byte
        /// for byte; every intermediate checksum verifies in full.
        #[test]
        fn rewrite_then_reverse_restores_frame(
            f in any_frame(), new_src in endpoint(), new_dst in endpoint(),
        ) {
            let mut g = f.clone();
            let p = l4(&g);
            translate(&mut g, &p, new_src, new_dst, Ttl::Keep).unwrap();
            prop_assert!(checksums_ok(&g));
            let q = l4(&g);
            prop_assert_eq!((q.key.src, q.key.dst), (new_src, new_dst));
            translate(&mut g, &q, p.key.src, p.key.dst, Ttl::Keep).unwrap();
            prop_assert_eq!(&g, &f);
        }

        /// With the TTL decremented, the round trip equals the original with
        /// TTL one lower and its header checksum recomputed in full.
        #[test]
        fn rewrite_with_ttl_then_reverse(f in any_frame(), new_dst in endpoint()) {
            let mut g = f.clone();
            let p = l4(&g);
            let r = translate(&mut g, &p, p.key.src, new_dst, Ttl::Decrement);
            if p.ip.ttl <= 1 {
                prop_assert_eq!(r, Err(DropReason::TtlExpired));
                return Ok(());
            }
            prop_assert!(checksums_ok(&g));
            let q = l4(&g);
            translate(&mut g, &q, p.key.src, p.key.dst, Ttl::Keep).unwrap();
            let mut expected = f.clone();
            set_ip_field(&mut expected, |ip| ip.set_hop_limit(p.ip.ttl - 1));
            prop_assert_eq!(&g, &expected);
        }

        /// ICMP error translation keeps every checksum right, with quotes of
        /// any length from the bare minimum to the whole packet.
        #[test]
        fn icmp_translation_checksums(
            inner in any_frame(), cut in any::<prop::sample::Index>(),
            outer_src in any::<[u8; 4]>(), outer_dst in any::<[u8; 4]>(),
            qs in endpoint(), qd in endpoint(),
        ) {
            let ip_len = inner.len() - IP;
            let hl = usize::from(inner[IP] & 0x0f) * 4;
            let min = hl + 8;
            let quote_len = min + cut.index(ip_len - min + 1);
            let mut f = icmp_error_frame(ROUTER, C, 11, 0, &inner[IP..IP + quote_len]);
            let e = icmp_err(&f);
            let t = IcmpTranslation {
                outer_src: Ipv4Addr::from(outer_src), outer_dst: Ipv4Addr::from(outer_dst),
                quoted_src: qs, quoted_dst: qd,
            };
            translate_icmp_error(&mut f, &e, &t, Ttl::Decrement).unwrap();
            prop_assert!(icmp_checksums_ok(&f, quote_len == ip_len));
            let e2 = icmp_err(&f);
            prop_assert_eq!((e2.quoted.key.src, e2.quoted.key.dst), (qs, qd));
        }
    }
}
