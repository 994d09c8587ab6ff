//! The sync link's messages: one UDP datagram each, authenticated with
//! HMAC-SHA256 under the pair's shared key.
//!
//! ```text
//! 0..4    magic b"LBSY"
//! 4       version (1)
//! 5       kind: 1 hello, 2 records, 3 config
//! 6..8    body length (u16, big-endian like everything here)
//! 8..16   sender's boot ID (random per boot)
//! 16..20  sequence number (per boot, +1 per message)
//! 20..    body
//! end-16  HMAC-SHA256(key, header and body), first 16 bytes
//! ```
//!
//! Bodies:
//! * **hello** (every 200 ms, both ways): role, priority, flags (the
//!   sender wants a full refresh; it holds a complete copy), the config
//!   serial it runs, its table sizes, the last sequence it got from us.
//! * **records**: the full refresh's generation and whether this message
//!   starts or ends a pass, then up to [`MAX_RECORDS`] fixed 36-byte
//!   records (a flow or a persistence binding, see [`crate::engine::replica`]).
//! * **config**: a piece of the master's config envelope: its serial, the
//!   envelope's length, the piece's offset, the bytes.
//!
//! Every view is zero-copy over the datagram ([`Message`], [`RecordView`]);
//! [`Builder`] writes one. Nothing here panics on any input (fuzzed:
//! `cargo +nightly fuzz run ha_sync` in `lb-core`).

use core::net::Ipv4Addr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::conntrack::TcpState;
use crate::engine::{FlowRecord, PersistRecord, Record};
use crate::flow::{Endpoint, FlowKey, Protocol};
use crate::time::Duration;

pub const MAGIC: [u8; 4] = *b"LBSY";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 20;
pub const MAC_LEN: usize = 16;
/// Largest datagram (a 1500-byte MTU less IPv4 and UDP headers).
pub const MAX_DATAGRAM: usize = 1472;
/// Largest body.
pub const MAX_BODY: usize = MAX_DATAGRAM - HEADER_LEN - MAC_LEN;
pub const RECORD_LEN: usize = 36;
const RECORDS_HEADER: usize = 8;
/// Records one message carries.
pub const MAX_RECORDS: usize = (MAX_BODY - RECORDS_HEADER) / RECORD_LEN;
pub const HELLO_LEN: usize = 24;
const CONFIG_HEADER: usize = 16;
/// Config bytes one message carries.
pub const MAX_CONFIG_PIECE: usize = MAX_BODY - CONFIG_HEADER;

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Hello = 1,
    Records = 2,
    Config = 3,
}

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// Shorter than its header, MAC or announced body.
    Truncated,
    /// Not a sync message (magic), or another version.
    Foreign,
    /// Unknown kind, or a body whose layout is wrong for its kind.
    Malformed,
    /// The MAC does not verify: another key, or forged.
    BadMac,
    /// Older than what was already accepted from that boot (a replay or
    /// a reordered datagram).
    Replayed,
}

impl Error {
    pub const ALL: [Error; 5] = [
        Error::Truncated,
        Error::Foreign,
        Error::Malformed,
        Error::BadMac,
        Error::Replayed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::Foreign => "foreign",
            Error::Malformed => "malformed",
            Error::BadMac => "bad-mac",
            Error::Replayed => "replayed",
        }
    }

    pub fn index(self) -> usize {
        Error::ALL.iter().position(|e| *e == self).unwrap_or(0)
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}
fn ip(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

fn mac(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    // A 32-byte key always fits HMAC-SHA256.
    let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return [0; 32];
    };
    m.update(data);
    m.finalize().into_bytes().into()
}

/// A zero-copy view of a received datagram whose header and length were
/// checked (not yet its MAC: see [`Message::verify`]).
#[derive(Debug, Clone)]
pub struct Message<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Message<T> {
    pub fn new_checked(buffer: T) -> Result<Message<T>, Error> {
        let b = buffer.as_ref();
        if b.len() < HEADER_LEN + MAC_LEN {
            return Err(Error::Truncated);
        }
        if b[0..4] != MAGIC || b[4] != VERSION {
            return Err(Error::Foreign);
        }
        let len = usize::from(be16(b, 6));
        if len > MAX_BODY || b.len() < HEADER_LEN + len + MAC_LEN {
            return Err(Error::Truncated);
        }
        if b.len() > HEADER_LEN + len + MAC_LEN {
            return Err(Error::Malformed);
        }
        Ok(Message { buffer })
    }

