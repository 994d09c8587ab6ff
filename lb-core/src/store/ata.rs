//! ATA commands for the SATA (AHCI) and IDE disk drivers: what to send
//! for IDENTIFY DEVICE, READ/WRITE SECTORS and FLUSH CACHE, and what the
//! IDENTIFY answer says. Both drivers in the kernel build their requests
//! here, so the register and FIS encodings are tested on the host; the
//! drivers only move bytes to the hardware.
//!
//! References: ATA/ATAPI Command Set (ACS-3) for the commands and the
//! IDENTIFY DEVICE words; Serial ATA AHCI 1.3.1 §4.2.3 and SATA 3.x §10.5.5
//! for the Register Host-to-Device FIS.

use alloc::string::String;
use core::fmt;

pub const CMD_IDENTIFY: u8 = 0xEC;
pub const CMD_READ_SECTORS: u8 = 0x20;
pub const CMD_READ_SECTORS_EXT: u8 = 0x24;
pub const CMD_READ_DMA_EXT: u8 = 0x25;
pub const CMD_WRITE_SECTORS: u8 = 0x30;
pub const CMD_WRITE_SECTORS_EXT: u8 = 0x34;
pub const CMD_WRITE_DMA_EXT: u8 = 0x35;
pub const CMD_FLUSH_CACHE: u8 = 0xE7;
pub const CMD_FLUSH_CACHE_EXT: u8 = 0xEA;

/// Status register bits.
pub const STATUS_ERR: u8 = 0x01;
pub const STATUS_DRQ: u8 = 0x08;
pub const STATUS_DF: u8 = 0x20;
pub const STATUS_BSY: u8 = 0x80;

/// Device register: LBA addressing (bit 6) plus the obsolete bits 5 and 7
/// that old devices expect set.
const DEVICE_LBA: u8 = 0xE0;

/// What a disk says about itself in its IDENTIFY DEVICE data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Model number (words 27..47), trimmed.
    pub model: String,
    /// Addressable sectors.
    pub sectors: u64,
    /// 48-bit addressing (word 83 bit 10).
    pub lba48: bool,
    /// Logical sector size in bytes (512 unless words 106/117-118 say otherwise).
    pub sector_size: usize,
}

/// Why IDENTIFY data is not usable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdentifyError {
    /// Not LBA-capable (word 49 bit 9): CHS-only disks are not driven.
    NoLba,
    /// No sectors.
    Empty,
    /// A logical sector size other than 512 or 4096 bytes.
    SectorSize(u32),
}

impl fmt::Display for IdentifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentifyError::NoLba => f.write_str("the disk does not do LBA addressing"),
            IdentifyError::Empty => f.write_str("the disk reports no sectors"),
            IdentifyError::SectorSize(n) => write!(f, "unsupported sector size {n}"),
        }
    }
}

fn word(data: &[u8; 512], i: usize) -> u16 {
    u16::from_le_bytes([data[2 * i], data[2 * i + 1]])
}

/// Parses the 512 bytes of IDENTIFY DEVICE data (256 little-endian words,
/// as read from the data port or DMAed by the HBA).
pub fn parse_identify(data: &[u8; 512]) -> Result<Identity, IdentifyError> {
    // ATA strings: two characters per word, the first in the high byte.
    let mut model = String::new();
    for i in 27..47 {
        for b in word(data, i).to_be_bytes() {
            model.push(if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            });
        }
    }
    let model = String::from(model.trim());
    if word(data, 49) & (1 << 9) == 0 {
        return Err(IdentifyError::NoLba);
    }
    let lba48 = word(data, 83) & (1 << 10) != 0;
    let sectors = if lba48 {
        (0..4).fold(0u64, |acc, k| {
            acc | u64::from(word(data, 100 + k)) << (16 * k)
        })
    } else {
        u64::from(word(data, 60)) | u64::from(word(data, 61)) << 16
    };
    if sectors == 0 {
        return Err(IdentifyError::Empty);
    }
    // Word 106 is valid when bit 14 is set and bit 15 clear; bit 12 says
    // words 117-118 hold the logical sector size in words.
    let w106 = word(data, 106);
    let sector_size = if w106 & 0xC000 == 0x4000 && w106 & (1 << 12) != 0 {
        (u32::from(word(data, 117)) | u32::from(word(data, 118)) << 16).saturating_mul(2)
    } else {
        512
    };
    if sector_size != 512 && sector_size != 4096 {
        return Err(IdentifyError::SectorSize(sector_size));
    }
    Ok(Identity {
        model,
        sectors,
        lba48,
        sector_size: sector_size as usize,
    })
}

/// What a request does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Identify,
    Read,
    Write,
    Flush,
}

/// One ATA command's register values (the task file).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taskfile {
    pub command: u8,
    pub lba: u64,
    /// Sector count as sent (0 means 256 or 65536 for the data commands).
    pub count: u16,
    pub device: u8,
    /// 48-bit command: the high-order bytes are sent too.
    pub ext: bool,
}

/// Largest count one command may carry: 256 sectors (28-bit) or 65536 (48-bit).
pub fn max_sectors(lba48: bool) -> u32 {
    if lba48 { 65536 } else { 256 }
}

