//! DICOM upper layer PDUs (PS3.8 §9.3) as zero-copy views, in smoltcp's
//! `Packet<T>` / `Repr` shape: [`Pdu`] frames any PDU (type, reserved,
//! 32-bit length), [`Associate`] reads the fixed part and the items of an
//! A-ASSOCIATE-RQ or -AC, [`AssociateRqRepr`] is what a request says,
//! [`RejectRepr`] and [`AbortRepr`] are the two 10-byte PDUs the appliance
//! writes itself. [`PduCursor`] follows PDU boundaries through a TCP byte
//! stream that the layer 7 relay only sees segment by segment.
//!
//! Every length field is checked against the bytes that carry it: a view's
//! accessors never panic on a buffer its `new_checked` accepted.

use super::be32;

/// Type, reserved byte and length.
pub const HEADER_LEN: usize = 6;
/// Header and fixed fields of an A-ASSOCIATE-RQ/AC: protocol version,
/// reserved, called and calling AE titles, 32 reserved bytes.
pub const ASSOCIATE_FIXED_LEN: usize = HEADER_LEN + 68;
/// An AE title field.
pub const AE_LEN: usize = 16;
/// A-ASSOCIATE-RJ, A-ABORT, A-RELEASE-RQ/RP: header and 4 bytes.
pub const SHORT_PDU_LEN: usize = HEADER_LEN + 4;

/// Where the called AE title starts in an A-ASSOCIATE-RQ/AC.
pub const CALLED_AE_OFFSET: usize = HEADER_LEN + 4;
const CALLED: usize = CALLED_AE_OFFSET;
const CALLING: usize = CALLED + AE_LEN;

/// PDU types.
pub mod pdu_type {
    pub const ASSOCIATE_RQ: u8 = 0x01;
    pub const ASSOCIATE_AC: u8 = 0x02;
    pub const ASSOCIATE_RJ: u8 = 0x03;
    pub const P_DATA: u8 = 0x04;
    pub const RELEASE_RQ: u8 = 0x05;
    pub const RELEASE_RP: u8 = 0x06;
    pub const ABORT: u8 = 0x07;
}

/// Item types of the variable part of A-ASSOCIATE-RQ/AC.
pub mod item_type {
    pub const APPLICATION_CONTEXT: u8 = 0x10;
    pub const PRESENTATION_CONTEXT_RQ: u8 = 0x20;
    pub const PRESENTATION_CONTEXT_AC: u8 = 0x21;
    pub const ABSTRACT_SYNTAX: u8 = 0x30;
    pub const TRANSFER_SYNTAX: u8 = 0x40;
    pub const USER_INFORMATION: u8 = 0x50;
    pub const MAX_LENGTH: u8 = 0x51;
    pub const IMPLEMENTATION_CLASS_UID: u8 = 0x52;
    pub const IMPLEMENTATION_VERSION: u8 = 0x55;
}

/// The DICOM application context name (PS3.7 Annex A).
pub const APPLICATION_CONTEXT: &[u8] = b"1.2.840.10008.3.1.1.1";

/// The name of a PDU type, for messages.
pub fn pdu_name(t: u8) -> &'static str {
    match t {
        pdu_type::ASSOCIATE_RQ => "A-ASSOCIATE-RQ",
        pdu_type::ASSOCIATE_AC => "A-ASSOCIATE-AC",
        pdu_type::ASSOCIATE_RJ => "A-ASSOCIATE-RJ",
        pdu_type::P_DATA => "P-DATA-TF",
        pdu_type::RELEASE_RQ => "A-RELEASE-RQ",
        pdu_type::RELEASE_RP => "A-RELEASE-RP",
        pdu_type::ABORT => "A-ABORT",
        _ => "unknown",
    }
}

/// Why bytes are not the PDU a view expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Fewer bytes than the fields need (so far).
    Truncated,
    /// A field that cannot be right; names it.
    Malformed(&'static str),
}

