//! Classification: what an Ethernet frame is, and its flow key.
//!
//! Everything is read through `smoltcp::wire` views over the caller's buffer;
//! nothing is copied. Every length field is checked against the buffer before
//! a view's accessors are used, so malformed input yields a [`DropReason`]
//! and never a panic.

use core::net::Ipv4Addr;

use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket,
};

use super::checksum;
use super::drop::DropReason;
use crate::flow::{Endpoint, FlowKey, Protocol};

/// Bytes before the IPv4 header (untagged Ethernet II).
pub const ETHERNET_HEADER_LEN: usize = 14;
const IPV4_MIN_HEADER_LEN: usize = 20;
const TCP_MIN_HEADER_LEN: usize = 20;
const ICMP_HEADER_LEN: usize = 8;
/// Transport bytes an ICMP error must quote to carry the ports (RFC 792).
const QUOTED_TRANSPORT_MIN: usize = 8;

const ICMP_DEST_UNREACHABLE: u8 = 3;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;

const IPOPT_END: u8 = 0;
const IPOPT_NOP: u8 = 1;
const IPOPT_LSRR: u8 = 131;
const IPOPT_SSRR: u8 = 137;

/// The IPv4 header of a classified frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Info {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub protocol: u8,
    pub ttl: u8,
    /// Header length in bytes (20 plus options).
    pub header_len: u8,
    /// The datagram's length; a frame may be longer (Ethernet padding).
    pub total_len: u16,
}

impl Ipv4Info {
    /// Offset of the transport header in the frame.
    pub const fn transport_offset(&self) -> usize {
        ETHERNET_HEADER_LEN + self.header_len as usize
    }
    /// Offset one past the datagram's last byte in the frame.
    pub const fn end(&self) -> usize {
        ETHERNET_HEADER_LEN + self.total_len as usize
    }
}

/// TCP control flags (the low byte of the flags field).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const ACK: u8 = 0x10;

    pub const fn fin(self) -> bool {
        self.0 & Self::FIN != 0
    }
    pub const fn syn(self) -> bool {
        self.0 & Self::SYN != 0
    }
    pub const fn rst(self) -> bool {
        self.0 & Self::RST != 0
    }
    pub const fn ack(self) -> bool {
        self.0 & Self::ACK != 0
    }
}

/// A whole (unfragmented) TCP segment or UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4Packet {
    pub ip: Ipv4Info,
    pub key: FlowKey,
    /// Zero for UDP.
    pub tcp_flags: TcpFlags,
}

/// The packet quoted inside an ICMP error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quoted {
    /// Offset of the quoted IPv4 header in the frame.
    pub offset: usize,
    /// Its header length in bytes.
    pub header_len: usize,
    /// Quoted bytes present in the frame (the quote is usually truncated).
    pub len: usize,
    /// The quoted packet's own 5-tuple: a packet that went the *other* way.
    pub key: FlowKey,
}

impl Quoted {
    /// Offset of the quoted transport checksum, when the quote includes it.
    pub fn transport_checksum_offset(&self) -> Option<usize> {
        let at = match self.key.proto {
            Protocol::Tcp => self.header_len + 16,
            Protocol::Udp => self.header_len + 6,
        };
        (at + 2 <= self.len).then_some(self.offset + at)
    }
}

/// An ICMP destination unreachable, time exceeded or parameter problem that
/// quotes a TCP or UDP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpError {
    pub ip: Ipv4Info,
    pub icmp_type: u8,
    pub code: u8,
    pub quoted: Quoted,
}

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    Arp,
    /// Any other EtherType (IPv6, VLAN-tagged, LLDP, ...).
    NotIpv4,
    /// A fragment (MF set or offset ≠ 0): no ports to classify by.
    Fragment(Ipv4Info),
    L4(L4Packet),
    IcmpError(IcmpError),
    /// Other IPv4: ICMP that is not an error about TCP/UDP, other protocols.
    OtherIpv4(Ipv4Info),
}

