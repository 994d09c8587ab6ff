//! Checksum and segmentation offload: what a NIC says about a frame beyond
//! its bytes, and the software fallbacks for when a frame must leave
//! through a NIC (or reach a stack) that cannot finish the job itself.
//!
//! With offloads a hypervisor hands the appliance TCP *super-frames* of up
//! to 64 KiB — one IPv4 header, one TCP header, the payload of many
//! segments, the segment size in the metadata ([`Gso`]) — whose TCP checksum
//! is *partial* ([`L4Checksum::Partial`]): the checksum field holds the
//! folded sum of the pseudo-header only, and whoever puts the frame on the
//! wire sums the TCP header and payload into it. Forwarding such a frame
//! whole to a NIC that segments (TSO) moves bulk data at a fraction of the
//! per-frame cost; this is how the L4 path keeps up with a modality pushing
//! a large study.
//!
//! What that means for every rewrite of a frame (one rule, in
//! [`L4Checksum::patch`], for the L4 rewrites and the Layer 7 splice alike):
//! * a change to a pseudo-header field (the addresses) is folded into the
//!   field — into a partial one with the opposite sense of a complete one;
//! * a change to bytes the checksum covers directly (ports, sequence and
//!   acknowledgement numbers, options) is folded into a complete field but
//!   *not* into a partial one: the NIC sums those bytes as they are when it
//!   sends the frame.
//!
//! Fallbacks, for a NIC without checksum offload or without TSO, and for the
//! IP stack (which takes only whole, checksummed frames of at most the MTU):
//! [`complete_checksum`] and [`Segmenter`].

use core::net::Ipv4Addr;

use super::checksum::{self, Delta, read16, write16};
use super::classify::ETHERNET_HEADER_LEN;
use super::drop::DropReason;

const ETHERTYPE_IPV4: u16 = 0x0800;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
/// Offset of the checksum field in a TCP header.
pub const TCP_CHECKSUM_OFFSET: u16 = 16;
/// Offset of the checksum field in a UDP header.
pub const UDP_CHECKSUM_OFFSET: u16 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The state of a frame's TCP or UDP checksum field.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum L4Checksum {
    /// The field holds the whole checksum (right or wrong: it is end to end).
    #[default]
    Complete,
    /// The field holds the folded pseudo-header sum; the sender sums the
    /// bytes from `start` (an offset in the frame) to the end of the IP
    /// datagram and stores the complement at `start + offset`.
    Partial { start: u16, offset: u16 },
}

/// A TCP-over-IPv4 super-frame: to be cut into segments of at most `mss`
/// payload bytes each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    pub mss: u16,
}

/// Everything about a frame that is not in its bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offload {
    pub checksum: L4Checksum,
    /// Only with a partial TCP checksum.
    pub gso: Option<Gso>,
}

impl Offload {
    /// A whole frame with whole checksums: what stacks and builders make.
    pub const NONE: Offload = Offload {
        checksum: L4Checksum::Complete,
        gso: None,
    };

    /// Whether this is what a frame with its L4 header at `l4` (an offset
    /// in the frame) of protocol `tcp`/UDP can carry: a partial checksum
    /// must point at that header's checksum field, and only TCP with a
    /// partial checksum is segmented.
    pub fn fits(&self, l4: usize, tcp: bool) -> bool {
        let field = if tcp {
            TCP_CHECKSUM_OFFSET
        } else {
            UDP_CHECKSUM_OFFSET
        };
        match (self.checksum, self.gso) {
            (L4Checksum::Complete, None) => true,
            (L4Checksum::Complete, Some(_)) => false,
            (L4Checksum::Partial { start, offset }, gso) => {
                usize::from(start) == l4 && offset == field && gso.is_none_or(|g| tcp && g.mss > 0)
            }
        }
    }

    /// Frames on the wire for `payload` TCP payload bytes with these offloads.
    pub fn wire_frames(&self, payload: usize) -> u64 {
        match self.gso {
            Some(g) if g.mss > 0 && payload > 0 => payload.div_ceil(usize::from(g.mss)) as u64,
            _ => 1,
        }
    }
}

