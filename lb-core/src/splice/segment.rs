//! TCP segments of the relay: reading the fields it tracks, editing a
//! relayed segment in place, and building the segments it originates.

use alloc::vec::Vec;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber,
};

use super::options::SynOptions;
use crate::flow::Endpoint;
#[cfg(test)]
use crate::frame::checksum::read16;
use crate::frame::checksum::{Delta, write16};
use crate::frame::offload::L4Checksum;
use crate::frame::{DropReason, ETHERNET_HEADER_LEN, L4Packet, TcpFlags};

const SEQ: usize = 4;
const ACK: usize = 8;
const WINDOW: usize = 14;
const CHECKSUM: usize = 16;
const OPTIONS: usize = 20;

/// TTL of the segments the relay originates.
pub const TTL: u8 = 64;

/// `a` is after `b` in sequence space (RFC 793 modular comparison).
#[inline]
pub const fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// `a` is at or after `b` in sequence space.
#[inline]
pub const fn seq_ge(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// The fields of a classified TCP segment the relay acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub flags: TcpFlags,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    /// Payload bytes.
    pub len: u32,
    /// Offset of the TCP header in the frame.
    pub at: usize,
    /// TCP header length (20 + options).
    pub header_len: usize,
}

impl Seg {
    /// Reads the segment `pkt` describes (`classify` checked the lengths;
    /// they are checked again so a mismatch is an error, not a panic).
    pub fn read(frame: &[u8], pkt: &L4Packet) -> Result<Seg, DropReason> {
        let at = pkt.ip.transport_offset();
        let end = pkt.ip.end();
        let tcp = frame.get(at..end).ok_or(DropReason::BadTotalLength)?;
        if tcp.len() < 20 {
            return Err(DropReason::TruncatedTcp);
        }
        let header_len = usize::from(tcp[12] >> 4) * 4;
        if header_len < 20 || header_len > tcp.len() {
            return Err(DropReason::BadTcpDataOffset);
        }
        let word = |i: usize| u32::from_be_bytes([tcp[i], tcp[i + 1], tcp[i + 2], tcp[i + 3]]);
        Ok(Seg {
            flags: TcpFlags(tcp[13]),
            seq: word(SEQ),
            ack: word(ACK),
            window: u16::from_be_bytes([tcp[WINDOW], tcp[WINDOW + 1]]),
            len: (tcp.len() - header_len) as u32,
            at,
            header_len,
        })
    }

    /// Sequence space the segment occupies: data, plus one for SYN and FIN.
    pub fn space(&self) -> u32 {
        self.len + u32::from(self.flags.syn()) + u32::from(self.flags.fin())
    }

    /// One past the segment's last sequence number.
    pub fn end(&self) -> u32 {
        self.seq.wrapping_add(self.space())
    }

    pub fn options<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        frame
            .get(self.at + OPTIONS..self.at + self.header_len)
            .unwrap_or(&[])
    }

    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        let start = self.at + self.header_len;
        frame.get(start..start + self.len as usize).unwrap_or(&[])
    }
}

/// Window in units of `2^to` for one in units of `2^from`: rounded down
/// (never promise the sender more than the receiver offered), at most
/// 65535.
#[inline]
pub fn rescale(window: u16, from: u8, to: u8) -> u16 {
    if from == to {
        return window;
    }
    let bytes = u64::from(window) << from.min(14);
    (bytes >> to.min(14)).min(0xffff) as u16
}

/// How a relayed segment changes between the two connections.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Edit {
    /// Added to the sequence number.
    pub seq_add: u32,
    /// Added to the acknowledgement number (when ACK is set) and to SACK
    /// block edges, which acknowledge the same byte stream.
    pub ack_add: u32,
    /// After the addition, an acknowledgement before this is raised to it
    /// (the server acknowledging PROXY header bytes the client never sent).
    pub ack_floor: Option<u32>,
    /// Window shift the sender uses, and the one the receiver expects.
    pub window_from: u8,
    pub window_to: u8,
}

