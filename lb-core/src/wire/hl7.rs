//! HL7 v2 over MLLP as zero-copy views: the frame (`0x0B` message
//! `0x1C 0x0D`), the message's segments, the MSH segment's fields
//! ([`Msh`]), and the acknowledgement the appliance writes itself
//! ([`AckRepr`]). [`first_msh`] reads the MSH of a connection's first
//! message from its first bytes, which is what HL7-aware routing needs.

use alloc::vec::Vec;

/// MLLP start block.
pub const START_BLOCK: u8 = 0x0B;
/// MLLP end block (followed by a carriage return).
pub const END_BLOCK: u8 = 0x1C;
/// Segment terminator (and the byte after the end block).
pub const CR: u8 = 0x0D;

/// Why bytes are not the HL7 a view expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The frame does not begin with the MLLP start block.
    NoStartBlock,
    /// The message does not begin with an MSH segment (with a field
    /// separator and encoding characters).
    NoMsh,
    /// The MSH segment is longer than the bytes the reader may look at.
    MshTooLong,
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Error::NoStartBlock => "does not start with the MLLP start block 0x0B",
            Error::NoMsh => "the message does not start with an MSH segment",
            Error::MshTooLong => "the MSH segment is too long",
        })
    }
}

/// The segments of a message: split at CR (LF tolerated), empty lines
/// skipped.
pub fn segments(message: &[u8]) -> impl Iterator<Item = &[u8]> + Clone {
    message
        .split(|&b| b == CR || b == b'\n')
        .filter(|s| !s.is_empty())
}

/// `b` without leading and trailing spaces.
pub fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| *c != b' ').unwrap_or(b.len());
    let end = b.iter().rposition(|c| *c != b' ').map_or(start, |e| e + 1);
    &b[start..end]
}

/// An MSH segment and its delimiters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msh<'a> {
    segment: &'a [u8],
    /// MSH-1.
    pub field_sep: u8,
    pub component_sep: u8,
    pub repetition_sep: u8,
    pub escape: u8,
    pub subcomponent_sep: u8,
}

impl<'a> Msh<'a> {
    /// Reads an MSH segment (without its terminator): `MSH`, the field
    /// separator, then the encoding characters.
    pub fn parse(segment: &'a [u8]) -> Result<Msh<'a>, Error> {
        if segment.len() < 4 || !segment.starts_with(b"MSH") {
            return Err(Error::NoMsh);
        }
        let sep = segment[3];
        if sep.is_ascii_alphanumeric() || sep.is_ascii_whitespace() {
            return Err(Error::NoMsh);
        }
        let enc = segment[4..].split(|&b| b == sep).next().unwrap_or(&[]);
        let at = |i: usize, default: u8| enc.get(i).copied().unwrap_or(default);
        Ok(Msh {
            segment,
            field_sep: sep,
            component_sep: at(0, b'^'),
            repetition_sep: at(1, b'~'),
            escape: at(2, b'\\'),
            subcomponent_sep: at(3, b'&'),
        })
    }

    /// The segment's bytes.
    pub fn segment(&self) -> &'a [u8] {
        self.segment
    }

    /// Field MSH-`n` (HL7's numbering: MSH-1 is the field separator, MSH-2
    /// the encoding characters); empty when absent.
    pub fn field(&self, n: usize) -> &'a [u8] {
        match n {
            0 => &[],
            1 => &self.segment[3..4],
            _ => self
                .segment
                .split(|&b| b == self.field_sep)
                .nth(n - 1)
                .unwrap_or(&[]),
        }
    }

    /// Component `i` (from 1) of field MSH-`n`, trimmed.
    pub fn component(&self, n: usize, i: usize) -> &'a [u8] {
        if i == 0 {
            return &[];
        }
        trim(
            self.field(n)
                .split(|&b| b == self.component_sep)
                .nth(i - 1)
                .unwrap_or(&[]),
        )
    }

    /// MSH-3 and MSH-4 (namespace IDs): who sends.
    pub fn sending(&self) -> (&'a [u8], &'a [u8]) {
        (self.component(3, 1), self.component(4, 1))
    }

    /// MSH-5 and MSH-6 (namespace IDs): who is meant to receive.
    pub fn receiving(&self) -> (&'a [u8], &'a [u8]) {
        (self.component(5, 1), self.component(6, 1))
    }

    /// MSH-10, the message control ID.
    pub fn control_id(&self) -> &'a [u8] {
        trim(self.field(10))
    }

    /// MSH-12's version ID (`2.3`, `2.5.1`, ...).
    pub fn version(&self) -> &'a [u8] {
        self.component(12, 1)
    }
}