impl L4Checksum {
    /// Updates the checksum field at `at` for a rewrite that changed
    /// pseudo-header words by `pseudo` and other covered words by `covered`
    /// (see the module documentation). `udp` keeps a zero ("no checksum")
    /// UDP field zero.
    pub fn patch(self, frame: &mut [u8], at: usize, pseudo: Delta, covered: Delta, udp: bool) {
        let Some(old) = read16(frame, at) else {
            return;
        };
        let new = match self {
            L4Checksum::Complete => {
                let mut all = pseudo;
                all.merge(covered);
                if udp {
                    all.apply_udp(old)
                } else {
                    all.apply(old)
                }
            }
            // The field is a sum, not its complement.
            L4Checksum::Partial { .. } => !pseudo.apply(!old),
        };
        write16(frame, at, new);
    }
}

/// One's-complement sum of the IPv4 pseudo-header (not complemented).
pub fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, l4_len: usize) -> u16 {
    let (s, d) = (src.octets(), dst.octets());
    let words = [
        u16::from_be_bytes([s[0], s[1]]),
        u16::from_be_bytes([s[2], s[3]]),
        u16::from_be_bytes([d[0], d[1]]),
        u16::from_be_bytes([d[2], d[3]]),
        u16::from(protocol),
        // An IPv4 datagram is below 64 KiB, so its L4 length fits 16 bits.
        l4_len as u16,
    ];
    checksum::fold(words.iter().map(|&w| u32::from(w)).sum())
}

/// Where the IP datagram in `frame` ends (Ethernet padding excluded), or
/// the frame's end when it is not IPv4 or its length field is off.
fn datagram_end(frame: &[u8]) -> usize {
    if read16(frame, 12) == Some(ETHERTYPE_IPV4)
        && let Some(total) = read16(frame, ETHERNET_HEADER_LEN + 2)
    {
        let end = ETHERNET_HEADER_LEN + usize::from(total);
        if end <= frame.len() {
            return end;
        }
    }
    frame.len()
}

/// Finishes a partial checksum in software: sums the bytes from `start` to
/// the end of the datagram (the field holds the pseudo-header sum) and
/// stores the complement, as a NIC with checksum offload would.
pub fn complete_checksum(frame: &mut [u8], start: u16, offset: u16) -> Result<(), DropReason> {
    let (start, at) = (usize::from(start), usize::from(start) + usize::from(offset));
    let end = datagram_end(frame);
    if start > end || at + 2 > end {
        return Err(DropReason::BadOffload);
    }
    let mut c = !checksum::sum(&frame[start..end]);
    if offset == UDP_CHECKSUM_OFFSET && c == 0 {
        c = 0xffff; // RFC 768: zero means "no checksum"
    }
    write16(frame, at, c);
    Ok(())
}

/// How each segment's TCP checksum is written by [`Segmenter::write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmentChecksum {
    /// Computed in full.
    Complete,
    /// Pseudo-header sum only, for a NIC with checksum offload
    /// ([`Segmenter::partial`] says where).
    Partial,
}

/// Cuts a TCP super-frame into wire-sized segments in software, as a NIC
/// doing TSO would (and as Linux's GSO does): each segment gets the
/// Ethernet, IPv4 and TCP headers of the super-frame with its own IP total
/// length, IP identification (incremented per segment), IP checksum,
/// sequence number and TCP checksum; FIN and PSH only on the last segment,
/// CWR only on the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segmenter {
    ip_header: usize,
    tcp_header: usize,
    payload: usize,
    mss: usize,
}

impl Segmenter {
    /// Reads the headers of `frame`, a TCP super-frame over IPv4.
    pub fn new(frame: &[u8], gso: Gso) -> Result<Segmenter, DropReason> {
        if gso.mss == 0 || read16(frame, 12) != Some(ETHERTYPE_IPV4) {
            return Err(DropReason::BadOffload);
        }
        let ip = frame
            .get(ETHERNET_HEADER_LEN..)
            .filter(|ip| ip.len() >= 20)
            .ok_or(DropReason::TruncatedIpv4)?;
        let ip_header = usize::from(ip[0] & 0x0f) * 4;
        let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[0] >> 4 != 4 || ip_header < 20 || total < ip_header || total > ip.len() {
            return Err(DropReason::BadTotalLength);
        }
        if ip[9] != PROTO_TCP {
            return Err(DropReason::BadOffload);
        }
        let tcp = &ip[ip_header..total];
        if tcp.len() < 20 {
            return Err(DropReason::TruncatedTcp);
        }
        let tcp_header = usize::from(tcp[12] >> 4) * 4;
        if tcp_header < 20 || tcp_header > tcp.len() {
            return Err(DropReason::BadTcpDataOffset);
        }
        Ok(Segmenter {
            ip_header,
            tcp_header,
            payload: tcp.len() - tcp_header,
            mss: usize::from(gso.mss),
        })
    }

