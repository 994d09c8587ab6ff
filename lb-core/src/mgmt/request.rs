//! Signed management requests: what `tools upload`, `tools rollback` and
//! `tools rs` send.
//!
//! A request is the postcard encoding of [`Request`] (its serial, the
//! appliance it is meant for, and the action), signed with Ed25519 by an
//! administrator key. On the wire (inside a request frame, see
//! [`super::wire`]) it is:
//! ```text
//! 0..32    the signer's public key
//! 32..96   Ed25519 signature over CONTEXT || body
//! 96..     body: postcard(Request)
//! ```
//! The signature covers a fixed context string before the body, so a
//! signature made for anything else never verifies as a request.

use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use super::keys::{PublicKey, SigningKey};
use crate::config::AdminState;

/// Signed before the body: binds signatures to this protocol and version.
pub const CONTEXT: &[u8] = b"LBMED management request v1\0";
/// Bytes before the body: key and signature.
pub const SIGNED_HEADER_LEN: usize = 32 + 64;

/// One signed change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Must be greater than the serial of the running configuration; it
    /// becomes the running serial when the request is applied.
    pub serial: u64,
    /// Hostname of the appliance the request is meant for; another
    /// appliance refuses it (a request recorded from one appliance cannot
    /// be replayed to its neighbour). Empty: any appliance.
    pub appliance: String,
    pub action: Action,
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Apply this configuration (a config envelope, see [`crate::envelope`]).
    Upload(Vec<u8>),
    /// Apply the previous stored configuration again.
    Rollback,
    /// Set one real server's administrative state (online, drain, halt).
    SetState {
        service: String,
        server: String,
        state: AdminState,
    },
}

/// A request as received: who claims to have signed it, and the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed<'a> {
    pub key: PublicKey,
    pub signature: [u8; 64],
    pub body: &'a [u8],
}

/// The message an administrator signs for `body`.
fn message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(CONTEXT.len() + body.len());
    m.extend_from_slice(CONTEXT);
    m.extend_from_slice(body);
    m
}

/// Encodes and signs `request`: the payload of a request frame.
pub fn sign(key: &SigningKey, request: &Request) -> Vec<u8> {
    // Plain data: postcard cannot fail on it short of allocation failure.
    let body = postcard::to_allocvec(request).unwrap_or_default();
    let signature = key.sign(&message(&body));
    let mut out = Vec::with_capacity(SIGNED_HEADER_LEN + body.len());
    out.extend_from_slice(&key.public().0);
    out.extend_from_slice(&signature);
    out.extend_from_slice(&body);
    out
}

impl<'a> Signed<'a> {
    /// Splits a request frame's payload; `None` when it is too short to
    /// hold a key and a signature.
    pub fn split(payload: &'a [u8]) -> Option<Signed<'a>> {
        let (key, rest) = payload.split_first_chunk::<32>()?;
        let (signature, body) = rest.split_first_chunk::<64>()?;
        Some(Signed {
            key: PublicKey(*key),
            signature: *signature,
            body,
        })
    }

    /// Whether the signature is `key`'s over the body.
    pub fn verifies(&self) -> bool {
        self.key.verifies(&message(self.body), &self.signature)
    }

    /// The request in the body (only worth decoding once verified).
    pub fn request(&self) -> Option<Request> {
        match postcard::take_from_bytes::<Request>(self.body) {
            Ok((r, [])) => Some(r),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_requests_round_trip_and_bind_their_bytes() {
        let key = SigningKey::from_seed([3; 32]);
        let req = Request {
            serial: 42,
            appliance: "lbmed1".into(),
            action: Action::SetState {
                service: "DICOM".into(),
                server: "PACS1".into(),
                state: AdminState::Drain,
            },
        };
        let bytes = sign(&key, &req);
        let s = Signed::split(&bytes).unwrap();
        assert_eq!(s.key, key.public());
        assert!(s.verifies());
        assert_eq!(s.request(), Some(req));
        // Any flipped bit anywhere breaks the signature or the key match.
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            let s = Signed::split(&b).unwrap();
            assert!(
                !(s.key == key.public() && s.verifies()),
                "flip at {i} verified"
            );
        }
        assert!(Signed::split(&bytes[..SIGNED_HEADER_LEN - 1]).is_none());
    }
}