    fn bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn kind(&self) -> Result<Kind, Error> {
        match self.bytes()[5] {
            1 => Ok(Kind::Hello),
            2 => Ok(Kind::Records),
            3 => Ok(Kind::Config),
            _ => Err(Error::Malformed),
        }
    }

    pub fn boot_id(&self) -> u64 {
        be64(self.bytes(), 8)
    }

    pub fn sequence(&self) -> u32 {
        be32(self.bytes(), 16)
    }

    pub fn body(&self) -> &[u8] {
        let len = usize::from(be16(self.bytes(), 6));
        &self.bytes()[HEADER_LEN..HEADER_LEN + len]
    }

    /// Whether the MAC is the key's (constant time).
    pub fn verify(&self, key: &[u8; 32]) -> bool {
        let b = self.bytes();
        let end = b.len() - MAC_LEN;
        let Ok(mut m) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
            return false;
        };
        m.update(&b[..end]);
        m.verify_truncated_left(&b[end..]).is_ok()
    }
}

/// What a node says about itself in every hello.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hello {
    /// 0 init, 1 backup, 2 master, 3 fault.
    pub role: u8,
    pub priority: u8,
    /// It has no complete copy of the master's tables yet.
    pub need_refresh: bool,
    /// Its copy is complete (it saw a whole refresh pass).
    pub complete: bool,
    pub serial: u64,
    pub flows: u32,
    pub persistence: u32,
    /// The last sequence number it accepted from the receiver.
    pub acked: u32,
}

impl Hello {
    pub fn parse(body: &[u8]) -> Result<Hello, Error> {
        if body.len() != HELLO_LEN {
            return Err(Error::Malformed);
        }
        Ok(Hello {
            role: body[0],
            priority: body[1],
            need_refresh: body[2] & 1 != 0,
            complete: body[2] & 2 != 0,
            serial: be64(body, 4),
            flows: be32(body, 12),
            persistence: be32(body, 16),
            acked: be32(body, 20),
        })
    }

    pub fn emit(&self, out: &mut [u8; HELLO_LEN]) {
        out[0] = self.role;
        out[1] = self.priority;
        out[2] = u8::from(self.need_refresh) | (u8::from(self.complete) << 1);
        out[3] = 0;
        out[4..12].copy_from_slice(&self.serial.to_be_bytes());
        out[12..16].copy_from_slice(&self.flows.to_be_bytes());
        out[16..20].copy_from_slice(&self.persistence.to_be_bytes());
        out[20..24].copy_from_slice(&self.acked.to_be_bytes());
    }
}

/// The header of a records message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RecordsHeader {
    /// Which full refresh pass the records belong to (0: the journal).
    pub generation: u32,
    /// The first message of pass `generation`.
    pub pass_start: bool,
    /// The last message of pass `generation`.
    pub pass_end: bool,
    pub count: u8,
}

/// A records message's header and its records, checked for layout.
pub fn parse_records(body: &[u8]) -> Result<(RecordsHeader, impl Iterator<Item = &[u8]>), Error> {
    if body.len() < RECORDS_HEADER {
        return Err(Error::Malformed);
    }
    let h = RecordsHeader {
        generation: be32(body, 0),
        pass_start: body[4] & 1 != 0,
        pass_end: body[4] & 2 != 0,
        count: body[5],
    };
    let records = &body[RECORDS_HEADER..];
    if usize::from(h.count) > MAX_RECORDS || records.len() != usize::from(h.count) * RECORD_LEN {
        return Err(Error::Malformed);
    }
    Ok((h, records.chunks_exact(RECORD_LEN)))
}

/// A piece of the config envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigPiece<'a> {
    pub serial: u64,
    pub total: u32,
    pub offset: u32,
    pub data: &'a [u8],
}

