//! VRRPv3 advertisements for IPv4 (RFC 5798 §5) on the wire.
//!
//! [`Packet`] is a zero-copy view of the VRRP part of an IPv4 packet (the
//! shape of `smoltcp::wire`), [`Repr`] its parsed form. [`parse_frame`] and
//! [`emit_frame`] handle a whole Ethernet frame: the IPv4 header around the
//! advertisement carries what the RFC requires a receiver to check (protocol
//! 112, TTL 255) and what the checksum covers (the pseudo-header).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |(rsvd) |     Max Adver Int     |          Checksum             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IPv4 Address(es)                        |
//! ```
//!
//! The checksum covers the VRRP message and, as RFC 5798 §5.2.8 says, the
//! IPv4 pseudo-header (source, destination, protocol, VRRP length).
//! Some implementations (Cisco, Juniper, RFC 9568's errata discussion, and
//! keepalived with `v3_checksum_as_v2`) leave the pseudo-header out, as
//! VRRPv2 did: [`ChecksumMode::V2`] speaks with them. A receiver in unicast
//! mode also accepts a checksum computed with the multicast group as the
//! pseudo-header's destination (what keepalived before 1.3.6 sent).

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::wire::{EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet};

use crate::frame::ETHERNET_HEADER_LEN;
use crate::frame::checksum;

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// The IPv4 multicast group of VRRP.
pub const MULTICAST_GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Its Ethernet group address.
pub const MULTICAST_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12];
/// The only TTL a receiver accepts (the sender is on the same link).
pub const TTL: u8 = 255;
/// VRRP version 3.
pub const VERSION: u8 = 3;
/// Type 1: ADVERTISEMENT, the only type there is.
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Fixed part of an advertisement.
pub const HEADER_LEN: usize = 8;
/// Most addresses one advertisement carries (the count is 8 bits).
pub const MAX_ADDRS: usize = 255;
/// Largest advertisement interval the 12-bit field holds, in centiseconds.
pub const MAX_INTERVAL_CS: u16 = 0x0fff;
/// IPv4 header this implementation sends (no options).
const IPV4_HEADER_LEN: usize = 20;

/// The virtual router MAC address of `vrid` (RFC 5798 §7.3).
pub const fn virtual_mac(vrid: u8) -> [u8; 6] {
    [0x00, 0x00, 0x5e, 0x00, 0x01, vrid]
}

/// Which bytes the checksum covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChecksumMode {
    /// RFC 5798: the VRRP message and the IPv4 pseudo-header.
    #[default]
    Rfc,
    /// The VRRP message only, as in VRRPv2 (keepalived's
    /// `v3_checksum_as_v2`).
    V2,
}

/// Why an advertisement was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its headers or its address count says.
    Truncated,
    /// Not an IPv4 VRRP packet at all (other ethertype or protocol).
    NotVrrp,
    /// The IPv4 header is malformed or its checksum is wrong.
    BadIpHeader,
    /// A fragment (adverts are never fragmented).
    Fragment,
    /// TTL other than 255: it did not come from this link.
    BadTtl,
    /// Version other than 3.
    BadVersion,
    /// Type other than ADVERTISEMENT.
    BadType,
    /// The checksum does not match.
    BadChecksum,
    /// Bytes after the addresses that are not Ethernet padding.
    BadLength,
}

impl Error {
    /// Every error, for counters.
    pub const ALL: [Error; 9] = [
        Error::Truncated,
        Error::NotVrrp,
        Error::BadIpHeader,
        Error::Fragment,
        Error::BadTtl,
        Error::BadVersion,
        Error::BadType,
        Error::BadChecksum,
        Error::BadLength,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::NotVrrp => "not-vrrp",
            Error::BadIpHeader => "bad-ip-header",
            Error::Fragment => "fragment",
            Error::BadTtl => "bad-ttl",
            Error::BadVersion => "bad-version",
            Error::BadType => "bad-type",
            Error::BadChecksum => "bad-checksum",
            Error::BadLength => "bad-length",
        }
    }

    pub fn index(self) -> usize {
        Error::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }
}

mod field {
    pub const VER_TYPE: usize = 0;
    pub const VRID: usize = 1;
    pub const PRIORITY: usize = 2;
    pub const COUNT: usize = 3;
    pub const INTERVAL: core::ops::Range<usize> = 4..6;
    pub const CHECKSUM: core::ops::Range<usize> = 6..8;
}

