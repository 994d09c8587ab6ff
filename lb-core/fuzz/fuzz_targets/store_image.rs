//! The config disk may hold anything: any bytes as a disk image must open
//! as blank, ours or foreign without panicking; what loads must match its
//! checksum; and a save must either be refused (foreign, too small) or read
//! back exactly.
#![no_main]
use lb_core::store::{DiskState, KIND_CONFIG_ENVELOPE, MemDisk, Store};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // At least a few sectors so both slots can exist; the fuzzer's bytes
    // first (where the label and headers live), zeros after.
    let mut image = data.to_vec();
    image.resize(image.len().max(64 * 1024).div_ceil(512) * 512, 0);
    let mut disk = MemDisk::from_bytes(512, image);
    let Ok(mut store) = Store::open(&mut disk) else {
        return;
    };
    let _ = store.load(&mut disk, |l| Ok::<_, ()>(l.payload.clone()), |_, _| {});
    let before = disk.bytes.clone();
    let payload = b"a config payload".to_vec();
    match store.save(&mut disk, &payload, KIND_CONFIG_ENVELOPE, 1) {
        Ok(_) => {
            let mut again = Store::open(&mut disk).unwrap();
            let got = again.load(&mut disk, |l| Ok::<_, ()>(l.payload.clone()), |_, _| {});
            assert_eq!(got.map(|(_, p)| p), Some(payload));
        }
        Err(_) => {
            if matches!(store.state, DiskState::Foreign(_)) {
                assert_eq!(disk.bytes, before, "a foreign disk is never written");
            }
        }
    }
});
