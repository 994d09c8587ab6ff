//! The PROXY protocol (HAProxy's, versions 1 and 2) for TCP over IPv4: the
//! header a layer 7 service puts before the client's first byte so that a
//! real server learns the client's address without transparency.
//!
//! [`ProxyRepr`] is the header's meaning; [`ProxyRepr::emit`] writes it and
//! [`ProxyRepr::parse`] reads one (the relay only writes; parsing serves the
//! tests, the fuzz target and a future PROXY-speaking listener). Only the
//! forms the relay writes are accepted: v1 `TCP4`, v2 `PROXY` command with
//! family `TCP over IPv4` (TLVs after the addresses are skipped).

use core::fmt::Write;
use core::net::Ipv4Addr;

use crate::config::SendProxy;
use crate::flow::Endpoint;

/// The v2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Length of a v2 header for TCP over IPv4 (signature, 4 bytes of version,
/// command, family and length, 12 bytes of addresses and ports).
pub const V2_TCP4_LEN: usize = 28;
/// Longest v1 header (the protocol's own bound).
pub const V1_MAX_LEN: usize = 107;

/// Why bytes are not a PROXY header this module accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// Fewer bytes than the header needs (so far).
    Truncated,
    /// Not a PROXY header, or a form other than TCP over IPv4.
    Malformed,
}

/// A PROXY header for one TCP connection over IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProxyRepr {
    /// [`SendProxy::V1`] or [`SendProxy::V2`].
    pub version: SendProxy,
    /// The client.
    pub src: Endpoint,
    /// The virtual service it connected to.
    pub dst: Endpoint,
}

/// Writes into a fixed buffer, refusing to overflow.
struct Cursor<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.at + s.len();
        let dst = self.buf.get_mut(self.at..end).ok_or(core::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.at = end;
        Ok(())
    }
}

impl ProxyRepr {
    /// Bytes [`emit`](Self::emit) writes (0 for [`SendProxy::None`]).
    pub fn buffer_len(&self) -> usize {
        let mut buf = [0u8; V1_MAX_LEN];
        self.emit(&mut buf)
    }

    /// Writes the header at the start of `buf` and returns its length; 0
    /// when `buf` is too short (at most [`V1_MAX_LEN`] bytes are needed) or
    /// the version is [`SendProxy::None`].
    pub fn emit(&self, buf: &mut [u8]) -> usize {
        match self.version {
            SendProxy::None => 0,
            SendProxy::V1 => {
                let mut c = Cursor { buf, at: 0 };
                match write!(
                    c,
                    "PROXY TCP4 {} {} {} {}\r\n",
                    self.src.addr, self.dst.addr, self.src.port, self.dst.port
                ) {
                    Ok(()) => c.at,
                    Err(_) => 0,
                }
            }
            SendProxy::V2 => {
                let Some(b) = buf.get_mut(..V2_TCP4_LEN) else {
                    return 0;
                };
                b[..12].copy_from_slice(&V2_SIGNATURE);
                b[12] = 0x21; // version 2, command PROXY
                b[13] = 0x11; // AF_INET, STREAM
                b[14..16].copy_from_slice(&12u16.to_be_bytes());
                b[16..20].copy_from_slice(&self.src.addr.octets());
                b[20..24].copy_from_slice(&self.dst.addr.octets());
                b[24..26].copy_from_slice(&self.src.port.to_be_bytes());
                b[26..28].copy_from_slice(&self.dst.port.to_be_bytes());
                V2_TCP4_LEN
            }
        }
    }

    /// Reads a header at the start of `buf`: the header and its length.
    pub fn parse(buf: &[u8]) -> Result<(ProxyRepr, usize), ProxyError> {
        if buf.len() >= 12 && buf[..12] == V2_SIGNATURE {
            return Self::parse_v2(buf);
        }
        if V2_SIGNATURE.starts_with(buf) && !buf.is_empty() {
            return Err(ProxyError::Truncated);
        }
        Self::parse_v1(buf)
    }

