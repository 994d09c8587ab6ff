//! DICOM test studies and the dcmtk peers that carry them: `storescp` as the
//! PACS (a real server), `storescu` and `echoscu` as the modality (a client).
//!
//! Files are DICOM Part 10, Explicit VR Little Endian, Secondary Capture
//! images with deterministic pseudo-random pixels. `storescp +B` writes the
//! data set exactly as received, so arrival is checked byte for byte on the
//! data set (the file meta header is the receiver's own, by design).

use anyhow::{Context, Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const IMPLEMENTATION_UID: &str = "1.2.826.0.1.3680043.10.1451.1";
/// Root for the UIDs the tests mint.
const UID_ROOT: &str = "1.2.826.0.1.3680043.10.1451.2";

fn element(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

/// A string value padded to even length (UIDs with NUL, text with space).
fn text(value: &str, vr: &[u8; 2]) -> Vec<u8> {
    let mut v = value.as_bytes().to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == b"UI" { 0 } else { b' ' });
    }
    v
}

/// One study file: its SOP instance UID and the encoded data set.
pub struct Study {
    pub sop_instance_uid: String,
    pub dataset: Vec<u8>,
}

impl Study {
    /// A Secondary Capture image of `rows` x `cols` 8-bit pixels from `seed`.
    pub fn new(index: u32, seed: u64, rows: u16, cols: u16) -> Study {
        let uid = format!("{UID_ROOT}.{}.{index}", seed % 1_000_000);
        let mut ds = Vec::new();
        let ui = |v: &str| text(v, b"UI");
        element(&mut ds, 0x0008, 0x0016, b"UI", &ui(SECONDARY_CAPTURE));
        element(&mut ds, 0x0008, 0x0018, b"UI", &ui(&uid));
        element(&mut ds, 0x0008, 0x0060, b"CS", &text("OT", b"CS"));
        element(
            &mut ds,
            0x0010,
            0x0010,
            b"PN",
            &text(&format!("TEST^PATIENT{index}"), b"PN"),
        );
        element(
            &mut ds,
            0x0010,
            0x0020,
            b"LO",
            &text(&format!("PID{index:05}"), b"LO"),
        );
        element(
            &mut ds,
            0x0020,
            0x000D,
            b"UI",
            &ui(&format!("{UID_ROOT}.9.{}", seed % 1_000_000)),
        );
        element(
            &mut ds,
            0x0020,
            0x000E,
            b"UI",
            &ui(&format!("{UID_ROOT}.8.{}", seed % 1_000_000)),
        );
        element(&mut ds, 0x0028, 0x0002, b"US", &1u16.to_le_bytes());
        element(&mut ds, 0x0028, 0x0004, b"CS", &text("MONOCHROME2", b"CS"));
        element(&mut ds, 0x0028, 0x0010, b"US", &rows.to_le_bytes());
        element(&mut ds, 0x0028, 0x0011, b"US", &cols.to_le_bytes());
        element(&mut ds, 0x0028, 0x0100, b"US", &8u16.to_le_bytes());
        element(&mut ds, 0x0028, 0x0101, b"US", &8u16.to_le_bytes());
        element(&mut ds, 0x0028, 0x0102, b"US", &7u16.to_le_bytes());
        element(&mut ds, 0x0028, 0x0103, b"US", &0u16.to_le_bytes());
        let mut pixels = vec![0u8; rows as usize * cols as usize];
        let mut x = seed | 1;
        for p in pixels.iter_mut() {
            // xorshift64: cheap, deterministic, incompressible enough.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *p = x as u8;
        }
        if pixels.len() % 2 == 1 {
            pixels.push(0);
        }
        element(&mut ds, 0x7FE0, 0x0010, b"OB", &pixels);
        Study {
            sop_instance_uid: uid,
            dataset: ds,
        }
    }

    /// The Part 10 file: preamble, `DICM`, file meta group, data set.
    pub fn file_bytes(&self) -> Vec<u8> {
        let mut meta = Vec::new();
        element(&mut meta, 0x0002, 0x0001, b"OB", &[0, 1]);
        element(
            &mut meta,
            0x0002,
            0x0002,
            b"UI",
            &text(SECONDARY_CAPTURE, b"UI"),
        );
        element(
            &mut meta,
            0x0002,
            0x0003,
            b"UI",
            &text(&self.sop_instance_uid, b"UI"),
        );
        element(
            &mut meta,
            0x0002,
            0x0010,
            b"UI",
            &text(EXPLICIT_VR_LE, b"UI"),
        );
        element(
            &mut meta,
            0x0002,
            0x0012,
            b"UI",
            &text(IMPLEMENTATION_UID, b"UI"),
        );
        let mut out = vec![0u8; 128];
        out.extend_from_slice(b"DICM");
        element(
            &mut out,
            0x0002,
            0x0000,
            b"UL",
            &(meta.len() as u32).to_le_bytes(),
        );
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.dataset);
        out
    }
}

/// The data set of a Part 10 file (everything after the file meta group).
pub fn dataset_of(file: &[u8]) -> Result<&[u8]> {
    if file.len() < 144 || &file[128..132] != b"DICM" {
        bail!("not a DICOM Part 10 file");
    }
    // (0002,0000) UL, explicit VR: tag 4 + VR 2 + length 2 + value 4.
    let group_len = u32::from_le_bytes(file[140..144].try_into().unwrap()) as usize;
    let start = 144 + group_len;
    file.get(start..)
        .context("file meta group longer than the file")
}

/// `count` studies; every `big_every`-th one is over 1 MiB.
pub fn studies(count: u32, big_every: u32, seed: u64) -> Vec<Study> {
    (0..count)
        .map(|i| {
            let s = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(i as u64 + 1);
            if big_every > 0 && i % big_every == 0 {
                Study::new(i, s, 1024, 1100 + (i % 7) as u16)
            } else {
                Study::new(i, s, 64 + (i % 5) as u16 * 16, 64)
            }
        })
        .collect()
}

/// Writes studies as files named by index into `dir` and returns the paths.
pub fn write_studies(dir: &Path, studies: &[Study]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    studies
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let path = dir.join(format!("study{i:03}.dcm"));
            std::fs::write(&path, s.file_bytes())?;
            Ok(path)
        })
        .collect()
}

/// Every data set found in the files under `dirs`, with how often it arrived.
pub fn received(dirs: &[&Path]) -> Result<HashMap<Vec<u8>, usize>> {
    let mut seen = HashMap::new();
    for dir in dirs {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_file() {
                let bytes = std::fs::read(&path)?;
                let ds = dataset_of(&bytes).with_context(|| format!("{}", path.display()))?;
                *seen.entry(ds.to_vec()).or_insert(0) += 1;
            }
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_round_trips_to_its_dataset() {
        let s = Study::new(3, 42, 8, 9);
        let file = s.file_bytes();
        assert_eq!(dataset_of(&file).unwrap(), &s.dataset[..]);
        assert_eq!(file.len() % 2, 0);
    }

    #[test]
    fn big_studies_are_over_one_mib() {
        let all = studies(10, 5, 7);
        assert!(all[0].dataset.len() > 1 << 20 && all[5].dataset.len() > 1 << 20);
        assert!(all[1].dataset.len() < 1 << 20);
    }
}