/// A zero-copy view of a VRRP advertisement (the IP payload).
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// A view without checking the length.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// A view, after checking that the buffer holds the fixed part and
    /// every address the count announces.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let p = Packet::new_unchecked(buffer);
        p.check_len()?;
        Ok(p)
    }

    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN || len < self.total_len() {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// Bytes of the advertisement: the fixed part and the addresses.
    pub fn total_len(&self) -> usize {
        let b = self.buffer.as_ref();
        HEADER_LEN + 4 * usize::from(b.get(field::COUNT).copied().unwrap_or(0))
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] >> 4
    }

    pub fn kind(&self) -> u8 {
        self.buffer.as_ref()[field::VER_TYPE] & 0x0f
    }

    pub fn vrid(&self) -> u8 {
        self.buffer.as_ref()[field::VRID]
    }

    pub fn priority(&self) -> u8 {
        self.buffer.as_ref()[field::PRIORITY]
    }

    pub fn addr_count(&self) -> u8 {
        self.buffer.as_ref()[field::COUNT]
    }

    /// Max Adver Int, in centiseconds (the reserved high bits are ignored).
    pub fn max_advert_interval(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::INTERVAL];
        u16::from_be_bytes([b[0], b[1]]) & MAX_INTERVAL_CS
    }

    pub fn checksum(&self) -> u16 {
        let b = &self.buffer.as_ref()[field::CHECKSUM];
        u16::from_be_bytes([b[0], b[1]])
    }

    /// Address `i` (< [`Packet::addr_count`]).
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        let at = HEADER_LEN + 4 * i;
        let b = &self.buffer.as_ref()[at..at + 4];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The addresses, in order.
    pub fn addrs(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        (0..usize::from(self.addr_count())).map(|i| self.addr(i))
    }

    /// Whether the checksum is right for a packet from `src` to `dst`.
    pub fn verify_checksum(&self, mode: ChecksumMode, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        let data = &self.buffer.as_ref()[..self.total_len()];
        checksum::fold(
            u32::from(checksum::sum(data)) + u32::from(pseudo_sum(mode, src, dst, data.len())),
        ) == 0xffff
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version_and_kind(&mut self, version: u8, kind: u8) {
        self.buffer.as_mut()[field::VER_TYPE] = (version << 4) | (kind & 0x0f);
    }

    pub fn set_vrid(&mut self, vrid: u8) {
        self.buffer.as_mut()[field::VRID] = vrid;
    }

    pub fn set_priority(&mut self, priority: u8) {
        self.buffer.as_mut()[field::PRIORITY] = priority;
    }

    pub fn set_addr_count(&mut self, count: u8) {
        self.buffer.as_mut()[field::COUNT] = count;
    }

    /// Sets Max Adver Int (centiseconds; the reserved bits are zero).
    pub fn set_max_advert_interval(&mut self, cs: u16) {
        self.buffer.as_mut()[field::INTERVAL]
            .copy_from_slice(&(cs & MAX_INTERVAL_CS).to_be_bytes());
    }

    pub fn set_checksum(&mut self, value: u16) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&value.to_be_bytes());
    }

    pub fn set_addr(&mut self, i: usize, addr: Ipv4Addr) {
        let at = HEADER_LEN + 4 * i;
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&addr.octets());
    }

    /// Computes and stores the checksum for a packet from `src` to `dst`.
    pub fn fill_checksum(&mut self, mode: ChecksumMode, src: Ipv4Addr, dst: Ipv4Addr) {
        self.set_checksum(0);
        let len = self.total_len();
        let data = &self.buffer.as_ref()[..len];
        let acc = u32::from(checksum::sum(data)) + u32::from(pseudo_sum(mode, src, dst, len));
        self.set_checksum(!checksum::fold(acc));
    }
}

/// One's-complement sum of the pseudo-header (zero in [`ChecksumMode::V2`]).
fn pseudo_sum(mode: ChecksumMode, src: Ipv4Addr, dst: Ipv4Addr, len: usize) -> u16 {
    if mode == ChecksumMode::V2 {
        return 0;
    }
    let mut p = [0u8; 12];
    p[0..4].copy_from_slice(&src.octets());
    p[4..8].copy_from_slice(&dst.octets());
    p[9] = PROTOCOL;
    p[10..12].copy_from_slice(&(len as u16).to_be_bytes());
    checksum::sum(&p)
}

/// A parsed advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repr {
    pub vrid: u8,
    /// 0: the master stops; 255: the address owner.
    pub priority: u8,
    /// Centiseconds between advertisements.
    pub max_advert_interval: u16,
    pub addrs: Vec<Ipv4Addr>,
}

impl Repr {
    /// Reads a checked packet; version and type must be VRRPv3's
    /// advertisement.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Repr, Error> {
        packet.check_len()?;
        if packet.version() != VERSION {
            return Err(Error::BadVersion);
        }
        if packet.kind() != TYPE_ADVERTISEMENT {
            return Err(Error::BadType);
        }
        Ok(Repr {
            vrid: packet.vrid(),
            priority: packet.priority(),
            max_advert_interval: packet.max_advert_interval(),
            addrs: packet.addrs().collect(),
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + 4 * self.addrs.len().min(MAX_ADDRS)
    }

    /// Writes the advertisement with its checksum for `src` → `dst`. At
    /// most [`MAX_ADDRS`] addresses are written.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut Packet<T>,
        mode: ChecksumMode,
        src: Ipv4Addr,
        dst: Ipv4Addr,
    ) {
        let count = self.addrs.len().min(MAX_ADDRS);
        packet.set_version_and_kind(VERSION, TYPE_ADVERTISEMENT);
        packet.set_vrid(self.vrid);
        packet.set_priority(self.priority);
        packet.set_addr_count(count as u8);
        packet.set_max_advert_interval(self.max_advert_interval);
        for (i, a) in self.addrs.iter().take(count).enumerate() {
            packet.set_addr(i, *a);
        }
        packet.fill_checksum(mode, src, dst);
    }
}

