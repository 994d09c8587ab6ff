//! Console password hashes: PBKDF2-HMAC-SHA256 (RFC 8018) over a random
//! 16-byte salt, stored as a PHC string
//! `$pbkdf2-sha256$i=ITERATIONS,l=32$SALT$HASH` (base64 without padding),
//! the format of the `management_password_hash` config field.
//!
//! The iterations run in steps ([`Pbkdf2::step`]) so the kernel can spread
//! the work over several passes of its executor instead of stalling the
//! data path for the whole computation.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Iterations for new hashes.
pub const ITERATIONS: u32 = 100_000;
/// Salt bytes for new hashes.
pub const SALT_LEN: usize = 16;
/// Bounds accepted when reading a stored hash.
const MAX_ITERATIONS: u32 = 10_000_000;
const MAX_SALT: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// A PBKDF2 computation in progress (one 32-byte block).
#[derive(Clone)]
pub struct Pbkdf2 {
    mac: HmacSha256,
    u: [u8; 32],
    t: [u8; 32],
    left: u32,
}

impl Pbkdf2 {
    pub fn new(password: &[u8], salt: &[u8], iterations: u32) -> Pbkdf2 {
        // HMAC takes keys of any length.
        let mac = HmacSha256::new_from_slice(password).unwrap_or_else(|_| unreachable!());
        let mut first = mac.clone();
        first.update(salt);
        first.update(&1u32.to_be_bytes());
        let u: [u8; 32] = first.finalize().into_bytes().into();
        Pbkdf2 {
            mac,
            u,
            t: u,
            left: iterations.max(1) - 1,
        }
    }

    /// Runs up to `max` more iterations; the derived key once done.
    pub fn step(&mut self, max: u32) -> Option<[u8; 32]> {
        let n = self.left.min(max);
        for _ in 0..n {
            let mut m = self.mac.clone();
            m.update(&self.u);
            self.u = m.finalize().into_bytes().into();
            for (t, u) in self.t.iter_mut().zip(self.u.iter()) {
                *t ^= u;
            }
        }
        self.left -= n;
        (self.left == 0).then_some(self.t)
    }

    /// Runs to the end.
    pub fn finish(mut self) -> [u8; 32] {
        loop {
            if let Some(k) = self.step(u32::MAX) {
                return k;
            }
        }
    }
}

/// A stored password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordHash {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub hash: [u8; 32],
}

/// Why a stored hash string was not understood.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadHash;

impl fmt::Display for BadHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a $pbkdf2-sha256$ password hash")
    }
}

impl PasswordHash {
    /// The computation that hashes `password` with `salt` for storing.
    pub fn begin(password: &str, salt: &[u8]) -> Pbkdf2 {
        Pbkdf2::new(password.as_bytes(), salt, ITERATIONS)
    }

    /// The computation that checks `password` against this hash.
    pub fn begin_verify(&self, password: &str) -> Pbkdf2 {
        Pbkdf2::new(password.as_bytes(), &self.salt, self.iterations)
    }

    /// Whether a derived key matches, in time independent of where they
    /// differ.
    pub fn matches(&self, derived: &[u8; 32]) -> bool {
        self.hash
            .iter()
            .zip(derived.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    pub fn to_phc(&self) -> String {
        format!(
            "$pbkdf2-sha256$i={},l=32${}${}",
            self.iterations,
            b64_encode(&self.salt),
            b64_encode(&self.hash)
        )
    }

    pub fn parse(s: &str) -> Result<PasswordHash, BadHash> {
        let mut parts = s.split('$');
        let (Some(""), Some("pbkdf2-sha256"), Some(params), Some(salt), Some(hash), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(BadHash);
        };
        let mut iterations = None;
        for p in params.split(',') {
            match p.split_once('=') {
                Some(("i", v)) => iterations = v.parse::<u32>().ok(),
                Some(("l", "32")) => {}
                _ => return Err(BadHash),
            }
        }
        let iterations = iterations
            .filter(|i| (1..=MAX_ITERATIONS).contains(i))
            .ok_or(BadHash)?;
        let salt = b64_decode(salt)
            .filter(|s| !s.is_empty() && s.len() <= MAX_SALT)
            .ok_or(BadHash)?;
        let hash: [u8; 32] = b64_decode(hash)
            .and_then(|h| h.try_into().ok())
            .ok_or(BadHash)?;
        Ok(PasswordHash {
            iterations,
            salt,
            hash,
        })
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_encode(data: &[u8]) -> String {
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(char::from(B64[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding of the last character.
    (acc == 0 && bits < 6).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn rfc_test_vectors() {
        // PBKDF2-HMAC-SHA256 vectors (RFC 7914 §11 style, dkLen 32).
        let k = Pbkdf2::new(b"password", b"salt", 1).finish();
        assert_eq!(
            hex(&k),
            "120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b"
        );
        let k = Pbkdf2::new(b"password", b"salt", 2).finish();
        assert_eq!(
            hex(&k),
            "ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43"
        );
        let mut job = Pbkdf2::new(b"password", b"salt", 4096);
        let mut steps = 0;
        let k = loop {
            steps += 1;
            if let Some(k) = job.step(1000) {
                break k;
            }
        };
        assert_eq!(steps, 5);
        assert_eq!(
            hex(&k),
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    #[test]
    fn phc_round_trip_and_verification() {
        let salt = [7u8; SALT_LEN];
        let h = PasswordHash {
            iterations: 1000,
            salt: salt.to_vec(),
            hash: Pbkdf2::new(b"correct horse", &salt, 1000).finish(),
        };
        let s = h.to_phc();
        assert!(
            s.starts_with("$pbkdf2-sha256$i=1000,l=32$BwcHBwcHBwcHBwcHBwcHBw$"),
            "{s}"
        );
        let back = PasswordHash::parse(&s).unwrap();
        assert_eq!(back, h);
        assert!(back.matches(&back.begin_verify("correct horse").finish()));
        assert!(!back.matches(&back.begin_verify("correct horsf").finish()));
    }

    #[test]
    fn malformed_hashes_are_refused() {
        for bad in [
            "",
            "plain",
            "$pbkdf2-sha256$i=0,l=32$AAAA$AAAA",
            "$pbkdf2-sha256$i=10,l=64$BwcH$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$pbkdf2-sha1$i=10,l=32$BwcH$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$pbkdf2-sha256$i=10,l=32$!!$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$pbkdf2-sha256$i=10,l=32$BwcH$AAAA",
            "$pbkdf2-sha256$i=10,l=32$BwcH$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA$x",
        ] {
            assert_eq!(PasswordHash::parse(bad), Err(BadHash), "{bad}");
        }
    }

    #[test]
    fn base64_round_trips() {
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(b64_decode(&b64_encode(&data)).unwrap(), data);
        }
        assert_eq!(b64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(b64_encode(b"fo"), "Zm8");
    }
}