/// Applies `edit` to the segment in `frame`, fixing the TCP checksum in
/// state `checksum` (a partial one, from checksum offload, covers none of
/// the edited words: see [`crate::frame::offload`]).
pub fn edit(
    frame: &mut [u8],
    seg: &Seg,
    edit: &Edit,
    checksum: L4Checksum,
) -> Result<(), DropReason> {
    let at = seg.at;
    if frame.len() < at + seg.header_len {
        return Err(DropReason::BadTotalLength);
    }
    let mut d = Delta::NONE;
    let put32 = |frame: &mut [u8], off: usize, old: u32, new: u32, d: &mut Delta| {
        d.word((old >> 16) as u16, (new >> 16) as u16);
        d.word(old as u16, new as u16);
        frame[at + off..at + off + 4].copy_from_slice(&new.to_be_bytes());
    };
    if edit.seq_add != 0 {
        put32(
            frame,
            SEQ,
            seg.seq,
            seg.seq.wrapping_add(edit.seq_add),
            &mut d,
        );
    }
    if seg.flags.ack() {
        let mut ack = seg.ack.wrapping_add(edit.ack_add);
        if let Some(floor) = edit.ack_floor
            && seq_gt(floor, ack)
        {
            ack = floor;
        }
        if ack != seg.ack {
            put32(frame, ACK, seg.ack, ack, &mut d);
        }
    }
    let w = rescale(seg.window, edit.window_from, edit.window_to);
    if w != seg.window {
        d.word(seg.window, w);
        write16(frame, at + WINDOW, w);
    }
    if seg.header_len > OPTIONS && edit.ack_add != 0 {
        super::options::shift_sack(
            &mut frame[at + OPTIONS..at + seg.header_len],
            edit.ack_add,
            &mut d,
        );
    }
    if !d.is_none() {
        checksum.patch(frame, at + CHECKSUM, Delta::NONE, d, false);
    }
    Ok(())
}

/// Sets payload byte `off` of `seg` (read from `frame`, whose TCP checksum
/// is complete) to `b`, adjusting the checksum for the one word it is in.
pub fn set_payload_byte(frame: &mut [u8], seg: &Seg, off: usize, b: u8) {
    let at = seg.at + seg.header_len + off;
    let end = seg.at + seg.header_len + seg.len as usize;
    if at >= end || end > frame.len() {
        return;
    }
    // Words are aligned to the TCP header's start; a last odd byte is the
    // high half of a word padded with zero.
    let w = at - (at - seg.at) % 2;
    let word = |f: &[u8]| {
        let lo = if w + 1 < end { f[w + 1] } else { 0 };
        u16::from_be_bytes([f[w], lo])
    };
    let old = word(frame);
    frame[at] = b;
    let mut d = crate::frame::checksum::Delta::NONE;
    d.word(old, word(frame));
    let ck = seg.at + 16;
    let sum = u16::from_be_bytes([frame[ck], frame[ck + 1]]);
    frame[ck..ck + 2].copy_from_slice(&d.apply(sum).to_be_bytes());
}

/// A segment the relay sends of its own (handshakes, resets, the PROXY
/// header, ACKs).
#[derive(Clone, Copy, Debug)]
pub struct Originate<'a> {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub seq: u32,
    pub ack: Option<u32>,
    /// One of SYN, RST, FIN, PSH, or none (ACK is set by `ack`).
    pub control: u8,
    pub window: u16,
    /// Emitted on SYN only.
    pub syn: SynOptions,
    pub payload: &'a [u8],
}

impl Originate<'_> {
    /// The segment as an Ethernet frame with zero MAC addresses (the
    /// caller writes them, as for forwarded frames).
    pub fn frame(&self) -> Vec<u8> {
        let syn = self.control & TcpFlags::SYN != 0;
        let repr = TcpRepr {
            src_port: self.src.port,
            dst_port: self.dst.port,
            control: if syn {
                TcpControl::Syn
            } else if self.control & TcpFlags::RST != 0 {
                TcpControl::Rst
            } else if self.control & TcpFlags::FIN != 0 {
                TcpControl::Fin
            } else if self.control & 0x08 != 0 {
                TcpControl::Psh
            } else {
                TcpControl::None
            },
            seq_number: TcpSeqNumber(self.seq as i32),
            ack_number: self.ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: self.window,
            window_scale: if syn { self.syn.wscale } else { None },
            max_seg_size: if syn { self.syn.mss } else { None },
            sack_permitted: syn && self.syn.sack_permitted,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: self.payload,
        };
        let ip_len = 20 + repr.buffer_len();
        let mut buf = alloc::vec![0u8; ETHERNET_HEADER_LEN + ip_len];
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
        EthernetRepr {
            src_addr: EthernetAddress([0; 6]),
            dst_addr: EthernetAddress([0; 6]),
            ethertype: EthernetProtocol::Ipv4,
        }
        .emit(&mut eth);
        let caps = ChecksumCapabilities::default();
        let mut ip = Ipv4Packet::new_unchecked(eth.payload_mut());
        Ipv4Repr {
            src_addr: self.src.addr,
            dst_addr: self.dst.addr,
            next_header: IpProtocol::Tcp,
            payload_len: repr.buffer_len(),
            hop_limit: TTL,
        }
        .emit(&mut ip, &caps);
        // Don't fragment, as Linux sends TCP.
        ip.set_dont_frag(true);
        ip.fill_checksum();
        let (s, d) = (
            IpAddress::Ipv4(self.src.addr),
            IpAddress::Ipv4(self.dst.addr),
        );
        let mut tcp = TcpPacket::new_unchecked(ip.payload_mut());
        repr.emit(&mut tcp, &s, &d, &caps);
        buf
    }
}

