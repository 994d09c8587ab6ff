//! Config blobs come from disk, boot modules and the network: decoding any
//! bytes must return an error or a valid config, never panic, and whatever
//! decodes must survive an encode/decode round trip unchanged.
#![no_main]
use lb_core::envelope::{FORMAT_VERSION, decode, encode, wrap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // As a whole blob (header checks, CRC, ...).
    check(data);
    // Behind a valid header, so the postcard decoder and the validator see
    // the fuzzer's bytes instead of failing the CRC nearly always.
    check(&wrap(FORMAT_VERSION, data));
});

fn check(blob: &[u8]) {
    if let Ok(config) = decode(blob) {
        let again = encode(&config).expect("a decoded config is valid, so it encodes");
        assert_eq!(decode(&again).expect("re-encoded config decodes"), config);
    }
}