/// Any PDU: type, reserved, length (big-endian), then `length` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pdu<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Pdu<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Pdu { buffer }
    }

    /// A view of a whole PDU at the start of `buffer` (bytes after it are
    /// allowed: the next PDU).
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let p = Pdu { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// The header and every byte its length announces are present.
    pub fn check_len(&self) -> Result<(), Error> {
        let b = self.buffer.as_ref();
        if b.len() < HEADER_LEN || b.len() - HEADER_LEN < self.length() as usize {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    pub fn pdu_type(&self) -> u8 {
        self.buffer.as_ref().first().copied().unwrap_or(0)
    }

    /// The length field: bytes after the header (0 while the header is
    /// incomplete).
    pub fn length(&self) -> u32 {
        self.buffer.as_ref().get(2..6).map_or(0, be32)
    }

    /// Header and body.
    pub fn total_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.length() as usize)
    }

    /// The bytes after the header, as far as the length says and the
    /// buffer holds.
    pub fn body(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        let end = self.total_len().min(b.len());
        b.get(HEADER_LEN..end).unwrap_or(&[])
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
}

/// An A-ASSOCIATE-RQ or -AC (the same layout). `new_checked` asks only for
/// the fixed part, so the layer 7 relay can route on the AE titles before
/// the whole request has arrived; [`Associate::items`] reads what is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Associate<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Associate<T> {
    pub const fn new_unchecked(buffer: T) -> Self {
        Associate { buffer }
    }

    /// The fixed part of an A-ASSOCIATE-RQ or -AC, whose length covers it.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let b = buffer.as_ref();
        if b.len() < ASSOCIATE_FIXED_LEN {
            return Err(Error::Truncated);
        }
        if !matches!(b[0], pdu_type::ASSOCIATE_RQ | pdu_type::ASSOCIATE_AC) {
            return Err(Error::Malformed("PDU type"));
        }
        if (Pdu::new_unchecked(b).length() as usize) < ASSOCIATE_FIXED_LEN - HEADER_LEN {
            return Err(Error::Malformed("A-ASSOCIATE PDU length"));
        }
        Ok(Associate { buffer })
    }

    pub fn pdu_type(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// Protocol version bit field (bit 0: version 1).
    pub fn protocol_version(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[6], b[7]])
    }

    pub fn called_ae(&self) -> AeTitle {
        AeTitle::from_field(&self.buffer.as_ref()[CALLED..CALLED + AE_LEN])
    }

    pub fn calling_ae(&self) -> AeTitle {
        AeTitle::from_field(&self.buffer.as_ref()[CALLING..CALLING + AE_LEN])
    }

    /// The PDU's length and header.
    pub fn total_len(&self) -> usize {
        Pdu::new_unchecked(self.buffer.as_ref()).total_len()
    }

    /// Whether every byte of the PDU is in the buffer.
    pub fn is_complete(&self) -> bool {
        self.buffer.as_ref().len() >= self.total_len()
    }

    /// The items of the variable part that are in the buffer.
    pub fn items(&self) -> Items<'_> {
        let b = self.buffer.as_ref();
        let end = self.total_len().min(b.len());
        Items::new(b.get(ASSOCIATE_FIXED_LEN..end).unwrap_or(&[]))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Associate<T> {
    /// Overwrites the called AE title (same length: the PDU's other bytes
    /// and its length do not move).
    pub fn set_called_ae(&mut self, ae: &AeTitle) {
        self.buffer.as_mut()[CALLED..CALLED + AE_LEN].copy_from_slice(&ae.0);
    }
}

/// One item of an A-ASSOCIATE PDU's variable part (or a sub-item).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item<'a> {
    pub item_type: u8,
    pub value: &'a [u8],
}

/// Items (type, reserved, 16-bit length, value) one after the other; an
/// item whose length overruns the bytes is an error, after which the
/// iterator ends.
#[derive(Clone, Debug)]
pub struct Items<'a> {
    rest: &'a [u8],
}

