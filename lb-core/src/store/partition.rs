//! The config store's partition on a bootable appliance disk.
//!
//! The disk images (`appliance.qcow2`, `.vmdk`, `.vhdx`, the OVA's disk)
//! hold the boot loader and kernel *and* the config store, so a saved
//! config travels with the VM. The image's GUID partition table (GPT) marks
//! the store's partition with [`CONFIG_STORE_TYPE`]; [`find_config_partition`]
//! finds it and [`Partition`] is that range of the disk as a
//! [`BlockDevice`] of its own, so the store does not know it is on a
//! partition. A disk without our partition type (a bare store disk, a blank
//! disk, someone else's disk) is used whole, as before: the store decides
//! whether it is ours.
//!
//! Only the primary GPT header is read; a damaged one (bad CRC) means no
//! partition is found and the disk is taken whole, which the store then
//! refuses as foreign (a partition table is not blank): the appliance never
//! writes into a disk it cannot map.

use super::device::{BlockDevice, IoError, check_request};
use crate::envelope::crc32;
use alloc::boxed::Box;
use alloc::vec;

/// The partition type of the config store, as written in text
/// (`tools build` passes it to xorriso).
pub const CONFIG_STORE_TYPE_TEXT: &str = "6c62636f-6e66-4c42-8000-73746f726530";
/// The same GUID as stored on disk (first three fields little-endian).
pub const CONFIG_STORE_TYPE: [u8; 16] = [
    0x6f, 0x63, 0x62, 0x6c, 0x66, 0x6e, 0x42, 0x4c, 0x80, 0x00, 0x73, 0x74, 0x6f, 0x72, 0x65, 0x30,
];

/// Largest partition entry array read (the usual is 128 × 128 bytes).
pub const MAX_ENTRY_ARRAY: usize = 64 * 1024;

/// A run of sectors on a disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub first: u64,
    pub sectors: u64,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]))
}

/// The config store's partition, if the disk has a valid primary GPT with
/// one. Errors are read errors only; anything malformed is "no partition".
pub fn find_config_partition(dev: &mut dyn BlockDevice) -> Result<Option<Extent>, IoError> {
    let ss = dev.sector_size();
    let count = dev.sector_count();
    if ss < 512 || count < 3 {
        return Ok(None);
    }
    let mut header = vec![0u8; ss];
    dev.read(1, &mut header)?;
    if &header[0..8] != b"EFI PART" {
        return Ok(None);
    }
    let header_len = u32_at(&header, 12) as usize;
    if !(92..=ss).contains(&header_len) {
        return Ok(None);
    }
    let mut check = header[..header_len].to_vec();
    check[16..20].fill(0);
    if crc32(&check) != u32_at(&header, 16) || u64_at(&header, 24) != 1 {
        return Ok(None);
    }
    let first_usable = u64_at(&header, 40);
    let last_usable = u64_at(&header, 48);
    let entries_lba = u64_at(&header, 72);
    let entries = u32_at(&header, 80) as usize;
    let entry_len = u32_at(&header, 84) as usize;
    let entries_crc = u32_at(&header, 88);
    if entry_len < 128 || !entry_len.is_multiple_of(8) || entries == 0 {
        return Ok(None);
    }
    let Some(array_len) = entries.checked_mul(entry_len) else {
        return Ok(None);
    };
    if array_len > MAX_ENTRY_ARRAY || last_usable >= count || first_usable > last_usable {
        return Ok(None);
    }
    let read_len = array_len.div_ceil(ss) * ss;
    if check_request(count, ss, entries_lba, read_len).is_err() || entries_lba < 2 {
        return Ok(None);
    }
    let mut array = vec![0u8; read_len];
    dev.read(entries_lba, &mut array)?;
    if crc32(&array[..array_len]) != entries_crc {
        return Ok(None);
    }
    for e in array[..array_len].chunks_exact(entry_len) {
        if e[0..16] != CONFIG_STORE_TYPE {
            continue;
        }
        let (first, last) = (u64_at(e, 32), u64_at(e, 40));
        if first < first_usable || last > last_usable || first > last {
            return Ok(None);
        }
        return Ok(Some(Extent {
            first,
            sectors: last - first + 1,
        }));
    }
    Ok(None)
}

/// A range of a disk as a disk of its own.
pub struct Partition {
    disk: Box<dyn BlockDevice + Send>,
    extent: Extent,
}

impl Partition {
    /// `extent` must lie on `disk` (as [`find_config_partition`] returns).
    pub fn new(disk: Box<dyn BlockDevice + Send>, extent: Extent) -> Partition {
        Partition { disk, extent }
    }
}

impl BlockDevice for Partition {
    fn sector_size(&self) -> usize {
        self.disk.sector_size()
    }