/// Why a request cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// Zero sectors or more than [`max_sectors`].
    Count,
    /// The last sector is beyond what the addressing mode reaches.
    Address,
}

/// The task file for `op` on `sectors` sectors from `lba`. `dma` picks the
/// DMA commands (AHCI) instead of PIO (IDE); `lba48` is the disk's.
pub fn taskfile(
    op: Op,
    lba: u64,
    sectors: u32,
    lba48: bool,
    dma: bool,
) -> Result<Taskfile, EncodeError> {
    let ext = lba48;
    let (command, data) = match (op, ext, dma) {
        (Op::Identify, ..) => (CMD_IDENTIFY, false),
        (Op::Flush, true, _) => (CMD_FLUSH_CACHE_EXT, false),
        (Op::Flush, false, _) => (CMD_FLUSH_CACHE, false),
        (Op::Read, true, true) => (CMD_READ_DMA_EXT, true),
        (Op::Read, true, false) => (CMD_READ_SECTORS_EXT, true),
        (Op::Read, false, _) => (CMD_READ_SECTORS, true),
        (Op::Write, true, true) => (CMD_WRITE_DMA_EXT, true),
        (Op::Write, true, false) => (CMD_WRITE_SECTORS_EXT, true),
        (Op::Write, false, _) => (CMD_WRITE_SECTORS, true),
    };
    // 28-bit DMA (READ DMA 0xC8) is not needed: every SATA disk does 48-bit.
    if dma && !ext && matches!(op, Op::Read | Op::Write) {
        return Err(EncodeError::Address);
    }
    if !data {
        return Ok(Taskfile {
            command,
            lba: 0,
            count: 0,
            device: if op == Op::Identify { 0xA0 } else { DEVICE_LBA },
            ext: ext && op == Op::Flush,
        });
    }
    if sectors == 0 || sectors > max_sectors(ext) {
        return Err(EncodeError::Count);
    }
    let limit: u64 = if ext { 1 << 48 } else { 1 << 28 };
    match lba.checked_add(u64::from(sectors)) {
        Some(end) if end <= limit => {}
        _ => return Err(EncodeError::Address),
    }
    let device = if ext {
        DEVICE_LBA
    } else {
        DEVICE_LBA | ((lba >> 24) as u8 & 0x0F)
    };
    Ok(Taskfile {
        command,
        lba,
        // 256 (28-bit) and 65536 (48-bit) wrap to 0, which means exactly that.
        count: if ext {
            sectors as u16
        } else {
            (sectors & 0xFF) as u16
        },
        device,
        ext,
    })
}

/// IDE command block registers (offsets from the command block base).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reg {
    Features = 1,
    Count = 2,
    LbaLow = 3,
    LbaMid = 4,
    LbaHigh = 5,
    Device = 6,
    Command = 7,
}

impl Taskfile {
    /// Register writes for an IDE controller, in order; the command
    /// register last (writing it starts the command). For 48-bit commands
    /// each register is written twice, high-order byte first (the device
    /// keeps the previous value as the "HOB").
    pub fn register_writes(&self) -> impl Iterator<Item = (Reg, u8)> {
        let l = self.lba.to_le_bytes();
        let c = self.count.to_le_bytes();
        let high = [
            (Reg::Count, c[1]),
            (Reg::LbaLow, l[3]),
            (Reg::LbaMid, l[4]),
            (Reg::LbaHigh, l[5]),
        ];
        let low = [
            (Reg::Count, c[0]),
            (Reg::LbaLow, l[0]),
            (Reg::LbaMid, l[1]),
            (Reg::LbaHigh, l[2]),
        ];
        let ext = self.ext;
        high.into_iter()
            .filter(move |_| ext)
            .chain(low)
            .chain([(Reg::Device, self.device), (Reg::Command, self.command)])
    }