impl<'a> Items<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Items { rest: bytes }
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = Result<Item<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let b = self.rest;
        let parsed = b
            .get(..4)
            .map(|h| usize::from(u16::from_be_bytes([h[2], h[3]])))
            .and_then(|len| Some((b[0], b.get(4..4 + len)?, 4 + len)));
        match parsed {
            Some((item_type, value, used)) => {
                self.rest = &b[used..];
                Some(Ok(Item { item_type, value }))
            }
            None => {
                self.rest = &[];
                Some(Err(Error::Malformed("item length")))
            }
        }
    }
}

/// An AE title as the 16-byte field carries it (space padded).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AeTitle(pub [u8; AE_LEN]);

impl AeTitle {
    pub fn from_field(field: &[u8]) -> AeTitle {
        let mut out = [b' '; AE_LEN];
        let n = field.len().min(AE_LEN);
        out[..n].copy_from_slice(&field[..n]);
        AeTitle(out)
    }

    /// `text` padded with spaces (cut at 16 bytes).
    pub fn new(text: &str) -> AeTitle {
        AeTitle::from_field(text.as_bytes())
    }

    /// The title without its leading and trailing spaces (PS3.5: they are
    /// not significant) and the NULs some implementations pad with.
    pub fn text(&self) -> &[u8] {
        let pad = |b: &u8| *b == b' ' || *b == 0;
        let start = self.0.iter().position(|b| !pad(b)).unwrap_or(AE_LEN);
        let end = self
            .0
            .iter()
            .rposition(|b| !pad(b))
            .map_or(start, |e| e + 1);
        &self.0[start..end]
    }

    /// The title as text for messages (non-printable bytes as `?`).
    pub fn display(&self) -> alloc::string::String {
        self.text()
            .iter()
            .map(|&b| {
                if (0x20..0x7f).contains(&b) {
                    b as char
                } else {
                    '?'
                }
            })
            .collect()
    }

    /// PS3.5 AE: 1 to 16 characters of the default repertoire without
    /// backslash or control characters, not only spaces.
    pub fn is_valid_text(text: &str) -> bool {
        !text.is_empty()
            && text.len() <= AE_LEN
            && text
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
            && text.bytes().any(|b| b != b' ')
    }
}

impl core::fmt::Debug for AeTitle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "AeTitle({:?})", self.display())
    }
}

/// What an A-ASSOCIATE-RQ says: the reader behind AE-title routing (the
/// fixed part) and the fuzz target (all of it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AssociateRqRepr<'a> {
    pub protocol_version: u16,
    pub called_ae: AeTitle,
    pub calling_ae: AeTitle,
    pub application_context: &'a [u8],
    /// Presentation context items.
    pub presentation_contexts: usize,
    /// The largest P-DATA PDU the requester takes (0: no limit).
    pub max_pdu_length: Option<u32>,
    pub implementation_class_uid: Option<&'a [u8]>,
    pub implementation_version: Option<&'a [u8]>,
}

