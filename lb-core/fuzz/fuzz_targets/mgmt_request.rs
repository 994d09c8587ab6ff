//! The management command endpoint's parsing, end to end: arbitrary bytes,
//! in arbitrary pieces, through the frame reader and the admission policy
//! against a running config with one admin key. Must never panic, never
//! hold more than the limit, and never admit anything it was not given a
//! valid signature for.
//!
//! Input layout: byte 0: bits 0-5 the piece size (1..=64), bit 7 "sign the
//! rest as a request body with the admin key" (so the request and config
//! decoders behind the signature check are reached too); the rest is the
//! stream (or the body to sign).
#![no_main]
use std::sync::OnceLock;

use lb_core::config::{Config, from_toml};
use lb_core::mgmt::admission::admit;
use lb_core::mgmt::keys::SigningKey;
use lb_core::mgmt::request::CONTEXT;
use lb_core::mgmt::wire::{FrameReader, HEADER_LEN, Progress, REQUEST_MAGIC, frame};
use libfuzzer_sys::fuzz_target;

const LIMIT: u32 = 4096;

fn setup() -> &'static (Config, SigningKey) {
    static S: OnceLock<(Config, SigningKey)> = OnceLock::new();
    S.get_or_init(|| {
        let key = SigningKey::from_seed([1; 32]);
        let mut c = from_toml(include_str!("../../configs/medical.toml")).unwrap();
        c.management.admin_keys = vec![key.public().to_string()];
        c.management.serial = 1000;
        (c, key)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let (running, key) = setup();
    let piece = usize::from(ctl & 0x3f).max(1);
    let signed = ctl & 0x80 != 0;
    let stream = if signed {
        let mut msg = CONTEXT.to_vec();
        msg.extend_from_slice(rest);
        let mut payload = key.public().0.to_vec();
        payload.extend_from_slice(&key.sign(&msg));
        payload.extend_from_slice(rest);
        frame(REQUEST_MAGIC, &payload)
    } else {
        rest.to_vec()
    };
    let mut reader = FrameReader::new(REQUEST_MAGIC, LIMIT);
    let mut progress = Progress::NeedMore;
    for chunk in stream.chunks(piece) {
        progress = reader.feed(chunk);
        assert!(reader.received() <= HEADER_LEN + LIMIT as usize);
        if progress != Progress::NeedMore {
            break;
        }
    }
    if progress == Progress::NeedMore {
        progress = reader.end();
    }
    if let (Progress::Done { .. }, Some(payload)) = (progress, reader.payload()) {
        if let Ok(ok) = admit(running, payload) {
            // Only a request the admin key signed gets through.
            assert!(signed || payload.get(..32) == Some(&key.public().0[..]));
            assert!(ok.serial > running.management.serial);
        }
    }
});