    /// Bytes of headers (Ethernet, IPv4, TCP) each segment repeats.
    pub fn header_len(&self) -> usize {
        ETHERNET_HEADER_LEN + self.ip_header + self.tcp_header
    }

    /// Number of segments (one for a super-frame without payload).
    pub fn count(&self) -> usize {
        self.payload.div_ceil(self.mss).max(1)
    }

    /// Frame length of segment `i`.
    pub fn segment_len(&self, i: usize) -> usize {
        let from = i * self.mss;
        self.header_len() + self.payload.saturating_sub(from).min(self.mss)
    }

    /// The partial checksum a segment written with
    /// [`SegmentChecksum::Partial`] carries.
    pub fn partial(&self) -> L4Checksum {
        L4Checksum::Partial {
            start: (ETHERNET_HEADER_LEN + self.ip_header) as u16,
            offset: TCP_CHECKSUM_OFFSET,
        }
    }

    /// Writes segment `i` of `frame` (the super-frame this segmenter was
    /// made from) into `out` and returns its length. `out` must hold
    /// [`Self::segment_len`] bytes; `None` if it does not or `i` is past
    /// the last segment. The super-frame's TCP checksum field is ignored.
    pub fn write(
        &self,
        frame: &[u8],
        i: usize,
        out: &mut [u8],
        checksum: SegmentChecksum,
    ) -> Option<usize> {
        if i >= self.count() {
            return None;
        }
        let hdr = self.header_len();
        let len = self.segment_len(i);
        let seg = len - hdr;
        let from = hdr + i * self.mss;
        let out = out.get_mut(..len)?;
        out[..hdr].copy_from_slice(frame.get(..hdr)?);
        out[hdr..].copy_from_slice(frame.get(from..from + seg)?);
        let ip = ETHERNET_HEADER_LEN;
        let l4 = ip + self.ip_header;
        // IPv4: length, identification, checksum.
        write16(out, ip + 2, (self.ip_header + self.tcp_header + seg) as u16)?;
        let id = read16(out, ip + 4)?.wrapping_add(i as u16);
        write16(out, ip + 4, id)?;
        write16(out, ip + 10, 0)?;
        let c = checksum::compute(&out[ip..l4]);
        write16(out, ip + 10, c)?;
        // TCP: sequence number, flags.
        let seq = u32::from_be_bytes(out[l4 + 4..l4 + 8].try_into().ok()?);
        out[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add((i * self.mss) as u32).to_be_bytes());
        if i + 1 < self.count() {
            out[l4 + 13] &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            out[l4 + 13] &= !TCP_CWR;
        }
        let src = Ipv4Addr::from(<[u8; 4]>::try_from(&out[ip + 12..ip + 16]).ok()?);
        let dst = Ipv4Addr::from(<[u8; 4]>::try_from(&out[ip + 16..ip + 20]).ok()?);
        let pseudo = pseudo_header_sum(src, dst, PROTO_TCP, self.tcp_header + seg);
        let at = l4 + usize::from(TCP_CHECKSUM_OFFSET);
        match checksum {
            SegmentChecksum::Partial => write16(out, at, pseudo)?,
            SegmentChecksum::Complete => {
                write16(out, at, 0)?;
                let body = checksum::sum(&out[l4..]);
                let c = !checksum::fold(u32::from(pseudo) + u32::from(body));
                write16(out, at, c)?;
            }
        }
        Some(len)
    }
}