impl<'a> AssociateRqRepr<'a> {
    /// Reads a whole A-ASSOCIATE-RQ: one application context, at least one
    /// presentation context (each with an abstract syntax and a transfer
    /// syntax), user information with the maximum length.
    pub fn parse(pdu: &Associate<&'a [u8]>) -> Result<Self, Error> {
        if pdu.pdu_type() != pdu_type::ASSOCIATE_RQ {
            return Err(Error::Malformed("PDU type"));
        }
        if !pdu.is_complete() {
            return Err(Error::Truncated);
        }
        let mut repr = AssociateRqRepr {
            protocol_version: pdu.protocol_version(),
            called_ae: pdu.called_ae(),
            calling_ae: pdu.calling_ae(),
            application_context: &[],
            presentation_contexts: 0,
            max_pdu_length: None,
            implementation_class_uid: None,
            implementation_version: None,
        };
        let mut contexts = false;
        let items = Items::new(
            pdu.buffer
                .get(ASSOCIATE_FIXED_LEN..pdu.total_len())
                .unwrap_or(&[]),
        );
        for item in items {
            let item = item?;
            match item.item_type {
                item_type::APPLICATION_CONTEXT => {
                    if contexts || !repr.application_context.is_empty() {
                        return Err(Error::Malformed("application context item"));
                    }
                    repr.application_context = item.value;
                }
                item_type::PRESENTATION_CONTEXT_RQ => {
                    // Context ID, 3 reserved, then sub-items.
                    let sub = item
                        .value
                        .get(4..)
                        .ok_or(Error::Malformed("presentation context item"))?;
                    let (mut abstract_syntax, mut transfer) = (0, 0);
                    for s in Items::new(sub) {
                        match s?.item_type {
                            item_type::ABSTRACT_SYNTAX => abstract_syntax += 1,
                            item_type::TRANSFER_SYNTAX => transfer += 1,
                            _ => return Err(Error::Malformed("presentation context sub-item")),
                        }
                    }
                    if abstract_syntax != 1 || transfer == 0 {
                        return Err(Error::Malformed("presentation context item"));
                    }
                    contexts = true;
                    repr.presentation_contexts += 1;
                }
                item_type::USER_INFORMATION => {
                    for s in Items::new(item.value) {
                        let s = s?;
                        match s.item_type {
                            item_type::MAX_LENGTH => {
                                let v = <[u8; 4]>::try_from(s.value)
                                    .map_err(|_| Error::Malformed("maximum length item"))?;
                                repr.max_pdu_length = Some(u32::from_be_bytes(v));
                            }
                            item_type::IMPLEMENTATION_CLASS_UID => {
                                repr.implementation_class_uid = Some(s.value);
                            }
                            item_type::IMPLEMENTATION_VERSION => {
                                repr.implementation_version = Some(s.value);
                            }
                            _ => {} // asynchronous operations, roles, extended negotiation...
                        }
                    }
                }
                _ => return Err(Error::Malformed("A-ASSOCIATE-RQ item type")),
            }
        }
        if repr.application_context.is_empty() {
            return Err(Error::Malformed(
                "A-ASSOCIATE-RQ without application context",
            ));
        }
        if repr.presentation_contexts == 0 {
            return Err(Error::Malformed(
                "A-ASSOCIATE-RQ without presentation context",
            ));
        }
        if repr.max_pdu_length.is_none() {
            // PS3.8 §9.3.2.3: user information with the maximum length
            // sub-item is mandatory.
            return Err(Error::Malformed("A-ASSOCIATE-RQ without maximum length"));
        }
        Ok(repr)
    }
}

/// A-ASSOCIATE-RJ: result (1 permanent, 2 transient), source (1 service
/// user, 2 service provider ACSE, 3 service provider presentation) and
/// reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RejectRepr {
    pub result: u8,
    pub source: u8,
    pub reason: u8,
}

impl RejectRepr {
    /// Rejected permanently by the service user: called AE title not
    /// recognized (what the appliance answers when no route matches).
    pub const CALLED_AE_NOT_RECOGNIZED: RejectRepr = RejectRepr {
        result: 1,
        source: 1,
        reason: 7,
    };
    /// Rejected permanently by the ACSE provider: protocol version not
    /// supported.
    pub const PROTOCOL_VERSION: RejectRepr = RejectRepr {
        result: 1,
        source: 2,
        reason: 2,
    };

    pub fn parse<T: AsRef<[u8]>>(pdu: &Pdu<T>) -> Result<Self, Error> {
        let b = pdu.body();
        if pdu.pdu_type() != pdu_type::ASSOCIATE_RJ || b.len() < 4 {
            return Err(Error::Malformed("A-ASSOCIATE-RJ"));
        }
        Ok(RejectRepr {
            result: b[1],
            source: b[2],
            reason: b[3],
        })
    }

    pub fn emit(&self) -> [u8; SHORT_PDU_LEN] {
        short_pdu(
            pdu_type::ASSOCIATE_RJ,
            [0, self.result, self.source, self.reason],
        )
    }

    /// PS3.8 Table 9-21's words for the source and reason.
    pub fn reason_text(&self) -> &'static str {
        match (self.source, self.reason) {
            (1, 1) => "no reason given",
            (1, 2) => "application context name not supported",
            (1, 3) => "calling AE title not recognized",
            (1, 7) => "called AE title not recognized",
            (2, 1) => "no reason given (ACSE)",
            (2, 2) => "protocol version not supported",
            (3, 1) => "temporary congestion",
            (3, 2) => "local limit exceeded",
            _ => "reserved reason",
        }
    }
}

