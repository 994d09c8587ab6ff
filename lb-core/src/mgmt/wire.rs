//! The management command protocol on TCP port [`super::COMMAND_PORT`].
//!
//! One exchange per connection: the client sends one request frame, the
//! appliance answers with one reply frame and closes. A frame is
//! ```text
//! 0..4    magic: b"LBRQ" (request) or b"LBRP" (reply)
//! 4..6    protocol version (u16 little-endian), currently 1
//! 6..10   payload length (u32 little-endian)
//! 10..    payload: a signed request (see super::request) or postcard(Reply)
//! ```
//! [`FrameReader`] takes the bytes as they arrive, in pieces of any size,
//! and never holds more than the header's length, which it checks against
//! its limit before taking a byte of payload: a sender that claims or
//! streams more than the limit is cut off after 10 bytes.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

pub const REQUEST_MAGIC: [u8; 4] = *b"LBRQ";
pub const REPLY_MAGIC: [u8; 4] = *b"LBRP";
pub const VERSION: u16 = 1;
pub const HEADER_LEN: usize = 10;

/// Why a frame was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FrameError {
    /// Not this protocol (e.g. a bare config blob, an HTTP request).
    BadMagic([u8; 4]),
    UnsupportedVersion(u16),
    /// The header claims more than the limit.
    TooLarge {
        claimed: u32,
        limit: u32,
    },
    /// The connection ended before the frame did.
    Truncated {
        have: u32,
        need: u32,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic(m) if m[..] == crate::envelope::MAGIC[..] => {
                f.write_str("unsigned: a bare config blob, not a signed request (use tools upload)")
            }
            FrameError::BadMagic(m) => {
                write!(f, "not a signed management request (starts {m:02x?})")
            }
            FrameError::UnsupportedVersion(v) => write!(
                f,
                "protocol version {v} is not supported (this appliance speaks {VERSION})"
            ),
            FrameError::TooLarge { claimed, limit } => write!(
                f,
                "oversized: the request is {claimed} bytes, the limit is {limit}"
            ),
            FrameError::Truncated { have, need } => write!(
                f,
                "truncated: the connection ended after {have} of {need} bytes"
            ),
        }
    }
}

/// Where a [`FrameReader`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Feed more bytes.
    NeedMore,
    /// The frame is complete; `used` bytes of the last piece were taken
    /// (anything after them is not part of the frame).
    Done { used: usize },
    /// The frame is refused; stop reading.
    Failed(FrameError),
}

/// Reassembles one frame from a byte stream (see the module docs).
#[derive(Clone, Debug)]
pub struct FrameReader {
    magic: [u8; 4],
    limit: u32,
    header: [u8; HEADER_LEN],
    header_have: usize,
    need: Option<u32>,
    payload: Vec<u8>,
    state: Option<Progress>,
}

impl FrameReader {
    /// A reader for frames with `magic` and payloads of at most `limit` bytes.
    pub fn new(magic: [u8; 4], limit: u32) -> FrameReader {
        FrameReader {
            magic,
            limit,
            header: [0; HEADER_LEN],
            header_have: 0,
            need: None,
            payload: Vec::new(),
            state: None,
        }
    }

    /// Bytes taken so far (header and payload).
    pub fn received(&self) -> usize {
        self.header_have + self.payload.len()
    }

    /// Takes the next piece of the stream.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Progress {
        if let Some(done) = self.state {
            return done;
        }
        let total = bytes.len();
        if self.header_have < HEADER_LEN {
            let n = (HEADER_LEN - self.header_have).min(bytes.len());
            self.header[self.header_have..self.header_have + n].copy_from_slice(&bytes[..n]);
            self.header_have += n;
            bytes = &bytes[n..];
            // The magic is judged as soon as it is in, so a stray protocol
            // gets its answer without waiting for ten bytes.
            let m = self.header_have.min(4);
            if self.header[..m] != self.magic[..m] {
                let mut magic = [0u8; 4];
                magic[..m].copy_from_slice(&self.header[..m]);
                return self.fail(FrameError::BadMagic(magic));
            }
            if self.header_have < HEADER_LEN {
                return Progress::NeedMore;
            }
            let version = u16::from_le_bytes([self.header[4], self.header[5]]);
            if version != VERSION {
                return self.fail(FrameError::UnsupportedVersion(version));
            }
            let len = u32::from_le_bytes([
                self.header[6],
                self.header[7],
                self.header[8],
                self.header[9],
            ]);
            if len > self.limit {
                return self.fail(FrameError::TooLarge {
                    claimed: len,
                    limit: self.limit,
                });
            }
            self.need = Some(len);
            // Grown as bytes arrive: a slow sender holds only what it sent.
            self.payload = Vec::new();
        }
        let need = self.need.unwrap_or(0) as usize;
        let n = (need - self.payload.len()).min(bytes.len());
        self.payload.extend_from_slice(&bytes[..n]);
        if self.payload.len() == need {
            let done = Progress::Done {
                used: total - (bytes.len() - n),
            };
            self.state = Some(done);
            return done;
        }
        Progress::NeedMore
    }

    /// The stream ended: the frame's verdict.
    pub fn end(&mut self) -> Progress {
        match self.state {
            Some(p) => p,
            None => {
                let need = match self.need {
                    Some(n) => HEADER_LEN as u32 + n,
                    None => HEADER_LEN as u32,
                };
                self.fail(FrameError::Truncated {
                    have: self.received() as u32,
                    need,
                })
            }
        }
    }

    fn fail(&mut self, e: FrameError) -> Progress {
        self.payload = Vec::new();
        let p = Progress::Failed(e);
        self.state = Some(p);
        p
    }

    /// The payload of a complete frame.
    pub fn payload(&self) -> Option<&[u8]> {
        matches!(self.state, Some(Progress::Done { .. })).then_some(&self.payload[..])
    }
}