/// The MSH segment of the first message of a connection, read from the
/// connection's first `bytes`: blank lines some senders put between frames,
/// the start block, then the segment up to its terminator. `Ok(None)`:
/// more bytes are needed; an MSH segment that does not end within `limit`
/// bytes is [`Error::MshTooLong`].
pub fn first_msh(bytes: &[u8], limit: usize) -> Result<Option<Msh<'_>>, Error> {
    let Some(start) = bytes.iter().position(|&b| b != CR && b != b'\n') else {
        return Ok(None);
    };
    if bytes[start] != START_BLOCK {
        return Err(Error::NoStartBlock);
    }
    let body = &bytes[start + 1..];
    // "MSH" and the field separator before anything else is judged.
    let prefix = body.len().min(3);
    if body[..prefix] != b"MSH"[..prefix] {
        return Err(Error::NoMsh);
    }
    if body
        .get(3)
        .is_some_and(|&sep| sep.is_ascii_alphanumeric() || sep.is_ascii_whitespace())
    {
        return Err(Error::NoMsh);
    }
    // Only the first `limit` bytes are looked at, so the answer for a
    // prefix never changes as more bytes arrive.
    let seen = &body[..body.len().min(limit.saturating_sub(start + 1))];
    match seen
        .iter()
        .position(|&b| b == CR || b == b'\n' || b == END_BLOCK)
    {
        Some(end) => Msh::parse(&body[..end]).map(Some),
        None if bytes.len() >= limit => Err(Error::MshTooLong),
        None => Ok(None),
    }
}

/// Where one MLLP frame is in `buf`: `Ok(Some((start, end)))` with the
/// message at `buf[start..end]` (the end block at `end`, its CR after);
/// `Ok(None)` until the frame is complete. Blank lines before the start
/// block are skipped.
pub fn frame(buf: &[u8]) -> Result<Option<(usize, usize)>, FrameError> {
    frame_from(buf, 0)
}

/// [`frame`] for a buffer that grows: the end block is looked for from
/// `scanned` on (the length the caller already looked at without finding
/// a complete frame), so a frame trickling in is scanned once.
pub fn frame_from(buf: &[u8], scanned: usize) -> Result<Option<(usize, usize)>, FrameError> {
    let Some(start) = buf.iter().position(|&b| b != CR && b != b'\n') else {
        return Ok(None);
    };
    if buf[start] != START_BLOCK {
        return Err(FrameError::NoStartBlock);
    }
    // Back one byte: an end block may have arrived without its CR.
    let from = scanned.saturating_sub(1).max(start + 1);
    let Some(end) = buf[from..].iter().position(|&b| b == END_BLOCK) else {
        return Ok(None);
    };
    let end = from + end;
    match buf.get(end + 1) {
        None => Ok(None),
        Some(&CR) => Ok(Some((start + 1, end))),
        Some(_) => Err(FrameError::BadFrameEnd),
    }
}

/// Why bytes are not an MLLP frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    NoStartBlock,
    /// The end block is not followed by a carriage return.
    BadFrameEnd,
}

/// The appliance's own acknowledgement of a message it will not pass on:
/// an ACK with MSA-1 = `code` (AR: application reject), MSA-2 = the
/// message's control ID and an ERR segment (HL7 table 0357 `error_code`,
/// the field in error, and `text` for the operator), framed in MLLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckRepr<'a> {
    /// The message being answered.
    pub msh: Msh<'a>,
    pub code: &'a [u8],
    /// HL7 table 0357 error code and its name, e.g. `103`, `Table value not found`.
    pub error_code: &'a [u8],
    pub error_name: &'a [u8],
    /// The field in error, e.g. `5` for MSH-5.
    pub error_field: u8,
    pub text: &'a [u8],
    /// MSH-10 of the ACK itself.
    pub control_id: &'a [u8],
    /// MSH-7, `YYYYMMDDHHMMSS`, or empty when the time is unknown.
    pub timestamp: &'a [u8],
}