/// A-ABORT: source (0 service user, 2 service provider) and reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbortRepr {
    pub source: u8,
    pub reason: u8,
}

impl AbortRepr {
    /// What the appliance sends when it ends an association itself (halt,
    /// timeouts): the service provider, reason not specified.
    pub const BY_PROVIDER: AbortRepr = AbortRepr {
        source: 2,
        reason: 0,
    };
    /// Unexpected PDU (the first PDU of a connection was not an
    /// A-ASSOCIATE-RQ).
    pub const UNEXPECTED_PDU: AbortRepr = AbortRepr {
        source: 2,
        reason: 2,
    };

    pub fn parse<T: AsRef<[u8]>>(pdu: &Pdu<T>) -> Result<Self, Error> {
        let b = pdu.body();
        if pdu.pdu_type() != pdu_type::ABORT || b.len() < 4 {
            return Err(Error::Malformed("A-ABORT"));
        }
        Ok(AbortRepr {
            source: b[2],
            reason: b[3],
        })
    }

    pub fn emit(&self) -> [u8; SHORT_PDU_LEN] {
        short_pdu(pdu_type::ABORT, [0, 0, self.source, self.reason])
    }

    pub fn reason_text(&self) -> &'static str {
        match (self.source, self.reason) {
            (0, _) => "aborted by the service user",
            (2, 0) => "reason not specified",
            (2, 1) => "unrecognized PDU",
            (2, 2) => "unexpected PDU",
            (2, 4) => "unrecognized PDU parameter",
            (2, 5) => "unexpected PDU parameter",
            (2, 6) => "invalid PDU parameter value",
            _ => "reserved reason",
        }
    }
}

/// A-RELEASE-RQ or -RP (4 reserved bytes).
pub fn release(pdu: u8) -> [u8; SHORT_PDU_LEN] {
    short_pdu(pdu, [0; 4])
}

fn short_pdu(t: u8, body: [u8; 4]) -> [u8; SHORT_PDU_LEN] {
    let mut out = [0u8; SHORT_PDU_LEN];
    out[0] = t;
    out[2..6].copy_from_slice(&4u32.to_be_bytes());
    out[6..].copy_from_slice(&body);
    out
}

/// Where the PDUs of one direction of a TCP connection begin, followed
/// from the segments the relay passes without buffering them: the
/// sequence number of the next PDU header and the header bytes seen so far
/// (a header may straddle two segments). Segments may come in any order
/// and repeat; the cursor only moves on the one that holds its next byte
/// (every byte reaches the receiver through the relay, so that segment
/// always comes, if only as a retransmission). 12 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PduCursor {
    /// Sequence number of the next PDU's first byte.
    next: u32,
    /// Length bytes read so far.
    acc: u32,
    /// Header bytes read (0..6).
    got: u8,
    /// The type byte of the header being read.
    kind: u8,
}

/// `got` of a cursor that stopped following.
const LOST: u8 = u8::MAX;
/// PDU lengths from here on cannot be followed: the next header would lie
/// half the sequence space away or more.
const MAX_FOLLOWED: u32 = 1 << 30;