/// Whether a partial checksum could be for `protocol` (TCP or UDP).
pub fn partial_offset_for(protocol: u8) -> Option<u16> {
    match protocol {
        PROTO_TCP => Some(TCP_CHECKSUM_OFFSET),
        PROTO_UDP => Some(UDP_CHECKSUM_OFFSET),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use alloc::vec::Vec;
    use proptest::prelude::*;
    use smoltcp::wire::{IpAddress, Ipv4Packet, TcpPacket, UdpPacket};

    const IP: usize = ETHERNET_HEADER_LEN;

    fn tcp_ok(frame: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(&frame[IP..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        ip.verify_checksum()
            && tcp.verify_checksum(
                &IpAddress::Ipv4(ip.src_addr()),
                &IpAddress::Ipv4(ip.dst_addr()),
            )
    }

    fn make_partial(frame: &mut [u8]) -> Offload {
        super::super::build::partial(frame, None)
    }

    fn payload(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    #[test]
    fn completing_a_partial_checksum_gives_the_real_one() {
        let reference = tcp_frame(C, 40000, VIP, 104, 0x18, &payload(1000, 7));
        let mut f = reference.clone();
        let o = make_partial(&mut f);
        assert!(!tcp_ok(&f));
        let L4Checksum::Partial { start, offset } = o.checksum else {
            panic!()
        };
        complete_checksum(&mut f, start, offset).unwrap();
        assert_eq!(f, reference);
    }

    #[test]
    fn completing_udp_never_writes_zero() {
        let reference = udp_frame(C, 5000, VIP, 514, b"datagram");
        let mut f = reference.clone();
        let o = make_partial(&mut f);
        let L4Checksum::Partial { start, offset } = o.checksum else {
            panic!()
        };
        complete_checksum(&mut f, start, offset).unwrap();
        let ip = Ipv4Packet::new_checked(&f[IP..]).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(udp.verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr())
        ));
    }

    #[test]
    fn bad_partial_offsets_are_refused_not_panics() {
        let mut f = tcp_frame(C, 40000, VIP, 104, 0x18, b"x");
        let before = f.clone();
        assert_eq!(
            complete_checksum(&mut f, 60_000, 16),
            Err(DropReason::BadOffload)
        );
        assert_eq!(
            complete_checksum(&mut f, 34, 60_000),
            Err(DropReason::BadOffload)
        );
        assert_eq!(f, before);
    }

    #[test]
    fn offload_fits_only_its_own_header() {
        let tcp = Offload {
            checksum: L4Checksum::Partial {
                start: 34,
                offset: 16,
            },
            gso: Some(Gso { mss: 1448 }),
        };
        assert!(tcp.fits(34, true));
        assert!(!tcp.fits(38, true));
        assert!(!tcp.fits(34, false));
        let complete_gso = Offload {
            checksum: L4Checksum::Complete,
            gso: Some(Gso { mss: 1448 }),
        };
        assert!(!complete_gso.fits(34, true));
        assert!(Offload::NONE.fits(34, false));
        assert_eq!(tcp.wire_frames(1448 * 3 + 1), 4);
        assert_eq!(Offload::NONE.wire_frames(5000), 1);
    }

    /// A super-frame's segments, each checked against a segment built
    /// independently by smoltcp with the expected fields.
    fn check_segments(total: usize, mss: u16, flags: u8) {
        let data = payload(total, 3);
        let mut sf = tcp_frame(C, 40000, VIP, 104, flags, &data);
        sf[IP + 20 + 13] |= flags & TCP_CWR; // the builder knows no CWR
        make_partial(&mut sf);
        let seg = Segmenter::new(&sf, Gso { mss }).unwrap();
        let n = total.div_ceil(usize::from(mss)).max(1);
        assert_eq!(seg.count(), n);
        let ip_id = Ipv4Packet::new_checked(&sf[IP..]).unwrap().ident();
        let seq0 = TcpPacket::new_checked(&sf[IP + 20..]).unwrap().seq_number();
        let mut joined = Vec::new();
        for i in 0..n {
            let mut out = alloc::vec![0u8; 2000];
            let mode = if i % 2 == 0 {
                SegmentChecksum::Complete
            } else {
                SegmentChecksum::Partial
            };
            let len = seg.write(&sf, i, &mut out, mode).unwrap();
            assert_eq!(len, seg.segment_len(i));
            let mut out = out[..len].to_vec();
            if mode == SegmentChecksum::Partial {
                let L4Checksum::Partial { start, offset } = seg.partial() else {
                    panic!()
                };
                complete_checksum(&mut out, start, offset).unwrap();
            }
            assert!(tcp_ok(&out), "segment {i} checksums");
            let ip = Ipv4Packet::new_checked(&out[IP..]).unwrap();
            assert_eq!(ip.ident(), ip_id.wrapping_add(i as u16));
            let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
            assert_eq!(tcp.seq_number(), seq0 + i * usize::from(mss));
            assert!(tcp.payload().len() <= usize::from(mss));
            let last = i + 1 == n;
            assert_eq!(tcp.fin(), last && flags & TCP_FIN != 0);
            assert_eq!(tcp.psh(), last && flags & TCP_PSH != 0);
            assert_eq!(tcp.cwr(), i == 0 && flags & TCP_CWR != 0);
            assert!(tcp.ack());
            joined.extend_from_slice(tcp.payload());
        }
        assert_eq!(joined, data);
        assert_eq!(
            seg.write(&sf, n, &mut [0u8; 2000], SegmentChecksum::Complete),
            None
        );
    }

    #[test]
    fn segments_carry_the_payload_in_order_with_right_headers() {
        check_segments(1448 * 44 + 100, 1448, 0x18 | TCP_FIN | TCP_CWR);
        check_segments(1448, 1448, 0x18);
        check_segments(0, 1448, 0x10);
        check_segments(10, 536, 0x10 | TCP_CWR);
    }

    #[test]
    fn segmenter_refuses_what_is_not_a_tcp_super_frame() {
        let udp = udp_frame(C, 1, VIP, 2, b"x");
        assert_eq!(
            Segmenter::new(&udp, Gso { mss: 1000 }),
            Err(DropReason::BadOffload)
        );
        let tcp = tcp_frame(C, 1, VIP, 2, 0x10, b"x");
        assert_eq!(
            Segmenter::new(&tcp, Gso { mss: 0 }),
            Err(DropReason::BadOffload)
        );
        assert!(Segmenter::new(&tcp[..30], Gso { mss: 100 }).is_err());
        let s = Segmenter::new(&tcp, Gso { mss: 100 }).unwrap();
        assert_eq!(
            s.write(&tcp, 0, &mut [0u8; 10], SegmentChecksum::Complete),
            None
        );
    }

    #[test]
    fn patch_folds_only_pseudo_header_changes_into_a_partial_field() {
        let mut f = tcp_frame(C, 40000, VIP, 104, 0x18, &payload(300, 1));
        let o = make_partial(&mut f);
        let L4Checksum::Partial { start, offset } = o.checksum else {
            panic!()
        };
        // Rewrite destination address and port, as NAT does.
        let at = usize::from(start + offset);
        let mut pseudo = Delta::NONE;
        pseudo.addr(VIP, RS1);
        let mut covered = Delta::NONE;
        covered.word(104, 11112);
        f[IP + 16..IP + 20].copy_from_slice(&RS1.octets());
        fix_ip_checksum(&mut f);
        f[usize::from(start) + 2..usize::from(start) + 4].copy_from_slice(&11112u16.to_be_bytes());
        o.checksum.patch(&mut f, at, pseudo, covered, false);
        complete_checksum(&mut f, start, offset).unwrap();
        assert!(tcp_ok(&f));
    }

    proptest! {
        /// Any payload and segment size: segments reassemble to the payload
        /// and each one's checksums verify.
        #[test]
        fn segmentation_round_trips(len in 0usize..9000, mss in 1u16..2000, seed: u8) {
            let data = payload(len, seed);
            let mut sf = tcp_frame(C, 1234, VIP, 104, 0x18, &data);
            make_partial(&mut sf);
            let seg = Segmenter::new(&sf, Gso { mss }).unwrap();
            let mut joined = Vec::new();
            for i in 0..seg.count() {
                let mut out = alloc::vec![0u8; seg.segment_len(i)];
                seg.write(&sf, i, &mut out, SegmentChecksum::Complete).unwrap();
                prop_assert!(tcp_ok(&out));
                let ip = Ipv4Packet::new_checked(&out[IP..]).unwrap();
                joined.extend_from_slice(TcpPacket::new_checked(ip.payload()).unwrap().payload());
            }
            prop_assert_eq!(joined, data);
        }

        /// Segmenting and checksumming arbitrary bytes never panics.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), mss: u16, start: u16, offset: u16) {
            let mut b = bytes.clone();
            let _ = complete_checksum(&mut b, start, offset);
            if let Ok(s) = Segmenter::new(&bytes, Gso { mss }) {
                for i in 0..s.count().min(4) {
                    let mut out = alloc::vec![0u8; s.segment_len(i)];
                    let _ = s.write(&bytes, i, &mut out, SegmentChecksum::Partial);
                }
            }
        }
    }
}