impl<'a> AckRepr<'a> {
    /// An application reject of `msh`'s message because no receiver is
    /// known for its MSH-5 (HL7 table 0357 code 103, table value not
    /// found), with `text` for the operator.
    pub fn unrouted(
        msh: Msh<'a>,
        text: &'a [u8],
        control_id: &'a [u8],
        timestamp: &'a [u8],
    ) -> Self {
        AckRepr {
            msh,
            code: b"AR",
            error_code: b"103",
            error_name: b"Table value not found",
            error_field: 5,
            text,
            control_id,
            timestamp,
        }
    }

    /// The framed ACK. Values are escaped (HL7 escape sequences) so that
    /// nothing in them can start a field or a segment.
    pub fn emit(&self) -> Vec<u8> {
        let m = &self.msh;
        let sep = m.field_sep;
        let mut out = Vec::with_capacity(256);
        out.push(START_BLOCK);
        out.extend_from_slice(b"MSH");
        out.push(sep);
        out.extend_from_slice(m.field(2));
        // MSH-3..6: the receiver answers, so sender and receiver swap.
        for n in [5, 6, 3, 4] {
            out.push(sep);
            out.extend_from_slice(m.field(n));
        }
        out.push(sep);
        out.extend_from_slice(self.timestamp);
        out.push(sep); // MSH-8 security
        out.push(sep);
        out.extend_from_slice(b"ACK");
        let trigger = m.component(9, 2);
        if !trigger.is_empty() {
            out.push(m.component_sep);
            self.escaped(&mut out, trigger);
            out.push(m.component_sep);
            out.extend_from_slice(b"ACK");
        }
        out.push(sep);
        self.escaped(&mut out, self.control_id);
        out.push(sep);
        out.extend_from_slice(if m.field(11).is_empty() {
            b"P"
        } else {
            m.field(11)
        });
        out.push(sep);
        out.extend_from_slice(m.field(12));
        out.push(CR);
        out.extend_from_slice(b"MSA");
        out.push(sep);
        out.extend_from_slice(self.code);
        out.push(sep);
        self.escaped(&mut out, m.control_id());
        out.push(sep);
        self.escaped(&mut out, self.text);
        out.push(CR);
        out.extend_from_slice(b"ERR");
        out.push(sep);
        let field = [b'0' + self.error_field / 10, b'0' + self.error_field % 10];
        let field = if field[0] == b'0' {
            &field[1..]
        } else {
            &field[..]
        };
        let comp = m.component_sep;
        if old_version(m.version()) {
            // v2.1-2.4: ERR-1 = segment^sequence^field^code&text&table.
            for part in [&b"MSH"[..], b"1", field] {
                out.extend_from_slice(part);
                out.push(comp);
            }
            out.extend_from_slice(self.error_code);
            out.push(m.subcomponent_sep);
            self.escaped(&mut out, self.text);
            out.push(m.subcomponent_sep);
            out.extend_from_slice(b"HL70357");
        } else {
            // v2.5 and later: ERR-2 location, ERR-3 code, ERR-4 severity,
            // ERR-8 user message.
            out.push(sep);
            for (i, part) in [&b"MSH"[..], b"1", field].iter().enumerate() {
                if i > 0 {
                    out.push(comp);
                }
                out.extend_from_slice(part);
            }
            out.push(sep);
            out.extend_from_slice(self.error_code);
            out.push(comp);
            out.extend_from_slice(self.error_name);
            out.push(comp);
            out.extend_from_slice(b"HL70357");
            out.push(sep);
            out.push(b'E');
            out.extend_from_slice(&[sep, sep, sep, sep]);
            self.escaped(&mut out, self.text);
        }
        out.push(CR);
        out.extend_from_slice(&[END_BLOCK, CR]);
        out
    }

    /// Appends `value` with the message's delimiters escaped (`\F\`,
    /// `\S\`, `\R\`, `\T\`, `\E\`) and line breaks dropped.
    fn escaped(&self, out: &mut Vec<u8>, value: &[u8]) {
        let m = &self.msh;
        for &b in value {
            let code = if b == m.field_sep {
                b'F'
            } else if b == m.component_sep {
                b'S'
            } else if b == m.repetition_sep {
                b'R'
            } else if b == m.subcomponent_sep {
                b'T'
            } else if b == m.escape {
                b'E'
            } else if b == CR || b == b'\n' || b == START_BLOCK || b == END_BLOCK {
                continue;
            } else {
                out.push(b);
                continue;
            };
            out.extend_from_slice(&[m.escape, code, m.escape]);
        }
    }
}