/// Puts a frame header in front of `payload`.
pub fn frame(magic: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The appliance's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Applied (or, for a read, answered); false: rejected.
    pub applied: bool,
    /// Which rejection, for programs; `None` when applied.
    pub rejection: Option<super::admission::Kind>,
    /// The serial of the configuration running after the request.
    pub serial: u64,
    /// For people: what changed, or why it was rejected.
    pub message: String,
}

impl Reply {
    /// The reply frame's bytes.
    pub fn to_frame(&self) -> Vec<u8> {
        frame(
            REPLY_MAGIC,
            &postcard::to_allocvec(self).unwrap_or_default(),
        )
    }

    /// Decodes a reply frame's payload.
    pub fn decode(payload: &[u8]) -> Option<Reply> {
        match postcard::take_from_bytes::<Reply>(payload) {
            Ok((r, [])) => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_in_pieces(bytes: &[u8], piece: usize) -> (Progress, FrameReader) {
        let mut r = FrameReader::new(REQUEST_MAGIC, 1000);
        for chunk in bytes.chunks(piece.max(1)) {
            match r.feed(chunk) {
                Progress::NeedMore => {}
                p => return (p, r),
            }
        }
        (r.end(), r)
    }

    #[test]
    fn frames_reassemble_from_any_piece_size() {
        let f = frame(REQUEST_MAGIC, b"payload bytes");
        for piece in 1..=f.len() {
            let (p, r) = read_in_pieces(&f, piece);
            assert!(matches!(p, Progress::Done { .. }), "piece {piece}: {p:?}");
            assert_eq!(r.payload(), Some(&b"payload bytes"[..]));
        }
        // Bytes after the frame are not taken.
        let mut more = f.clone();
        more.extend_from_slice(b"xyz");
        let mut r = FrameReader::new(REQUEST_MAGIC, 1000);
        assert_eq!(r.feed(&more), Progress::Done { used: f.len() });
    }

    #[test]
    fn every_bad_frame_has_its_error() {
        let f = frame(REQUEST_MAGIC, &[0u8; 20]);
        let mut r = FrameReader::new(REQUEST_MAGIC, 1000);
        assert!(matches!(
            r.feed(b"GET / HTTP/1.1\r\n"),
            Progress::Failed(FrameError::BadMagic(_))
        ));
        // A bare config blob is called what it is.
        let mut r = FrameReader::new(REQUEST_MAGIC, 1000);
        let Progress::Failed(e) = r.feed(b"LBCF\x01\x00") else {
            panic!()
        };
        assert!(alloc::format!("{e}").starts_with("unsigned"));
        // The magic is judged from its first byte.
        let mut r = FrameReader::new(REQUEST_MAGIC, 1000);
        assert!(matches!(
            r.feed(b"X"),
            Progress::Failed(FrameError::BadMagic(_))
        ));

        let mut v2 = f.clone();
        v2[4] = 2;
        assert_eq!(
            read_in_pieces(&v2, 3).0,
            Progress::Failed(FrameError::UnsupportedVersion(2))
        );

        let big = frame(REQUEST_MAGIC, &[0u8; 1001]);
        let mut r = FrameReader::new(REQUEST_MAGIC, 1000);
        assert_eq!(
            r.feed(&big[..HEADER_LEN]),
            Progress::Failed(FrameError::TooLarge {
                claimed: 1001,
                limit: 1000
            })
        );
        // Nothing of an oversized payload is held, whatever follows.
        assert_eq!(r.received(), HEADER_LEN);
        assert!(matches!(r.feed(&big[HEADER_LEN..]), Progress::Failed(_)));

        for cut in 0..f.len() {
            let (p, _) = read_in_pieces(&f[..cut], 4);
            assert_eq!(
                p,
                Progress::Failed(FrameError::Truncated {
                    have: cut as u32,
                    need: if cut < HEADER_LEN {
                        HEADER_LEN as u32
                    } else {
                        f.len() as u32
                    }
                }),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn replies_round_trip() {
        let r = Reply {
            applied: false,
            rejection: Some(super::super::admission::Kind::Replay),
            serial: 9,
            message: "replayed".into(),
        };
        let f = r.to_frame();
        let mut rd = FrameReader::new(REPLY_MAGIC, 1 << 16);
        assert!(matches!(rd.feed(&f), Progress::Done { .. }));
        assert_eq!(Reply::decode(rd.payload().unwrap()), Some(r));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_streams_never_panic_or_overrun(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            piece in 1usize..16,
        ) {
            let mut r = FrameReader::new(REQUEST_MAGIC, 32);
            for c in bytes.chunks(piece) {
                if r.feed(c) != Progress::NeedMore { break; }
            }
            let _ = r.end();
            proptest::prop_assert!(r.received() <= HEADER_LEN + 32);
        }
    }
}