/// Classifies `frame` without modifying it.
pub fn classify(frame: &[u8]) -> Result<Class, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::TruncatedEthernet)?;
    match eth.ethertype() {
        EthernetProtocol::Ipv4 => {}
        EthernetProtocol::Arp => return Ok(Class::Arp),
        _ => return Ok(Class::NotIpv4),
    }
    let ip_bytes = eth.payload();
    let ip = check_ipv4(ip_bytes)?;
    let info = ipv4_info(&ip);
    let hl = usize::from(info.header_len);
    if hl > IPV4_MIN_HEADER_LEN {
        check_options(&ip_bytes[IPV4_MIN_HEADER_LEN..hl])?;
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Ok(Class::Fragment(info));
    }
    let payload = &ip_bytes[hl..usize::from(info.total_len)];
    match IpProtocol::from(info.protocol) {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_unchecked(payload);
            if payload.len() < TCP_MIN_HEADER_LEN {
                return Err(DropReason::TruncatedTcp);
            }
            let data_offset = usize::from(tcp.header_len());
            if data_offset < TCP_MIN_HEADER_LEN || data_offset > payload.len() {
                return Err(DropReason::BadTcpDataOffset);
            }
            Ok(Class::L4(L4Packet {
                ip: info,
                key: FlowKey {
                    proto: Protocol::Tcp,
                    src: Endpoint::new(info.src, tcp.src_port()),
                    dst: Endpoint::new(info.dst, tcp.dst_port()),
                },
                tcp_flags: TcpFlags(payload[13]),
            }))
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(payload).map_err(|_| DropReason::BadUdpLength)?;
            Ok(Class::L4(L4Packet {
                ip: info,
                key: FlowKey {
                    proto: Protocol::Udp,
                    src: Endpoint::new(info.src, udp.src_port()),
                    dst: Endpoint::new(info.dst, udp.dst_port()),
                },
                tcp_flags: TcpFlags(0),
            }))
        }
        IpProtocol::Icmp => {
            let icmp = Icmpv4Packet::new_unchecked(payload);
            if payload.len() < ICMP_HEADER_LEN {
                return Err(DropReason::TruncatedIcmp);
            }
            let icmp_type = payload[0];
            let is_error = matches!(
                icmp_type,
                ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM
            );
            let quote_offset = ETHERNET_HEADER_LEN + hl + ICMP_HEADER_LEN;
            match is_error.then(|| parse_quote(&payload[ICMP_HEADER_LEN..], quote_offset)) {
                Some(Some(quoted)) => Ok(Class::IcmpError(IcmpError {
                    ip: info,
                    icmp_type,
                    code: icmp.msg_code(),
                    quoted,
                })),
                // Echo, errors quoting something other than TCP/UDP, ...:
                // the stack's business.
                _ => Ok(Class::OtherIpv4(info)),
            }
        }
        _ => Ok(Class::OtherIpv4(info)),
    }
}

/// Checks every IPv4 length field against the buffer, and the checksum.
fn check_ipv4(bytes: &[u8]) -> Result<Ipv4Packet<&[u8]>, DropReason> {
    if bytes.len() < IPV4_MIN_HEADER_LEN {
        return Err(DropReason::TruncatedIpv4);
    }
    let ip = Ipv4Packet::new_unchecked(bytes);
    if ip.version() != 4 {
        return Err(DropReason::BadIpVersion);
    }
    let hl = usize::from(ip.header_len());
    if hl < IPV4_MIN_HEADER_LEN || hl > bytes.len() {
        return Err(DropReason::BadIhl);
    }
    let total = usize::from(ip.total_len());
    if total < hl || total > bytes.len() {
        return Err(DropReason::BadTotalLength);
    }
    // Checked by hand rather than with `verify_checksum`, which smoltcp
    // turns off under `cfg(fuzzing)`; the fuzz target repairs it instead.
    if checksum::sum(&bytes[..hl]) != 0xffff {
        return Err(DropReason::BadIpChecksum);
    }
    Ok(ip)
}

fn ipv4_info(ip: &Ipv4Packet<&[u8]>) -> Ipv4Info {
    Ipv4Info {
        src: ip.src_addr(),
        dst: ip.dst_addr(),
        protocol: ip.next_header().into(),
        ttl: ip.hop_limit(),
        header_len: ip.header_len(),
        total_len: ip.total_len(),
    }
}

/// Options are accepted and left untouched (rewrites never move the
/// transport header, so the checksums stay right), except source routes.
fn check_options(mut opts: &[u8]) -> Result<(), DropReason> {
    while let [kind, rest @ ..] = opts {
        match *kind {
            IPOPT_END => return Ok(()),
            IPOPT_NOP => opts = rest,
            kind => {
                let len = usize::from(*rest.first().ok_or(DropReason::BadIpOptions)?);
                if len < 2 || len > opts.len() {
                    return Err(DropReason::BadIpOptions);
                }
                if kind == IPOPT_LSRR || kind == IPOPT_SSRR {
                    return Err(DropReason::SourceRouted);
                }
                opts = &opts[len..];
            }
        }
    }
    Ok(())
}

