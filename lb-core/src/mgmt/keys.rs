//! Administrator keys: Ed25519 key pairs, written as text.
//!
//! A public key is `ed25519:` and 64 hex digits (what `admin_keys` in the
//! config and the console wizard take, and what `tools keygen` writes to
//! `admin.pub`). A private key file holds `ed25519-seed:` and the 32-byte
//! seed in hex; it never leaves the administrator's machine.

use alloc::format;
use alloc::string::String;
use core::fmt;

/// Prefix of a public key in text.
pub const PUBLIC_PREFIX: &str = "ed25519:";
/// Prefix of a private key (its seed) in text.
pub const SEED_PREFIX: &str = "ed25519-seed:";

/// An administrator's public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PublicKey(pub [u8; 32]);

/// Why a key in text was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Not `ed25519:` (or `ed25519-seed:`) and 64 hex digits.
    Format,
    /// 32 bytes that are not a usable Ed25519 point.
    NotAKey,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Format => write!(f, "a key is `{PUBLIC_PREFIX}` and 64 hex digits"),
            KeyError::NotAKey => f.write_str("not a valid Ed25519 public key"),
        }
    }
}

/// 64 hex digits to 32 bytes.
fn hex32(text: &str) -> Option<[u8; 32]> {
    let t = text.as_bytes();
    if t.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16);
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = (digit(t[2 * i])? * 16 + digit(t[2 * i + 1])?) as u8;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl PublicKey {
    /// Parses `ed25519:<64 hex>`; surrounding white space is ignored.
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let rest = text
            .trim()
            .strip_prefix(PUBLIC_PREFIX)
            .ok_or(KeyError::Format)?;
        let bytes = hex32(rest).ok_or(KeyError::Format)?;
        let key = ed25519_compact::PublicKey::new(bytes);
        // Rejects small-order and non-canonical points, which no honest
        // key generator produces.
        key.validate().map_err(|_| KeyError::NotAKey)?;
        Ok(PublicKey(bytes))
    }

    /// Whether `signature` is this key's over `message`.
    pub fn verifies(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        ed25519_compact::PublicKey::new(self.0)
            .verify(message, &ed25519_compact::Signature::new(*signature))
            .is_ok()
    }

    /// A short name for logs: the first 8 hex digits.
    pub fn short(&self) -> String {
        hex(&self.0[..4])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PUBLIC_PREFIX}{}", hex(&self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.short())
    }
}

/// An administrator's private key (host side: `tools keygen`, `tools upload`).
#[derive(Clone)]
pub struct SigningKey {
    pair: ed25519_compact::KeyPair,
}

impl SigningKey {
    /// The key pair of a 32-byte seed (from the OS's random source).
    pub fn from_seed(seed: [u8; 32]) -> SigningKey {
        SigningKey {
            pair: ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new(seed)),
        }
    }

    /// Parses the private key file's text (`ed25519-seed:<64 hex>`).
    pub fn parse(text: &str) -> Result<SigningKey, KeyError> {
        let rest = text
            .trim()
            .strip_prefix(SEED_PREFIX)
            .ok_or(KeyError::Format)?;
        Ok(SigningKey::from_seed(hex32(rest).ok_or(KeyError::Format)?))
    }

    /// The private key file's text.
    pub fn to_text(&self) -> String {
        format!("{SEED_PREFIX}{}\n", hex(&*self.pair.sk.seed()))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(*self.pair.pk)
    }

    /// Deterministic Ed25519 signature over `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        *self.pair.sk.sign(message, None)
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.public().short())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn text_round_trips_and_signatures_verify() {
        let key = SigningKey::from_seed([7; 32]);
        let again = SigningKey::parse(&key.to_text()).unwrap();
        assert_eq!(again.public(), key.public());
        let public = PublicKey::parse(&key.public().to_string()).unwrap();
        let sig = key.sign(b"hello");
        assert!(public.verifies(b"hello", &sig));
        assert!(!public.verifies(b"hellO", &sig));
        let mut bad = sig;
        bad[10] ^= 1;
        assert!(!public.verifies(b"hello", &bad));
        let other = SigningKey::from_seed([8; 32]).public();
        assert!(!other.verifies(b"hello", &sig));
    }

    #[test]
    fn malformed_keys_are_errors() {
        let good = SigningKey::from_seed([1; 32]).public().to_string();
        assert_eq!(PublicKey::parse(&good[1..]), Err(KeyError::Format));
        assert_eq!(
            PublicKey::parse(&good[..good.len() - 1]),
            Err(KeyError::Format)
        );
        let mut not_hex = good.clone();
        not_hex.pop();
        not_hex.push('g');
        assert_eq!(PublicKey::parse(&not_hex), Err(KeyError::Format));
        // The identity point (small order) is not a usable key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            PublicKey::parse(&format!("{PUBLIC_PREFIX}{}", hex(&identity))),
            Err(KeyError::NotAKey)
        );
        assert!(SigningKey::parse("ed25519-seed:zz").is_err());
        assert!(PublicKey::parse(&format!("  {good}\n")).is_ok());
    }
}
