//! The versioned envelope around a postcard-encoded [`Config`]: what the
//! host tool writes, the appliance stores on disk, accepts as a boot module
//! and receives over the network.
//!
//! Layout (little-endian):
//! ```text
//! 0..4    magic  b"LBCF"
//! 4..6    format version (u16), currently 3
//! 6..10   payload length (u32)
//! 10..14  CRC-32 (IEEE 802.3) of the payload
//! 14..    payload: postcard(Config)
//! ```
//! Decoding never panics: every way a blob can be wrong has its own error,
//! and a blob that decodes is validated before it is handed out.

use alloc::vec::Vec;
use core::fmt;

use crate::config::{Config, ValidationError, validate};

pub const MAGIC: [u8; 4] = *b"LBCF";
/// The format version this build writes and reads (2: health-check TLS,
/// HL7 control-ID prefix, fallback server, per-server check and agent
/// ports; 3: layer 7 settings and `[ha]`).
pub const FORMAT_VERSION: u16 = 3;
pub const HEADER_LEN: usize = 14;
/// Largest payload accepted. The biggest valid config (256 services × 64
/// servers with long strings) is well under this; the bound stops a
/// corrupt length from driving allocation.
pub const MAX_PAYLOAD: u32 = 4 * 1024 * 1024;

/// Why a blob was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Shorter than the header, or than the header's payload length.
    Truncated {
        have: usize,
        need: usize,
    },
    BadMagic([u8; 4]),
    UnsupportedVersion(u16),
    /// The header claims more than [`MAX_PAYLOAD`].
    TooLarge(u32),
    /// Bytes after the payload.
    TrailingBytes(usize),
    BadCrc {
        stored: u32,
        computed: u32,
    },
    /// The payload is not a postcard config (or has bytes left over).
    Payload,
    /// Well-formed, but the config is invalid.
    Invalid(Vec<ValidationError>),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { have, need } => {
                write!(f, "config blob truncated: {have} bytes, need {need}")
            }
            DecodeError::BadMagic(m) => write!(f, "not a config blob (magic {m:02x?})"),
            DecodeError::UnsupportedVersion(v) => write!(
                f,
                "config format version {v} is not supported (this build reads {FORMAT_VERSION})"
            ),
            DecodeError::TooLarge(n) => {
                write!(
                    f,
                    "config payload of {n} bytes is over the {MAX_PAYLOAD} limit"
                )
            }
            DecodeError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the config"),
            DecodeError::BadCrc { stored, computed } => write!(
                f,
                "config checksum mismatch (stored {stored:08x}, computed {computed:08x})"
            ),
            DecodeError::Payload => f.write_str("config payload does not decode"),
            DecodeError::Invalid(errs) => {
                write!(f, "config is invalid ({} error(s))", errs.len())?;
                for e in errs {
                    write!(f, "; {e}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for DecodeError {}

/// Why a config could not be encoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EncodeError {
    Invalid(Vec<ValidationError>),
    TooLarge(usize),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::Invalid(errs) => {
                write!(f, "config is invalid ({} error(s))", errs.len())?;
                for e in errs {
                    write!(f, "; {e}")?;
                }
                Ok(())
            }
            EncodeError::TooLarge(n) => write!(f, "encoded config of {n} bytes is over the limit"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EncodeError {}

/// Validates and encodes a config into an envelope.
pub fn encode(config: &Config) -> Result<Vec<u8>, EncodeError> {
    validate(config).map_err(EncodeError::Invalid)?;
    // Our types only use what postcard supports, so this cannot fail short
    // of allocation failure; map it anyway rather than unwrap.
    let payload = postcard::to_allocvec(config).map_err(|_| EncodeError::TooLarge(usize::MAX))?;
    if payload.len() > MAX_PAYLOAD as usize {
        return Err(EncodeError::TooLarge(payload.len()));
    }
    Ok(wrap(FORMAT_VERSION, &payload))
}

/// Puts a header in front of `payload` (also used by tests to build blobs
/// of other versions).
pub fn wrap(version: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the envelope, decodes the config and validates it.
pub fn decode(blob: &[u8]) -> Result<Config, DecodeError> {
    let payload = open(blob)?;
    let (config, rest) =
        postcard::take_from_bytes::<Config>(payload).map_err(|_| DecodeError::Payload)?;
    if !rest.is_empty() {
        return Err(DecodeError::Payload);
    }
    validate(&config).map_err(DecodeError::Invalid)?;
    Ok(config)
}

/// Checks the header and CRC and returns the payload.
pub fn open(blob: &[u8]) -> Result<&[u8], DecodeError> {
    let Some(header) = blob.first_chunk::<HEADER_LEN>() else {
        return Err(DecodeError::Truncated {
            have: blob.len(),
            need: HEADER_LEN,
        });
    };
    let magic = [header[0], header[1], header[2], header[3]];
    if magic != MAGIC {
        return Err(DecodeError::BadMagic(magic));
    }
    let version = u16::from_le_bytes([header[4], header[5]]);
    if version != FORMAT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let len = u32::from_le_bytes([header[6], header[7], header[8], header[9]]);
    if len > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge(len));
    }
    let stored = u32::from_le_bytes([header[10], header[11], header[12], header[13]]);
    let body = &blob[HEADER_LEN..];
    let len = len as usize;
    if body.len() < len {
        return Err(DecodeError::Truncated {
            have: blob.len(),
            need: HEADER_LEN + len,
        });
    }
    if body.len() > len {
        return Err(DecodeError::TrailingBytes(body.len() - len));
    }
    let computed = crc32(body);
    if computed != stored {
        return Err(DecodeError::BadCrc { stored, computed });
    }
    Ok(body)
}

/// CRC-32/IEEE (reflected polynomial 0xEDB88320), as in zlib and Ethernet.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC_TABLE[((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Byte-at-a-time table, built at compile time.
const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ErrorKind, from_toml};

    const MEDICAL: &str = include_str!("../configs/medical.toml");

    #[test]
    fn crc32_known_vectors() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
    }

    #[test]
    fn round_trip_medical() {
        let cfg = from_toml(MEDICAL).unwrap();
        let blob = encode(&cfg).unwrap();
        assert_eq!(&blob[..4], b"LBCF");
        assert_eq!(decode(&blob).unwrap(), cfg);
        // The wire form is compact: the whole guide fits in well under 1 KiB.
        assert!(blob.len() < 1024, "{} bytes", blob.len());
    }

    #[test]
    fn every_corruption_has_its_own_error() {
        let cfg = from_toml(MEDICAL).unwrap();
        let blob = encode(&cfg).unwrap();

        assert_eq!(
            decode(&blob[..5]),
            Err(DecodeError::Truncated {
                have: 5,
                need: HEADER_LEN
            })
        );
        assert!(matches!(
            decode(&blob[..blob.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));

        let mut b = blob.clone();
        b[0] = b'X';
        assert!(matches!(decode(&b), Err(DecodeError::BadMagic(_))));

        let mut b = blob.clone();
        let other = FORMAT_VERSION + 1;
        b[4..6].copy_from_slice(&other.to_le_bytes());
        assert_eq!(decode(&b), Err(DecodeError::UnsupportedVersion(other)));

        let mut b = blob.clone();
        b[6..10].copy_from_slice(&(MAX_PAYLOAD + 1).to_le_bytes());
        assert_eq!(decode(&b), Err(DecodeError::TooLarge(MAX_PAYLOAD + 1)));

        let mut b = blob.clone();
        b.push(0);
        assert_eq!(decode(&b), Err(DecodeError::TrailingBytes(1)));

        let mut b = blob.clone();
        let last = b.len() - 1;
        b[last] ^= 0x40;
        assert!(matches!(decode(&b), Err(DecodeError::BadCrc { .. })));

        // Right CRC over a payload that is not a config.
        assert_eq!(
            decode(&wrap(FORMAT_VERSION, &[0xff; 7])),
            Err(DecodeError::Payload)
        );
        // A config followed by garbage inside the payload.
        let mut payload = postcard::to_allocvec(&cfg).unwrap();
        payload.push(0);
        assert_eq!(
            decode(&wrap(FORMAT_VERSION, &payload)),
            Err(DecodeError::Payload)
        );
    }

    #[test]
    fn decoded_configs_are_validated() {
        let mut cfg = from_toml(MEDICAL).unwrap();
        cfg.virtual_services[0].real_servers[0].weight = 70_000;
        assert!(matches!(encode(&cfg), Err(EncodeError::Invalid(_))));
        let blob = wrap(FORMAT_VERSION, &postcard::to_allocvec(&cfg).unwrap());
        let Err(DecodeError::Invalid(errs)) = decode(&blob) else {
            panic!("invalid config accepted")
        };
        assert_eq!(errs[0].kind, ErrorKind::WeightOutOfRange);
    }

    #[test]
    fn every_prefix_and_bit_flip_is_an_error_not_a_panic() {
        let blob = encode(&from_toml(MEDICAL).unwrap()).unwrap();
        for n in 0..blob.len() {
            assert!(decode(&blob[..n]).is_err());
        }
        for i in 0..blob.len() {
            for bit in 0..8 {
                let mut b = blob.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b).is_err(), "flip at {i}.{bit} accepted");
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = decode(&bytes);
            // Also behind a valid header, so the postcard decoder sees them.
            let _ = decode(&wrap(FORMAT_VERSION, &bytes));
        }
    }
}