/// HL7 versions before 2.5 carry the error in ERR-1.
fn old_version(v: &[u8]) -> bool {
    matches!(v, b"2.1" | b"2.2" | b"2.3" | b"2.3.1" | b"2.4")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADT: &[u8] = b"\x0bMSH|^~\\&|ADT1|GOOD HEALTH HOSPITAL|LAB^1.2.3^ISO|MAIN|198808181126|SECURITY|ADT^A01^ADT_A01|MSG00001|P|2.5.1\rEVN|A01|198808181123\r\x1c\r";

    #[test]
    fn msh_fields() {
        let m = first_msh(ADT, 4096).unwrap().unwrap();
        assert_eq!(m.field(1), b"|");
        assert_eq!(m.field(2), b"^~\\&");
        assert_eq!(m.sending(), (&b"ADT1"[..], &b"GOOD HEALTH HOSPITAL"[..]));
        assert_eq!(m.receiving(), (&b"LAB"[..], &b"MAIN"[..]));
        assert_eq!(m.control_id(), b"MSG00001");
        assert_eq!(m.version(), b"2.5.1");
        assert_eq!(m.component(9, 2), b"A01");
        assert_eq!(m.field(30), b"");
    }

    #[test]
    fn the_first_msh_needs_its_terminator() {
        let end = ADT.iter().position(|&b| b == CR).unwrap();
        for n in 0..end {
            assert_eq!(first_msh(&ADT[..n], 4096), Ok(None), "{n}");
        }
        assert!(first_msh(&ADT[..=end], 4096).unwrap().is_some());
        assert_eq!(first_msh(&ADT[..end], end), Err(Error::MshTooLong));
        assert_eq!(first_msh(b"\r\n\x0bMSX|", 99), Err(Error::NoMsh));
        assert_eq!(
            first_msh(b"GET / HTTP/1.1\r\n", 99),
            Err(Error::NoStartBlock)
        );
        assert_eq!(first_msh(b"\x0bMSHA^~", 99), Err(Error::NoMsh));
        assert!(
            first_msh(b"\r\n\x0bMSH|^~\\&|A\x1c\r", 99)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn frames() {
        assert_eq!(frame(ADT), Ok(Some((1, ADT.len() - 2))));
        for n in 0..ADT.len() {
            assert_eq!(frame_from(ADT, n), Ok(Some((1, ADT.len() - 2))), "{n}");
        }
        assert_eq!(frame(&ADT[..ADT.len() - 1]), Ok(None));
        assert_eq!(frame(b"x"), Err(FrameError::NoStartBlock));
        assert_eq!(frame(b"\x0bMSH\x1cX"), Err(FrameError::BadFrameEnd));
    }

    #[test]
    fn reject_ack() {
        let m = first_msh(ADT, 4096).unwrap().unwrap();
        let ack = AckRepr::unrouted(m, b"no route for LAB|MAIN", b"LB1", b"20261201120000").emit();
        let (s, e) = frame(&ack).unwrap().unwrap();
        let segs: Vec<&[u8]> = segments(&ack[s..e]).collect();
        assert_eq!(
            segs[0],
            &b"MSH|^~\\&|LAB^1.2.3^ISO|MAIN|ADT1|GOOD HEALTH HOSPITAL|20261201120000||ACK^A01^ACK|LB1|P|2.5.1"[..]
        );
        assert_eq!(segs[1], &b"MSA|AR|MSG00001|no route for LAB\\F\\MAIN"[..]);
        assert_eq!(
            segs[2],
            &b"ERR||MSH^1^5|103^Table value not found^HL70357|E||||no route for LAB\\F\\MAIN"[..]
        );
        // v2.3: the error in ERR-1.
        let old = b"\x0bMSH|^~\\&|A|B|C|D|||ORU^R01|X9|P|2.3\r";
        let m = first_msh(old, 99).unwrap().unwrap();
        let ack = AckRepr::unrouted(m, b"no route", b"LB2", b"").emit();
        let (s, e) = frame(&ack).unwrap().unwrap();
        let segs: Vec<&[u8]> = segments(&ack[s..e]).collect();
        assert_eq!(segs[0], &b"MSH|^~\\&|C|D|A|B|||ACK^R01^ACK|LB2|P|2.3"[..]);
        assert_eq!(segs[2], &b"ERR|MSH^1^5^103&no route&HL70357"[..]);
    }
}