impl<'a> ConfigPiece<'a> {
    pub fn parse(body: &'a [u8]) -> Result<ConfigPiece<'a>, Error> {
        if body.len() < CONFIG_HEADER {
            return Err(Error::Malformed);
        }
        let p = ConfigPiece {
            serial: be64(body, 0),
            total: be32(body, 8),
            offset: be32(body, 12),
            data: &body[CONFIG_HEADER..],
        };
        let end = u64::from(p.offset) + p.data.len() as u64;
        if end > u64::from(p.total) {
            return Err(Error::Malformed);
        }
        Ok(p)
    }
}

const STATE_ESTABLISHED: u8 = 1;
const STATE_CLOSING: u8 = 2;
const STATE_RESET: u8 = 3;
const STATE_UDP: u8 = 4;
const KIND_FLOW: u8 = 1;
const KIND_PERSIST: u8 = 2;

fn proto_byte(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
    }
}

fn endpoint(b: &[u8], at: usize) -> Endpoint {
    Endpoint::new(ip(b, at), be16(b, at + 4))
}

fn put_endpoint(out: &mut [u8], at: usize, e: Endpoint) {
    out[at..at + 4].copy_from_slice(&e.addr.octets());
    out[at + 4..at + 6].copy_from_slice(&e.port.to_be_bytes());
}

fn millis32(d: Duration) -> u32 {
    u32::try_from(d.millis()).unwrap_or(u32::MAX)
}

/// Writes one record (36 bytes).
pub fn emit_record(r: &Record, out: &mut [u8; RECORD_LEN]) {
    out.fill(0);
    match r {
        Record::Flow(f) => {
            out[0] = KIND_FLOW;
            out[1] = proto_byte(f.original.proto);
            out[2] = match f.state {
                // Never sent; read back as malformed.
                TcpState::Handshake => 0,
                TcpState::Established => STATE_ESTABLISHED,
                TcpState::Closing => STATE_CLOSING,
                TcpState::Reset => STATE_RESET,
                TcpState::Udp => STATE_UDP,
            };
            out[3] = u8::from(f.snat.is_some());
            put_endpoint(out, 4, f.original.src);
            put_endpoint(out, 10, f.original.dst);
            put_endpoint(out, 16, f.server);
            if let Some(s) = f.snat {
                put_endpoint(out, 22, s);
            }
            out[28..32].copy_from_slice(&millis32(f.remaining).to_be_bytes());
            let secs = u32::try_from(f.established.millis() / 1000).unwrap_or(u32::MAX);
            out[32..36].copy_from_slice(&secs.to_be_bytes());
        }
        Record::Persist(p) => {
            out[0] = KIND_PERSIST;
            out[1] = proto_byte(p.proto);
            put_endpoint(out, 4, Endpoint::new(p.client, 0));
            put_endpoint(out, 10, p.vip);
            put_endpoint(out, 16, p.server);
            out[28..32].copy_from_slice(&millis32(p.remaining).to_be_bytes());
        }
    }
}

/// Reads one record.
pub fn parse_record(b: &[u8]) -> Result<Record, Error> {
    if b.len() != RECORD_LEN {
        return Err(Error::Malformed);
    }
    let proto = match b[1] {
        6 => Protocol::Tcp,
        17 => Protocol::Udp,
        _ => return Err(Error::Malformed),
    };
    let remaining = Duration::from_millis(u64::from(be32(b, 28)));
    match b[0] {
        KIND_FLOW => {
            let state = match (b[2], proto) {
                (STATE_ESTABLISHED, Protocol::Tcp) => TcpState::Established,
                (STATE_CLOSING, Protocol::Tcp) => TcpState::Closing,
                (STATE_RESET, Protocol::Tcp) => TcpState::Reset,
                (STATE_UDP, Protocol::Udp) => TcpState::Udp,
                _ => return Err(Error::Malformed),
            };
            let snat = match b[3] {
                0 => None,
                1 => Some(endpoint(b, 22)),
                _ => return Err(Error::Malformed),
            };
            Ok(Record::Flow(FlowRecord {
                original: FlowKey {
                    proto,
                    src: endpoint(b, 4),
                    dst: endpoint(b, 10),
                },
                server: endpoint(b, 16),
                snat,
                state,
                remaining,
                established: Duration::from_secs(u64::from(be32(b, 32))),
            }))
        }
        KIND_PERSIST => Ok(Record::Persist(PersistRecord {
            vip: endpoint(b, 10),
            proto,
            client: ip(b, 4),
            server: endpoint(b, 16),
            remaining,
        })),
        _ => Err(Error::Malformed),
    }
}