/// Parses the packet quoted by an ICMP error; `None` unless it is the first
/// (or only) fragment of a TCP/UDP packet quoted with at least its ports.
fn parse_quote(bytes: &[u8], offset: usize) -> Option<Quoted> {
    if bytes.len() < IPV4_MIN_HEADER_LEN {
        return None;
    }
    let ip = Ipv4Packet::new_unchecked(bytes);
    let hl = usize::from(ip.header_len());
    if ip.version() != 4 || hl < IPV4_MIN_HEADER_LEN || ip.frag_offset() != 0 {
        return None;
    }
    let proto = match ip.next_header() {
        IpProtocol::Tcp => Protocol::Tcp,
        IpProtocol::Udp => Protocol::Udp,
        _ => return None,
    };
    let ports = bytes.get(hl..hl + QUOTED_TRANSPORT_MIN)?;
    Some(Quoted {
        offset,
        header_len: hl,
        len: bytes.len(),
        key: FlowKey {
            proto,
            src: Endpoint::new(ip.src_addr(), u16::from_be_bytes([ports[0], ports[1]])),
            dst: Endpoint::new(ip.dst_addr(), u16::from_be_bytes([ports[2], ports[3]])),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tcp_syn_gives_flow_key_and_flags() {
        let f = tcp_frame(C, 40000, VIP, 104, TcpFlags::SYN, b"");
        let Ok(Class::L4(p)) = classify(&f) else {
            panic!("not L4: {:?}", classify(&f))
        };
        assert_eq!(p.key.proto, Protocol::Tcp);
        assert_eq!(p.key.src, Endpoint::new(C, 40000));
        assert_eq!(p.key.dst, Endpoint::new(VIP, 104));
        assert!(p.tcp_flags.syn() && !p.tcp_flags.ack());
        assert_eq!(p.ip.ttl, 64);
    }

    #[test]
    fn udp_gives_flow_key() {
        let f = udp_frame(C, 5000, VIP, 2575, b"hello");
        let Ok(Class::L4(p)) = classify(&f) else {
            panic!()
        };
        assert_eq!(p.key.proto, Protocol::Udp);
        assert_eq!(p.key.dst.port, 2575);
    }

    #[test]
    fn arp_and_other_ethertypes() {
        let mut f = tcp_frame(C, 1, VIP, 2, 0, b"");
        f[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(classify(&f), Ok(Class::Arp));
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert_eq!(classify(&f), Ok(Class::NotIpv4));
    }

    #[test]
    fn malformed_headers_are_dropped_by_reason() {
        let good = tcp_frame(C, 40000, VIP, 104, TcpFlags::SYN, b"data");
        assert_eq!(classify(&good[..10]), Err(DropReason::TruncatedEthernet));
        assert_eq!(classify(&good[..30]), Err(DropReason::TruncatedIpv4));

        let mut f = good.clone();
        f[14] = 0x65; // version 6
        assert_eq!(classify(&f), Err(DropReason::BadIpVersion));

        let mut f = good.clone();
        f[14] = 0x44; // IHL 4
        assert_eq!(classify(&f), Err(DropReason::BadIhl));

        let mut f = good.clone();
        f[14] = 0x4f; // IHL 15 = 60 bytes, longer than the frame
        assert_eq!(classify(&f), Err(DropReason::BadIhl));
        f.extend_from_slice(&[0; 40]); // padding: now within the frame, beyond total length
        assert_eq!(classify(&f), Err(DropReason::BadTotalLength));

        let mut f = good.clone();
        let tl = u16::from_be_bytes([f[16], f[17]]) + 1; // one past the buffer
        f[16..18].copy_from_slice(&tl.to_be_bytes());
        assert_eq!(classify(&f), Err(DropReason::BadTotalLength));

        let mut f = good.clone();
        f[24] ^= 0x01; // header checksum
        assert_eq!(classify(&f), Err(DropReason::BadIpChecksum));

        let mut f = good.clone();
        f[34 + 12] = 0x40; // data offset 4 words
        assert_eq!(classify(&f), Err(DropReason::BadTcpDataOffset));
        f[34 + 12] = 0xf0; // 60 bytes, longer than the segment
        assert_eq!(classify(&f), Err(DropReason::BadTcpDataOffset));

        let f = truncate_ip(&good, 20 + 12);
        assert_eq!(classify(&f), Err(DropReason::TruncatedTcp));

        let u = udp_frame(C, 1, VIP, 2, b"x");
        let f = truncate_ip(&u, 20 + 4);
        assert_eq!(classify(&f), Err(DropReason::BadUdpLength));
        let mut f = u.clone();
        f[34 + 4..34 + 6].copy_from_slice(&100u16.to_be_bytes());
        assert_eq!(classify(&f), Err(DropReason::BadUdpLength));
    }

    #[test]
    fn fragments_are_reported_as_such() {
        let mut f = udp_frame(C, 1, VIP, 2, b"x");
        set_ip_field(&mut f, |ip| ip.set_more_frags(true));
        assert!(matches!(classify(&f), Ok(Class::Fragment(_))));
        let mut f = udp_frame(C, 1, VIP, 2, b"x");
        set_ip_field(&mut f, |ip| ip.set_frag_offset(64));
        assert!(matches!(classify(&f), Ok(Class::Fragment(_))));
    }

    #[test]
    fn ip_options_are_accepted_and_skipped() {
        // Router alert (4 bytes) then NOP x3, END: IHL 7.
        let f = with_ip_options(
            &tcp_frame(C, 7, VIP, 104, TcpFlags::SYN, b""),
            &[148, 4, 0, 0, 1, 1, 1, 0],
        );
        let Ok(Class::L4(p)) = classify(&f) else {
            panic!("{:?}", classify(&f))
        };
        assert_eq!(p.ip.header_len, 28);
        assert_eq!(p.key.src.port, 7);
        assert_eq!(p.key.dst.port, 104);
    }

    #[test]
    fn bad_and_source_route_options_are_dropped() {
        let base = tcp_frame(C, 7, VIP, 104, TcpFlags::SYN, b"");
        let f = with_ip_options(&base, &[148, 9, 0, 0]); // length past the header
        assert_eq!(classify(&f), Err(DropReason::BadIpOptions));
        let f = with_ip_options(&base, &[148, 1, 0, 0]); // length below 2
        assert_eq!(classify(&f), Err(DropReason::BadIpOptions));
        let f = with_ip_options(&base, &[131, 7, 4, 10, 0, 0, 1, 0]);
        assert_eq!(classify(&f), Err(DropReason::SourceRouted));
    }

    #[test]
    fn icmp_error_quoting_tcp_is_parsed() {
        let inner = tcp_frame(RS1, 104, C, 40000, TcpFlags::ACK, b"abcdefgh");
        let f = icmp_error_frame(ROUTER, RS1, 3, 4, &inner[14..]);
        let Ok(Class::IcmpError(e)) = classify(&f) else {
            panic!("{:?}", classify(&f))
        };
        assert_eq!((e.icmp_type, e.code), (3, 4));
        assert_eq!(e.quoted.key.src, Endpoint::new(RS1, 104));
        assert_eq!(e.quoted.key.dst, Endpoint::new(C, 40000));
        assert_eq!(e.quoted.offset, 14 + 20 + 8);
        assert!(e.quoted.transport_checksum_offset().is_some());
        // A quote of only 8 transport bytes has ports but no TCP checksum.
        let f = icmp_error_frame(ROUTER, RS1, 11, 0, &inner[14..14 + 28]);
        let Ok(Class::IcmpError(e)) = classify(&f) else {
            panic!()
        };
        assert_eq!(e.quoted.transport_checksum_offset(), None);
        // Too short to carry the ports: the stack may have it.
        let f = icmp_error_frame(ROUTER, RS1, 3, 1, &inner[14..14 + 24]);
        assert!(matches!(classify(&f), Ok(Class::OtherIpv4(_))));
    }

    #[test]
    fn icmp_echo_is_other() {
        let f = icmp_error_frame(C, VIP, 8, 0, b"pingpingpingpingpingping");
        assert!(matches!(classify(&f), Ok(Class::OtherIpv4(_))));
        let f = icmp_error_frame(C, VIP, 8, 0, b"");
        let f = truncate_ip(&f, 20 + 4);
        assert_eq!(classify(&f), Err(DropReason::TruncatedIcmp));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = classify(&bytes);
        }

        /// Random bytes after a valid Ethernet + IPv4 header (checksum fixed
        /// up so classification gets past it) never panic either.
        #[test]
        fn random_ip_payloads_never_panic(
            hdr in proptest::collection::vec(any::<u8>(), 20..60),
            rest in proptest::collection::vec(any::<u8>(), 0..120),
        ) {
            let mut f = [0u8; 14].to_vec();
            f[12] = 0x08;
            f.extend_from_slice(&hdr);
            f.extend_from_slice(&rest);
            f[14] = 0x40 | (f[14] & 0x0f);
            fix_ip_checksum(&mut f);
            let _ = classify(&f);
        }
    }
}