    /// The Register Host-to-Device FIS (20 bytes) an AHCI command table
    /// starts with.
    pub fn h2d_fis(&self) -> [u8; 20] {
        let l = self.lba.to_le_bytes();
        let c = self.count.to_le_bytes();
        let mut f = [0u8; 20];
        f[0] = 0x27; // FIS type: register, host to device
        f[1] = 0x80; // C: this FIS carries a command
        f[2] = self.command;
        f[4] = l[0];
        f[5] = l[1];
        f[6] = l[2];
        // The device register's LBA bit; the master/slave bit means nothing on SATA.
        f[7] = self.device & 0x4F;
        f[8] = l[3];
        f[9] = l[4];
        f[10] = l[5];
        f[12] = c[0];
        f[13] = c[1];
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identify(model: &str, lba28: u32, lba48: Option<u64>) -> [u8; 512] {
        let mut d = [0u8; 512];
        let mut set = |i: usize, v: u16| d[2 * i..2 * i + 2].copy_from_slice(&v.to_le_bytes());
        let padded = alloc::format!("{model:<40}");
        for (k, pair) in padded.as_bytes().chunks(2).enumerate() {
            set(27 + k, u16::from_be_bytes([pair[0], pair[1]]));
        }
        set(49, 1 << 9);
        set(60, lba28 as u16);
        set(61, (lba28 >> 16) as u16);
        if let Some(n) = lba48 {
            set(83, 1 << 10);
            for k in 0..4 {
                set(100 + k, (n >> (16 * k)) as u16);
            }
        }
        d
    }

    #[test]
    fn identify_of_qemu_disks() {
        let id = parse_identify(&identify("QEMU HARDDISK", 0x0FFF_FFFF, Some(50_000_000))).unwrap();
        assert_eq!(
            id,
            Identity {
                model: "QEMU HARDDISK".into(),
                sectors: 50_000_000,
                lba48: true,
                sector_size: 512
            }
        );
        let old = parse_identify(&identify("OLD", 40960, None)).unwrap();
        assert_eq!((old.sectors, old.lba48), (40960, false));
    }

    #[test]
    fn identify_refusals() {
        let mut no_lba = identify("X", 100, None);
        no_lba[98] = 0;
        no_lba[99] = 0;
        assert_eq!(parse_identify(&no_lba), Err(IdentifyError::NoLba));
        assert_eq!(
            parse_identify(&identify("X", 0, None)),
            Err(IdentifyError::Empty)
        );
        let mut odd = identify("X", 100, None);
        odd[212..214].copy_from_slice(&0x5000u16.to_le_bytes());
        odd[234..236].copy_from_slice(&1000u16.to_le_bytes());
        assert_eq!(parse_identify(&odd), Err(IdentifyError::SectorSize(2000)));
        let mut four_k = identify("X", 100, None);
        four_k[212..214].copy_from_slice(&0x5000u16.to_le_bytes());
        four_k[234..236].copy_from_slice(&2048u16.to_le_bytes());
        assert_eq!(parse_identify(&four_k).unwrap().sector_size, 4096);
        // A size in words whose double overflows (found by fuzzing).
        let mut huge = identify("X", 100, None);
        huge[212..214].copy_from_slice(&0x5000u16.to_le_bytes());
        huge[234..238].copy_from_slice(&[0xFF; 4]);
        assert_eq!(
            parse_identify(&huge),
            Err(IdentifyError::SectorSize(u32::MAX))
        );
        // Control characters in the model are shown, not trusted.
        let mut junk = identify("AB", 100, None);
        junk[54] = 0x07;
        assert!(parse_identify(&junk).unwrap().model.contains('?'));
    }

    #[test]
    fn lba48_pio_writes_high_bytes_first() {
        let t = taskfile(Op::Write, 0x0102_0304_0506, 8, true, false).unwrap();
        assert_eq!(t.command, CMD_WRITE_SECTORS_EXT);
        let w: alloc::vec::Vec<_> = t.register_writes().collect();
        assert_eq!(
            w,
            [
                (Reg::Count, 0),
                (Reg::LbaLow, 0x03),
                (Reg::LbaMid, 0x02),
                (Reg::LbaHigh, 0x01),
                (Reg::Count, 8),
                (Reg::LbaLow, 0x06),
                (Reg::LbaMid, 0x05),
                (Reg::LbaHigh, 0x04),
                (Reg::Device, 0xE0),
                (Reg::Command, 0x34),
            ]
        );
    }

    #[test]
    fn lba28_puts_bits_24_to_27_in_the_device_register() {
        let t = taskfile(Op::Read, 0x0ABC_DEF0, 256, false, false).unwrap();
        assert_eq!((t.command, t.count, t.device), (CMD_READ_SECTORS, 0, 0xEA));
        let w: alloc::vec::Vec<_> = t.register_writes().collect();
        assert_eq!(w.len(), 6);
        assert_eq!(w[0], (Reg::Count, 0));
        assert_eq!(w[5], (Reg::Command, CMD_READ_SECTORS));
        assert_eq!(
            taskfile(Op::Read, (1 << 28) - 1, 2, false, false),
            Err(EncodeError::Address)
        );
        assert_eq!(
            taskfile(Op::Read, 0, 257, false, false),
            Err(EncodeError::Count)
        );
        assert_eq!(
            taskfile(Op::Read, 0, 0, true, false),
            Err(EncodeError::Count)
        );
    }

    #[test]
    fn dma_fis_layout() {
        let t = taskfile(Op::Read, 0x0000_8000_0001, 128, true, true).unwrap();
        let f = t.h2d_fis();
        assert_eq!(&f[..4], &[0x27, 0x80, CMD_READ_DMA_EXT, 0]);
        assert_eq!(&f[4..8], &[0x01, 0x00, 0x00, 0x40]);
        assert_eq!(&f[8..11], &[0x80, 0x00, 0x00]);
        assert_eq!(&f[12..14], &[128, 0]);
        assert_eq!(
            taskfile(Op::Write, 0, 1, false, true),
            Err(EncodeError::Address)
        );
        let flush = taskfile(Op::Flush, 0, 0, true, true).unwrap();
        assert_eq!(flush.h2d_fis()[2], CMD_FLUSH_CACHE_EXT);
        let id = taskfile(Op::Identify, 0, 0, true, true).unwrap();
        assert_eq!(id.h2d_fis()[2], CMD_IDENTIFY);
    }
}
