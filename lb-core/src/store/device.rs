//! The block-device trait the config store runs on, and an in-memory disk.
//!
//! Every disk controller the appliance drives (virtio-blk today; AHCI/SATA
//! and ATA/IDE come with the hypervisor issue) implements [`BlockDevice`];
//! the store in [`super`] and the host tool's disk images only see this
//! trait. Contract, which the store's power-loss safety rests on:
//! * I/O is in whole sectors: `buf.len()` is a non-zero multiple of
//!   [`BlockDevice::sector_size`], and `lba + buf.len() / sector_size` is at
//!   most [`BlockDevice::sector_count`] (else [`IoError::OutOfRange`] /
//!   [`IoError::Misaligned`], and nothing is touched).
//! * A write may sit in a volatile cache until [`BlockDevice::flush`]
//!   returns `Ok`; after that every earlier write is durable. Writes that
//!   were not flushed may survive a power loss in any subset and any order.
//! * One sector is written atomically: after a power loss it holds either
//!   its old or its new content, never a mix (what disks and hypervisors
//!   promise for a logical sector).
//! * Calls block until done. Drivers that must not stall the caller for
//!   long keep requests small; the store writes in chunks (see
//!   [`super::SaveJob`]) so a caller can yield between them.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Why a block request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoError {
    /// The request reaches past the last sector.
    OutOfRange,
    /// The buffer is empty or not a whole number of sectors.
    Misaligned,
    /// The device is read-only.
    ReadOnly,
    /// The device reported an error (driver-specific code).
    Device(u32),
}

impl fmt::Display for IoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IoError::OutOfRange => f.write_str("request past the end of the disk"),
            IoError::Misaligned => f.write_str("request is not a whole number of sectors"),
            IoError::ReadOnly => f.write_str("the disk is read-only"),
            IoError::Device(c) => write!(f, "the disk reported error {c}"),
        }
    }
}

/// A disk: fixed-size sectors addressed from 0 (see the module docs for
/// the contract).
pub trait BlockDevice {
    /// Bytes per sector (512 or 4096).
    fn sector_size(&self) -> usize;
    /// Number of sectors.
    fn sector_count(&self) -> u64;
    /// Reads `buf.len() / sector_size()` sectors starting at `lba`.
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError>;
    /// Writes `buf.len() / sector_size()` sectors starting at `lba`.
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError>;
    /// Makes every earlier write durable.
    fn flush(&mut self) -> Result<(), IoError>;
}

/// Checks a request against the contract; returns the sector count.
pub fn check_request(
    dev_sectors: u64,
    sector_size: usize,
    lba: u64,
    len: usize,
) -> Result<u64, IoError> {
    if len == 0 || sector_size == 0 || !len.is_multiple_of(sector_size) {
        return Err(IoError::Misaligned);
    }
    let n = (len / sector_size) as u64;
    match lba.checked_add(n) {
        Some(end) if end <= dev_sectors => Ok(n),
        _ => Err(IoError::OutOfRange),
    }
}

/// A disk in RAM: for tests, and for the host tool building images.
#[derive(Clone, Debug)]
pub struct MemDisk {
    pub bytes: Vec<u8>,
    sector_size: usize,
    /// Write and flush calls so far (tests check that nothing was written).
    pub writes: u64,
    pub flushes: u64,
}

impl MemDisk {
    /// A zeroed disk of `sectors` sectors.
    pub fn new(sector_size: usize, sectors: u64) -> MemDisk {
        MemDisk::from_bytes(sector_size, vec![0; sector_size * sectors as usize])
    }

    /// A disk holding `bytes` (cut to whole sectors).
    pub fn from_bytes(sector_size: usize, mut bytes: Vec<u8>) -> MemDisk {
        let whole = bytes.len() / sector_size * sector_size;
        bytes.truncate(whole);
        MemDisk {
            bytes,
            sector_size,
            writes: 0,
            flushes: 0,
        }
    }
}

impl BlockDevice for MemDisk {
    fn sector_size(&self) -> usize {
        self.sector_size
    }

    fn sector_count(&self) -> u64 {
        (self.bytes.len() / self.sector_size) as u64
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_request(self.sector_count(), self.sector_size, lba, buf.len())?;
        let at = lba as usize * self.sector_size;
        buf.copy_from_slice(&self.bytes[at..at + buf.len()]);
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        check_request(self.sector_count(), self.sector_size, lba, buf.len())?;
        let at = lba as usize * self.sector_size;
        self.bytes[at..at + buf.len()].copy_from_slice(buf);
        self.writes += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.flushes += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_checked() {
        let mut d = MemDisk::new(512, 4);
        let mut buf = [0u8; 512];
        assert_eq!(d.read(4, &mut buf), Err(IoError::OutOfRange));
        assert_eq!(d.read(u64::MAX, &mut buf), Err(IoError::OutOfRange));
        assert_eq!(d.read(0, &mut buf[..100]), Err(IoError::Misaligned));
        assert_eq!(d.write(0, &[]), Err(IoError::Misaligned));
        assert_eq!(d.write(3, &[7u8; 512]), Ok(()));
        d.read(3, &mut buf).unwrap();
        assert_eq!(buf, [7u8; 512]);
        assert_eq!(d.writes, 1);
    }
}