/// Reads the TCP checksum field (tests).
#[cfg(test)]
pub(crate) fn tcp_checksum(frame: &[u8], seg: &Seg) -> u16 {
    read16(frame, seg.at + CHECKSUM).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Class, classify};
    use core::net::Ipv4Addr;
    use proptest::prelude::*;

    fn checksum_ok(frame: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).unwrap();
        let (s, d) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        ip.verify_checksum()
            && TcpPacket::new_checked(ip.payload())
                .unwrap()
                .verify_checksum(&s, &d)
    }

    fn seg_of(frame: &[u8]) -> Seg {
        let Ok(Class::L4(p)) = classify(frame) else {
            panic!("not a segment")
        };
        Seg::read(frame, &p).unwrap()
    }

    #[test]
    fn rescale_rounds_down_and_caps() {
        assert_eq!(rescale(100, 7, 7), 100);
        assert_eq!(rescale(100, 7, 0), 12800);
        assert_eq!(rescale(1000, 7, 0), 0xffff);
        assert_eq!(rescale(1000, 0, 7), 7);
        assert_eq!(rescale(3, 2, 5), 0);
        assert_eq!(rescale(0xffff, 14, 0), 0xffff);
    }

    proptest! {
        #[test]
        fn edited_segments_keep_a_valid_checksum(
            seq in any::<u32>(), ack in any::<u32>(), win in any::<u16>(),
            seq_add in any::<u32>(), ack_add in any::<u32>(), floor in proptest::option::of(any::<u32>()),
            from in 0u8..15, to in 0u8..15,
            sack in proptest::collection::vec(any::<u32>(), 0..=3),
            payload in proptest::collection::vec(any::<u8>(), 0..50),
        ) {
            let src = Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 1000);
            let dst = Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 2000);
            let mut f = Originate {
                src, dst, seq, ack: Some(ack), control: 0, window: win,
                syn: SynOptions::default(), payload: &payload,
            }.frame();
            // Splice in a SACK option (NOP NOP SACK) by rebuilding with smoltcp.
            if !sack.is_empty() {
                let mut ranges = [None; 3];
                for (i, e) in sack.iter().enumerate() { ranges[i] = Some((*e, e.wrapping_add(100))); }
                let repr = TcpRepr {
                    src_port: 1000, dst_port: 2000, control: TcpControl::None,
                    seq_number: TcpSeqNumber(seq as i32), ack_number: Some(TcpSeqNumber(ack as i32)),
                    window_len: win, window_scale: None, max_seg_size: None, sack_permitted: false,
                    sack_ranges: ranges, timestamp: None, payload: &payload,
                };
                let mut buf = alloc::vec![0u8; ETHERNET_HEADER_LEN + 20 + repr.buffer_len()];
                buf[..ETHERNET_HEADER_LEN + 20].copy_from_slice(&f[..ETHERNET_HEADER_LEN + 20]);
                let total = (20 + repr.buffer_len()) as u16;
                buf[ETHERNET_HEADER_LEN + 2..ETHERNET_HEADER_LEN + 4].copy_from_slice(&total.to_be_bytes());
                crate::frame::build::fix_ip_checksum(&mut buf);
                let (s, d) = (IpAddress::Ipv4(src.addr), IpAddress::Ipv4(dst.addr));
                let mut tcp = TcpPacket::new_unchecked(&mut buf[ETHERNET_HEADER_LEN + 20..]);
                repr.emit(&mut tcp, &s, &d, &ChecksumCapabilities::default());
                f = buf;
            }
            prop_assert!(checksum_ok(&f));
            let s = seg_of(&f);
            let e = Edit { seq_add, ack_add, ack_floor: floor, window_from: from, window_to: to };
            edit(&mut f, &s, &e, L4Checksum::Complete).unwrap();
            prop_assert!(checksum_ok(&f));
            let t = seg_of(&f);
            prop_assert_eq!(t.seq, seq.wrapping_add(seq_add));
            let mut want = ack.wrapping_add(ack_add);
            if let Some(fl) = floor && seq_gt(fl, want) { want = fl; }
            prop_assert_eq!(t.ack, want);
            prop_assert_eq!(t.window, rescale(win, from, to));
            let _ = tcp_checksum(&f, &t);
        }
    }
}