/// `a` is at or after `b` in sequence space.
fn seq_ge(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

impl PduCursor {
    /// The first PDU starts at `seq`.
    pub fn new(seq: u32) -> PduCursor {
        PduCursor {
            next: seq,
            ..PduCursor::default()
        }
    }

    /// Where the PDU being read starts (its header is complete when
    /// [`PduCursor::at_boundary`]).
    pub fn next(&self) -> u32 {
        self.next
    }

    /// No header is half read: `next` is a PDU boundary.
    pub fn at_boundary(&self) -> bool {
        self.got == 0
    }

    /// A PDU too long to follow in 32-bit sequence space came by: the
    /// cursor stopped (it knows no boundary any more).
    pub fn is_lost(&self) -> bool {
        self.got == LOST
    }

    /// Follows the payload `bytes` that starts at sequence number `seq`;
    /// `on_header(type, length)` is called for every PDU header completed,
    /// in stream order (then `next` is already past that PDU).
    pub fn feed(&mut self, seq: u32, bytes: &[u8], mut on_header: impl FnMut(u8, u32)) {
        while self.got != LOST {
            let want = self.next.wrapping_add(u32::from(self.got));
            let off = want.wrapping_sub(seq);
            if !seq_ge(want, seq) || off as usize >= bytes.len() {
                return;
            }
            let avail = &bytes[off as usize..];
            let take = (HEADER_LEN - usize::from(self.got)).min(avail.len());
            for &b in &avail[..take] {
                match self.got {
                    0 => self.kind = b,
                    1 => {}
                    _ => self.acc = (self.acc << 8) | u32::from(b),
                }
                self.got += 1;
            }
            if usize::from(self.got) < HEADER_LEN {
                return;
            }
            let (kind, len) = (self.kind, self.acc);
            if len >= MAX_FOLLOWED {
                // Its end would be ambiguous (or equal to its start) in
                // sequence space: stop rather than loop.
                self.got = LOST;
                return;
            }
            self.next = self.next.wrapping_add(HEADER_LEN as u32).wrapping_add(len);
            self.got = 0;
            self.acc = 0;
            on_header(kind, len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    const STORESCU: &[u8] = include_bytes!("../../testdata/aware/rq_storescu.bin");
    const ECHOSCU: &[u8] = include_bytes!("../../testdata/aware/rq_echoscu.bin");

    #[test]
    fn storescu_request() {
        let a = Associate::new_checked(STORESCU).unwrap();
        assert!(a.is_complete());
        assert_eq!(a.total_len(), STORESCU.len());
        assert_eq!(a.called_ae().text(), b"PACS_A");
        assert_eq!(a.calling_ae().text(), b"MODALITY1");
        let r = AssociateRqRepr::parse(&a).unwrap();
        assert_eq!(r.protocol_version, 1);
        assert_eq!(r.application_context, APPLICATION_CONTEXT);
        assert!(r.presentation_contexts > 100, "{r:?}");
        assert_eq!(r.max_pdu_length, Some(16384));
        assert!(r.implementation_class_uid.is_some());
        let e = AssociateRqRepr::parse(&Associate::new_checked(ECHOSCU).unwrap()).unwrap();
        assert_eq!(e.presentation_contexts, 1);
        assert_eq!(e.called_ae, AeTitle::new("PACS_A"));
    }

    #[test]
    fn the_fixed_part_is_enough_to_route() {
        for n in 0..ASSOCIATE_FIXED_LEN {
            assert_eq!(
                Associate::new_checked(&STORESCU[..n]).unwrap_err(),
                Error::Truncated
            );
        }
        let a = Associate::new_checked(&STORESCU[..ASSOCIATE_FIXED_LEN]).unwrap();
        assert_eq!(a.called_ae().text(), b"PACS_A");
        assert!(!a.is_complete());
        assert_eq!(a.items().count(), 0);
        let part = Associate::new_checked(&STORESCU[..200]).unwrap();
        assert_eq!(AssociateRqRepr::parse(&part).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn every_truncation_of_an_item_is_refused_not_a_panic() {
        for n in ASSOCIATE_FIXED_LEN..ECHOSCU.len() {
            let mut b = ECHOSCU[..n].to_vec();
            let len = (n - HEADER_LEN) as u32;
            b[2..6].copy_from_slice(&len.to_be_bytes());
            let a = Associate::new_checked(&b[..]).unwrap();
            assert!(AssociateRqRepr::parse(&a).is_err(), "{n}");
        }
    }

    #[test]
    fn rewriting_the_called_ae_moves_nothing_else() {
        let mut b = STORESCU.to_vec();
        let mut a = Associate::new_checked(&mut b[..]).unwrap();
        a.set_called_ae(&AeTitle::new("ARCHIVE2"));
        assert_eq!(a.called_ae().text(), b"ARCHIVE2");
        assert_eq!(&b[..10], &STORESCU[..10]);
        assert_eq!(&b[26..], &STORESCU[26..]);
    }

    #[test]
    fn ae_titles() {
        let a = AeTitle::from_field(b"  PACS A  \0\0\0\0\0\0");
        assert_eq!(a.text(), b"PACS A");
        assert_eq!(AeTitle::new("").text(), b"");
        assert!(AeTitle::is_valid_text("PACS_ARCHIVE"));
        assert!(!AeTitle::is_valid_text("   "));
        assert!(!AeTitle::is_valid_text("A\\B"));
        assert!(!AeTitle::is_valid_text("SEVENTEEN_CHARSXX"));
    }

    #[test]
    fn short_pdus() {
        let rj = RejectRepr::CALLED_AE_NOT_RECOGNIZED.emit();
        assert_eq!(rj, [3, 0, 0, 0, 0, 4, 0, 1, 1, 7]);
        let p = Pdu::new_checked(&rj[..]).unwrap();
        assert_eq!(
            RejectRepr::parse(&p).unwrap(),
            RejectRepr::CALLED_AE_NOT_RECOGNIZED
        );
        let ab = AbortRepr::BY_PROVIDER.emit();
        assert_eq!(ab, [7, 0, 0, 0, 0, 4, 0, 0, 2, 0]);
        assert_eq!(
            AbortRepr::parse(&Pdu::new_checked(&ab[..]).unwrap()).unwrap(),
            AbortRepr::BY_PROVIDER
        );
        assert!(Pdu::new_checked(&ab[..9]).is_err());
    }

    #[test]
    fn a_huge_length_stops_the_cursor_instead_of_looping() {
        // Found by the fuzzer: 6 + 0xfffffffa wraps to the same boundary.
        for len in [0xffff_fffau32, 0xffff_ffff, MAX_FOLLOWED] {
            let mut c = PduCursor::new(100);
            let mut b = alloc::vec![4, 0];
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&[4, 0, 0, 0, 0, 0]);
            let mut headers = 0;
            c.feed(100, &b, |_, _| headers += 1);
            assert_eq!(headers, 0);
            assert!(c.is_lost() && !c.at_boundary());
            c.feed(100, &b, |_, _| headers += 1);
            assert_eq!(headers, 0);
        }
    }

    /// A stream of PDUs of the given types and body lengths.
    fn stream(pdus: &[(u8, usize)]) -> Vec<u8> {
        let mut out = Vec::new();
        for &(t, n) in pdus {
            out.push(t);
            out.push(0);
            out.extend_from_slice(&(n as u32).to_be_bytes());
            out.extend((0..n).map(|i| i as u8));
        }
        out
    }

    #[test]
    fn the_cursor_finds_every_header_however_the_stream_is_cut() {
        let pdus = [(1, 100), (4, 16384), (4, 3), (5, 4), (7, 4), (4, 0)];
        let s = stream(&pdus);
        for seg in [1usize, 2, 5, 6, 7, 1460, 100_000] {
            let start = 0xffff_f000u32; // crosses the wrap
            let mut c = PduCursor::new(start);
            let mut seen = Vec::new();
            // Each segment twice, the second time out of order.
            let chunks: Vec<(usize, &[u8])> = s
                .chunks(seg)
                .enumerate()
                .map(|(i, c)| (i * seg, c))
                .collect();
            for (k, (at, chunk)) in chunks.iter().enumerate() {
                if k + 1 < chunks.len() {
                    let (nat, next) = chunks[k + 1];
                    c.feed(start.wrapping_add(nat as u32), next, |t, n| {
                        seen.push((t, n))
                    });
                }
                c.feed(start.wrapping_add(*at as u32), chunk, |t, n| {
                    seen.push((t, n))
                });
                c.feed(start.wrapping_add(*at as u32), chunk, |t, n| {
                    seen.push((t, n))
                });
            }
            let want: Vec<(u8, u32)> = pdus.iter().map(|&(t, n)| (t, n as u32)).collect();
            assert_eq!(seen, want, "segments of {seg}");
            assert!(c.at_boundary());
            assert_eq!(c.next(), start.wrapping_add(s.len() as u32));
        }
    }
}