/// An advertisement as it arrived in an Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub src_mac: [u8; 6],
    /// The sender's primary address (breaks priority ties).
    pub src: Ipv4Addr,
    /// The multicast group, or our address for unicast.
    pub dst: Ipv4Addr,
    pub repr: Repr,
}

/// Whether `frame` is an IPv4 packet of protocol 112 (cheap; no checks).
pub fn is_vrrp(frame: &[u8]) -> bool {
    frame.len() > ETHERNET_HEADER_LEN + 9
        && frame[12..14] == [0x08, 0x00]
        && frame[ETHERNET_HEADER_LEN + 9] == PROTOCOL
}

/// Reads and checks an advertisement in an Ethernet frame: IPv4 header
/// (checksum, no fragment, TTL 255), VRRP length, version, type and
/// checksum. The source MAC is reported, never checked.
pub fn parse_frame(frame: &[u8], mode: ChecksumMode) -> Result<Advert, Error> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| Error::Truncated)?;
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Err(Error::NotVrrp);
    }
    let ip = Ipv4Packet::new_checked(eth.payload()).map_err(|_| Error::BadIpHeader)?;
    if ip.next_header() != IpProtocol::Unknown(PROTOCOL) {
        return Err(Error::NotVrrp);
    }
    if ip.version() != 4 || !ip.verify_checksum() {
        return Err(Error::BadIpHeader);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(Error::Fragment);
    }
    if ip.hop_limit() != TTL {
        return Err(Error::BadTtl);
    }
    let payload = ip.payload();
    let packet = Packet::new_checked(payload)?;
    if payload.len() != packet.total_len() {
        // `new_checked` on the IPv4 packet already cut Ethernet padding off
        // (it honours the total length): anything more is not ours.
        return Err(Error::BadLength);
    }
    let repr = Repr::parse(&packet)?;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let ok = packet.verify_checksum(mode, src, dst)
        || (mode == ChecksumMode::Rfc
            && !dst.is_multicast()
            && packet.verify_checksum(mode, src, MULTICAST_GROUP));
    if !ok {
        return Err(Error::BadChecksum);
    }
    let mut src_mac = [0u8; 6];
    src_mac.copy_from_slice(&frame[6..12]);
    Ok(Advert {
        src_mac,
        src,
        dst,
        repr,
    })
}

/// Bytes of the Ethernet frame [`emit_frame`] writes for `repr` (before
/// padding to the Ethernet minimum).
pub fn frame_len(repr: &Repr) -> usize {
    ETHERNET_HEADER_LEN + IPV4_HEADER_LEN + repr.buffer_len()
}

/// Where an advertisement goes and comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addressing {
    pub src_mac: [u8; 6],
    /// [`MULTICAST_MAC`], or the unicast peer's MAC.
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    /// [`MULTICAST_GROUP`], or the unicast peer.
    pub dst: Ipv4Addr,
}

/// Writes a whole advertisement frame into `buf` (at least
/// [`frame_len`] bytes; the rest is zeroed as padding): Ethernet, IPv4
/// (TOS network control, TTL 255, protocol 112) and VRRP with its checksum.
/// Returns false when `buf` is too short.
pub fn emit_frame(buf: &mut [u8], to: &Addressing, repr: &Repr, mode: ChecksumMode) -> bool {
    let len = frame_len(repr);
    if buf.len() < len {
        return false;
    }
    buf.fill(0);
    buf[0..6].copy_from_slice(&to.dst_mac);
    buf[6..12].copy_from_slice(&to.src_mac);
    buf[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_len = IPV4_HEADER_LEN + repr.buffer_len();
    let ip = &mut buf[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + ip_len];
    ip[0] = 0x45;
    // Internetwork control precedence, as routers send routing protocols.
    ip[1] = 0xc0;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[8] = TTL;
    ip[9] = PROTOCOL;
    ip[12..16].copy_from_slice(&to.src.octets());
    ip[16..20].copy_from_slice(&to.dst.octets());
    let c = checksum::compute(&ip[..IPV4_HEADER_LEN]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut packet = Packet::new_unchecked(&mut ip[IPV4_HEADER_LEN..]);
    repr.emit(&mut packet, mode, to.src, to.dst);
    true
}