    fn sector_count(&self) -> u64 {
        self.extent.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_request(self.extent.sectors, self.sector_size(), lba, buf.len())?;
        self.disk.read(self.extent.first + lba, buf)
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        check_request(self.extent.sectors, self.sector_size(), lba, buf.len())?;
        self.disk.write(self.extent.first + lba, buf)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.disk.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::device::MemDisk;
    use crate::store::{DiskState, Store};
    use alloc::vec::Vec;

    /// Writes a primary GPT with 128 entries of 128 bytes at LBA 2; each
    /// entry is (type, first, last).
    fn gpt(disk: &mut MemDisk, parts: &[([u8; 16], u64, u64)]) {
        let sectors = disk.sector_count();
        let mut array = vec![0u8; 128 * 128];
        for (i, (ty, first, last)) in parts.iter().enumerate() {
            let e = &mut array[i * 128..(i + 1) * 128];
            e[0..16].copy_from_slice(ty);
            e[16] = i as u8 + 1;
            e[32..40].copy_from_slice(&first.to_le_bytes());
            e[40..48].copy_from_slice(&last.to_le_bytes());
        }
        let mut h = vec![0u8; 512];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&1u64.to_le_bytes());
        h[32..40].copy_from_slice(&(sectors - 1).to_le_bytes());
        h[40..48].copy_from_slice(&34u64.to_le_bytes());
        h[48..56].copy_from_slice(&(sectors - 34).to_le_bytes());
        h[72..80].copy_from_slice(&2u64.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&array).to_le_bytes());
        let crc = crc32(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        disk.write(1, &h).unwrap();
        disk.write(2, &array).unwrap();
    }

    const ESP: [u8; 16] = [
        0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ];

    #[test]
    fn type_guid_bytes_match_its_text() {
        let hex: Vec<u8> = CONFIG_STORE_TYPE_TEXT
            .split('-')
            .enumerate()
            .flat_map(|(i, field)| {
                let mut b: Vec<u8> = (0..field.len() / 2)
                    .map(|k| u8::from_str_radix(&field[2 * k..2 * k + 2], 16).unwrap())
                    .collect();
                if i < 3 {
                    b.reverse();
                }
                b
            })
            .collect();
        assert_eq!(hex, CONFIG_STORE_TYPE);
    }

    #[test]
    fn finds_the_store_partition_and_confines_io_to_it() {
        let mut disk = MemDisk::new(512, 8192);
        gpt(
            &mut disk,
            &[(ESP, 64, 2047), (CONFIG_STORE_TYPE, 4096, 8100)],
        );
        let found = find_config_partition(&mut disk).unwrap().unwrap();
        assert_eq!(
            found,
            Extent {
                first: 4096,
                sectors: 4005
            }
        );
        let mut part = Partition::new(Box::new(disk), found);
        assert_eq!(part.sector_count(), 4005);
        // The partition is blank, so the store takes it and saves into it.
        let mut store = Store::open(&mut part).unwrap();
        assert_eq!(store.state, DiskState::Blank);
        store.save(&mut part, b"config", 1, 7).unwrap();
        let mut buf = [0u8; 512];
        assert_eq!(part.read(4005, &mut buf), Err(IoError::OutOfRange));
        assert_eq!(part.write(4004, &[1u8; 1024]), Err(IoError::OutOfRange));
        let mut reopened = Store::open(&mut part).unwrap();
        let loaded = reopened.load(&mut part, |_| Ok::<(), ()>(()), |_, _| {});
        assert_eq!(loaded.unwrap().0.payload, b"config");
    }

    #[test]
    fn no_partition_table_or_no_store_partition_is_none() {
        let mut blank = MemDisk::new(512, 4096);
        assert_eq!(find_config_partition(&mut blank).unwrap(), None);
        let mut other = MemDisk::new(512, 4096);
        gpt(&mut other, &[(ESP, 64, 2047)]);
        assert_eq!(find_config_partition(&mut other).unwrap(), None);
    }

    #[test]
    fn damaged_or_lying_tables_are_none() {
        // Header CRC wrong.
        let mut d = MemDisk::new(512, 8192);
        gpt(&mut d, &[(CONFIG_STORE_TYPE, 4096, 8100)]);
        d.bytes[512 + 40] ^= 1;
        assert_eq!(find_config_partition(&mut d).unwrap(), None);
        // Entry array CRC wrong.
        let mut d = MemDisk::new(512, 8192);
        gpt(&mut d, &[(CONFIG_STORE_TYPE, 4096, 8100)]);
        d.bytes[1024 + 33] ^= 1;
        assert_eq!(find_config_partition(&mut d).unwrap(), None);
        // Partition past the usable end, and one ending before it starts.
        let mut d = MemDisk::new(512, 8192);
        gpt(&mut d, &[(CONFIG_STORE_TYPE, 4096, 9000)]);
        assert_eq!(find_config_partition(&mut d).unwrap(), None);
        let mut d = MemDisk::new(512, 8192);
        gpt(&mut d, &[(CONFIG_STORE_TYPE, 5000, 4096)]);
        assert_eq!(find_config_partition(&mut d).unwrap(), None);
        // A header claiming a huge entry array, or one past the disk.
        let mut d = MemDisk::new(512, 8192);
        gpt(&mut d, &[(CONFIG_STORE_TYPE, 4096, 8100)]);
        d.bytes[512 + 80..512 + 84].copy_from_slice(&u32::MAX.to_le_bytes());
        let crc = {
            let mut h = d.bytes[512..512 + 92].to_vec();
            h[16..20].fill(0);
            crc32(&h)
        };
        d.bytes[512 + 16..512 + 20].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(find_config_partition(&mut d).unwrap(), None);
        // A tiny disk.
        let mut tiny = MemDisk::new(512, 2);
        assert_eq!(find_config_partition(&mut tiny).unwrap(), None);
    }

    #[test]
    fn random_sectors_never_panic() {
        let mut seed = 0x1234_5678u32;
        for _ in 0..200 {
            let mut d = MemDisk::new(512, 64);
            for b in d.bytes.iter_mut() {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                *b = (seed >> 16) as u8;
            }
            d.bytes[512..520].copy_from_slice(b"EFI PART");
            let _ = find_config_partition(&mut d);
        }
    }
}