/// Writes one message into a buffer of [`MAX_DATAGRAM`] bytes.
pub struct Builder {
    buf: [u8; MAX_DATAGRAM],
    len: usize,
}

impl Builder {
    /// A message of `kind` from boot `boot_id` with sequence `seq`.
    pub fn new(kind: Kind, boot_id: u64, seq: u32) -> Builder {
        let mut buf = [0u8; MAX_DATAGRAM];
        buf[0..4].copy_from_slice(&MAGIC);
        buf[4] = VERSION;
        buf[5] = kind as u8;
        buf[8..16].copy_from_slice(&boot_id.to_be_bytes());
        buf[16..20].copy_from_slice(&seq.to_be_bytes());
        Builder {
            buf,
            len: HEADER_LEN,
        }
    }

    /// Bytes of body room left.
    pub fn room(&self) -> usize {
        HEADER_LEN + MAX_BODY - self.len
    }

    /// Appends body bytes; false (nothing written) when they do not fit.
    pub fn push(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.room() {
            return false;
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        true
    }

    pub fn body_len(&self) -> usize {
        self.len - HEADER_LEN
    }

    /// The body written so far (to patch a header field in place).
    pub fn body_mut(&mut self) -> &mut [u8] {
        &mut self.buf[HEADER_LEN..self.len]
    }

    /// Seals the message with the key's MAC and returns the datagram.
    pub fn seal(&mut self, key: &[u8; 32]) -> &[u8] {
        let body = (self.len - HEADER_LEN) as u16;
        self.buf[6..8].copy_from_slice(&body.to_be_bytes());
        let tag = mac(key, &self.buf[..self.len]);
        self.buf[self.len..self.len + MAC_LEN].copy_from_slice(&tag[..MAC_LEN]);
        &self.buf[..self.len + MAC_LEN]
    }
}

/// A hello datagram.
pub fn hello(key: &[u8; 32], boot_id: u64, seq: u32, h: &Hello) -> Builder {
    let mut b = Builder::new(Kind::Hello, boot_id, seq);
    let mut body = [0u8; HELLO_LEN];
    h.emit(&mut body);
    b.push(&body);
    b.seal(key);
    b
}

/// Starts a records message (add records with [`Builder::push`] of
/// [`emit_record`]'s bytes, then [`finish_records`]).
pub fn records(boot_id: u64, seq: u32, header: &RecordsHeader) -> Builder {
    let mut b = Builder::new(Kind::Records, boot_id, seq);
    let mut h = [0u8; RECORDS_HEADER];
    h[0..4].copy_from_slice(&header.generation.to_be_bytes());
    h[4] = u8::from(header.pass_start) | (u8::from(header.pass_end) << 1);
    b.push(&h);
    b
}

/// Appends a record; false when the message is full.
pub fn push_record(b: &mut Builder, r: &Record) -> bool {
    if (b.body_len() - RECORDS_HEADER) / RECORD_LEN >= MAX_RECORDS {
        return false;
    }
    let mut out = [0u8; RECORD_LEN];
    emit_record(r, &mut out);
    b.push(&out)
}

/// Writes the count and end-of-pass flag of a records message and seals it.
pub fn finish_records<'a>(b: &'a mut Builder, key: &[u8; 32], pass_end: bool) -> &'a [u8] {
    let count = ((b.body_len() - RECORDS_HEADER) / RECORD_LEN) as u8;
    let body = b.body_mut();
    body[5] = count;
    if pass_end {
        body[4] |= 2;
    }
    b.seal(key)
}

/// A config piece datagram.
pub fn config_piece(key: &[u8; 32], boot_id: u64, seq: u32, piece: &ConfigPiece) -> Builder {
    let mut b = Builder::new(Kind::Config, boot_id, seq);
    let mut h = [0u8; CONFIG_HEADER];
    h[0..8].copy_from_slice(&piece.serial.to_be_bytes());
    h[8..12].copy_from_slice(&piece.total.to_be_bytes());
    h[12..16].copy_from_slice(&piece.offset.to_be_bytes());
    b.push(&h);
    b.push(&piece.data[..piece.data.len().min(MAX_CONFIG_PIECE)]);
    b.seal(key);
    b
}

impl Builder {
    /// The sealed datagram (after [`Builder::seal`]).
    pub fn datagram(&self) -> &[u8] {
        &self.buf[..self.len + MAC_LEN]
    }
}