    fn parse_v2(buf: &[u8]) -> Result<(ProxyRepr, usize), ProxyError> {
        let head = buf.get(..16).ok_or(ProxyError::Truncated)?;
        if head[12] != 0x21 || head[13] != 0x11 {
            return Err(ProxyError::Malformed);
        }
        let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
        if len < 12 {
            return Err(ProxyError::Malformed);
        }
        let body = buf.get(16..16 + len).ok_or(ProxyError::Truncated)?;
        let ip = |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]);
        let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
        Ok((
            ProxyRepr {
                version: SendProxy::V2,
                src: Endpoint::new(ip(0), port(8)),
                dst: Endpoint::new(ip(4), port(10)),
            },
            16 + len,
        ))
    }

    fn parse_v1(buf: &[u8]) -> Result<(ProxyRepr, usize), ProxyError> {
        const PREFIX: &[u8] = b"PROXY ";
        let n = buf.len().min(PREFIX.len());
        if buf[..n] != PREFIX[..n] {
            return Err(ProxyError::Malformed);
        }
        let Some(end) = buf.iter().take(V1_MAX_LEN).position(|&b| b == b'\n') else {
            return Err(if buf.len() < V1_MAX_LEN {
                ProxyError::Truncated
            } else {
                ProxyError::Malformed
            });
        };
        if end == 0 || buf[end - 1] != b'\r' {
            return Err(ProxyError::Malformed);
        }
        let line = core::str::from_utf8(&buf[PREFIX.len().min(end)..end - 1])
            .map_err(|_| ProxyError::Malformed)?;
        let mut f = line.split(' ');
        let (Some("TCP4"), Some(s), Some(d), Some(sp), Some(dp), None) =
            (f.next(), f.next(), f.next(), f.next(), f.next(), f.next())
        else {
            return Err(ProxyError::Malformed);
        };
        let addr = |t: &str| t.parse::<Ipv4Addr>().map_err(|_| ProxyError::Malformed);
        let port = |t: &str| {
            // No sign, no leading zeros (the specification's form).
            if t.is_empty() || t.starts_with('+') || (t.len() > 1 && t.starts_with('0')) {
                return Err(ProxyError::Malformed);
            }
            t.parse::<u16>().map_err(|_| ProxyError::Malformed)
        };
        Ok((
            ProxyRepr {
                version: SendProxy::V1,
                src: Endpoint::new(addr(s)?, port(sp)?),
                dst: Endpoint::new(addr(d)?, port(dp)?),
            },
            end + 1,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn repr(version: SendProxy) -> ProxyRepr {
        ProxyRepr {
            version,
            src: Endpoint::new(Ipv4Addr::new(198, 51, 100, 7), 40001),
            dst: Endpoint::new(Ipv4Addr::new(192, 0, 2, 14), 2575),
        }
    }

    #[test]
    fn v1_is_the_text_line() {
        let mut b = [0u8; 128];
        let n = repr(SendProxy::V1).emit(&mut b);
        assert_eq!(
            &b[..n],
            b"PROXY TCP4 198.51.100.7 192.0.2.14 40001 2575\r\n"
        );
        assert_eq!(ProxyRepr::parse(&b[..n]), Ok((repr(SendProxy::V1), n)));
        assert_eq!(ProxyRepr::parse(&b[..n - 1]), Err(ProxyError::Truncated));
        assert_eq!(repr(SendProxy::V1).emit(&mut b[..10]), 0);
    }

    #[test]
    fn v2_matches_the_specification_example_layout() {
        let mut b = [0u8; 64];
        let n = repr(SendProxy::V2).emit(&mut b);
        assert_eq!(n, V2_TCP4_LEN);
        assert_eq!(
            &b[12..28],
            &[
                0x21, 0x11, 0, 12, 198, 51, 100, 7, 192, 0, 2, 14, 0x9c, 0x41, 0x0a, 0x0f
            ]
        );
        assert_eq!(ProxyRepr::parse(&b[..n]), Ok((repr(SendProxy::V2), n)));
        assert_eq!(ProxyRepr::parse(&b[..20]), Err(ProxyError::Truncated));
        assert_eq!(repr(SendProxy::None).emit(&mut b), 0);
    }

    #[test]
    fn rejects_other_forms() {
        for bad in [
            &b"PROXY TCP6 ::1 ::1 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"GET / HTTP/1.1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        ] {
            assert_eq!(ProxyRepr::parse(bad), Err(ProxyError::Malformed), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn emit_then_parse(v2 in any::<bool>(), s in any::<u32>(), d in any::<u32>(), sp in any::<u16>(), dp in any::<u16>()) {
            let r = ProxyRepr {
                version: if v2 { SendProxy::V2 } else { SendProxy::V1 },
                src: Endpoint::new(Ipv4Addr::from(s), sp),
                dst: Endpoint::new(Ipv4Addr::from(d), dp),
            };
            let mut b = [0u8; V1_MAX_LEN];
            let n = r.emit(&mut b);
            prop_assert!(n > 0 && n <= V1_MAX_LEN);
            prop_assert_eq!(r.buffer_len(), n);
            prop_assert_eq!(ProxyRepr::parse(&b[..n]), Ok((r, n)));
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..140)) {
            let _ = ProxyRepr::parse(&bytes);
        }
    }
}
