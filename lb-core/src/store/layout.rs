//! On-disk layout of the config store: a label in sector 0 and two slots.
//!
//! ```text
//! LBA 0                  label (one sector)
//! LBA a                  slot A: header sector, then payload sectors
//! LBA a + slot_sectors   slot B: header sector, then payload sectors
//! ```
//! `a` is 4 KiB into the disk and both slots are whole multiples of 4 KiB,
//! so 4K-sector disks behind 512-byte emulation never share a physical
//! sector between the label, slot A and slot B.
//!
//! Label (little-endian, the rest of the sector zero):
//! ```text
//! 0..8    magic b"LBMSTORE"
//! 8..10   layout version (u16), 1
//! 10..12  zero
//! 12..16  sector size (u32)
//! 16..24  first LBA of slot A (u64)
//! 24..32  first LBA of slot B (u64)
//! 32..36  sectors per slot, header included (u32)
//! 36..44  disk id (u64, random at format)
//! 44..48  CRC-32 of bytes 0..44
//! ```
//! Slot header:
//! ```text
//! 0..8    magic b"LBMSLOT1"
//! 8..10   slot (u16: 0 = A, 1 = B)
//! 10..12  payload kind (u16: 1 = config envelope)
//! 12..20  sequence number (u64, higher is newer)
//! 20..24  payload length (u32)
//! 24..28  CRC-32 of the payload
//! 28..36  disk id (u64, the label's)
//! 36..40  CRC-32 of bytes 0..36
//! ```
//! The payload is opaque to the store: the caller validates it (today the
//! versioned config envelope; a signed wrapper may come as another kind).
//! The disk id in each header ties it to one format of one disk: after a
//! `store format`, headers left from before never validate.

use crate::envelope::crc32;

pub const LABEL_MAGIC: [u8; 8] = *b"LBMSTORE";
pub const SLOT_MAGIC: [u8; 8] = *b"LBMSLOT1";
/// The layout this build writes and reads.
pub const LAYOUT_VERSION: u16 = 1;
/// Bytes of the label and of a slot header that carry data.
pub const LABEL_LEN: usize = 48;
pub const HEADER_LEN: usize = 40;
/// Slots start on this boundary and are a multiple of it.
pub const ALIGN_BYTES: u64 = 4096;

/// Payload kinds.
pub const KIND_CONFIG_ENVELOPE: u16 = 1;

/// Which slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn index(self) -> usize {
        match self {
            Slot::A => 0,
            Slot::B => 1,
        }
    }

    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Slot::A => "A",
            Slot::B => "B",
        }
    }

    fn from_index(i: u16) -> Option<Slot> {
        match i {
            0 => Some(Slot::A),
            1 => Some(Slot::B),
            _ => None,
        }
    }
}

/// Where the slots are on a formatted disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Label {
    pub sector_size: u32,
    pub slot_lba: [u64; 2],
    /// Sectors per slot, header included.
    pub slot_sectors: u32,
    pub disk_id: u64,
}

/// Why sector 0 is not a label this build can use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelError {
    NoMagic,
    BadCrc,
    /// Written by a newer build (its layout version).
    NewerLayout(u16),
    /// The label's geometry does not fit this disk.
    Geometry,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn le64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

impl Label {
    /// The layout for a disk of `sectors` sectors of `sector_size` bytes
    /// whose slots hold at most `max_payload` bytes; `None` when the disk
    /// is too small for two slots of one payload sector each.
    pub fn plan(
        sector_size: usize,
        sectors: u64,
        max_payload: usize,
        disk_id: u64,
    ) -> Option<Label> {
        let ss = sector_size as u64;
        if ss == 0 || !(512..=65536).contains(&ss) {
            return None;
        }
        let align = (ALIGN_BYTES / ss).max(1);
        let want = 1 + (max_payload as u64).div_ceil(ss);
        let want = want.div_ceil(align) * align;
        let room = sectors.checked_sub(align)? / 2 / align * align;
        let slot_sectors = want.min(room);
        if slot_sectors < 2 || slot_sectors > u64::from(u32::MAX) {
            return None;
        }
        Some(Label {
            sector_size: sector_size as u32,
            slot_lba: [align, align + slot_sectors],
            slot_sectors: slot_sectors as u32,
            disk_id,
        })
    }

    /// Bytes of payload a slot holds.
    pub fn capacity(&self) -> usize {
        (self.slot_sectors as usize - 1) * self.sector_size as usize
    }

    pub fn encode(&self, sector: &mut [u8]) {
        sector.fill(0);
        sector[0..8].copy_from_slice(&LABEL_MAGIC);
        sector[8..10].copy_from_slice(&LAYOUT_VERSION.to_le_bytes());
        sector[12..16].copy_from_slice(&self.sector_size.to_le_bytes());
        sector[16..24].copy_from_slice(&self.slot_lba[0].to_le_bytes());
        sector[24..32].copy_from_slice(&self.slot_lba[1].to_le_bytes());
        sector[32..36].copy_from_slice(&self.slot_sectors.to_le_bytes());
        sector[36..44].copy_from_slice(&self.disk_id.to_le_bytes());
        let crc = crc32(&sector[..44]);
        sector[44..48].copy_from_slice(&crc.to_le_bytes());
    }

    /// Reads a label from sector 0 of a disk of `sectors` sectors of
    /// `sector_size` bytes.
    pub fn decode(sector: &[u8], sector_size: usize, sectors: u64) -> Result<Label, LabelError> {
        if sector.len() < LABEL_LEN || sector[0..8] != LABEL_MAGIC {
            return Err(LabelError::NoMagic);
        }
        if crc32(&sector[..44]) != le32(sector, 44) {
            return Err(LabelError::BadCrc);
        }
        let version = le16(sector, 8);
        if version != LAYOUT_VERSION {
            return Err(LabelError::NewerLayout(version));
        }
        let label = Label {
            sector_size: le32(sector, 12),
            slot_lba: [le64(sector, 16), le64(sector, 24)],
            slot_sectors: le32(sector, 32),
            disk_id: le64(sector, 36),
        };
        let n = u64::from(label.slot_sectors);
        let fits = |lba: u64| lba >= 1 && lba.checked_add(n).is_some_and(|end| end <= sectors);
        let apart = label.slot_lba[0].abs_diff(label.slot_lba[1]) >= n;
        if label.sector_size as usize != sector_size
            || n < 2
            || !fits(label.slot_lba[0])
            || !fits(label.slot_lba[1])
            || !apart
        {
            return Err(LabelError::Geometry);
        }
        Ok(label)
    }
}

/// A slot's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotHeader {
    pub slot: Slot,
    pub kind: u16,
    pub sequence: u64,
    pub len: u32,
    pub crc: u32,
    pub disk_id: u64,
}

/// Why a slot header does not count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// All zero: never written, or erased.
    Empty,
    /// Anything else that is not a valid header (torn write, damage,
    /// another slot's or another format's header).
    Invalid,
}

impl SlotHeader {
    /// What format and erase jobs carry: no slot contents.
    pub fn empty(disk_id: u64) -> SlotHeader {
        SlotHeader {
            slot: Slot::A,
            kind: 0,
            sequence: 0,
            len: 0,
            crc: 0,
            disk_id,
        }
    }

    pub fn encode(&self, sector: &mut [u8]) {
        sector.fill(0);
        sector[0..8].copy_from_slice(&SLOT_MAGIC);
        sector[8..10].copy_from_slice(&(self.slot.index() as u16).to_le_bytes());
        sector[10..12].copy_from_slice(&self.kind.to_le_bytes());
        sector[12..20].copy_from_slice(&self.sequence.to_le_bytes());
        sector[20..24].copy_from_slice(&self.len.to_le_bytes());
        sector[24..28].copy_from_slice(&self.crc.to_le_bytes());
        sector[28..36].copy_from_slice(&self.disk_id.to_le_bytes());
        let crc = crc32(&sector[..36]);
        sector[36..40].copy_from_slice(&crc.to_le_bytes());
    }

    /// The header of slot `slot` on the disk of `label`.
    pub fn decode(sector: &[u8], slot: Slot, label: &Label) -> Result<SlotHeader, HeaderError> {
        if sector.len() < HEADER_LEN {
            return Err(HeaderError::Invalid);
        }
        if sector.iter().all(|&b| b == 0) {
            return Err(HeaderError::Empty);
        }
        if sector[0..8] != SLOT_MAGIC || crc32(&sector[..36]) != le32(sector, 36) {
            return Err(HeaderError::Invalid);
        }
        let h = SlotHeader {
            slot: Slot::from_index(le16(sector, 8)).ok_or(HeaderError::Invalid)?,
            kind: le16(sector, 10),
            sequence: le64(sector, 12),
            len: le32(sector, 20),
            crc: le32(sector, 24),
            disk_id: le64(sector, 28),
        };
        if h.slot != slot || h.disk_id != label.disk_id || h.len as usize > label.capacity() {
            return Err(HeaderError::Invalid);
        }
        Ok(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_aligns_and_caps_the_slots() {
        // 16 MiB of 512-byte sectors, 4 MiB payloads.
        let l = Label::plan(512, 32768, 4 << 20, 7).unwrap();
        assert_eq!(l.slot_lba[0], 8);
        assert_eq!(l.slot_sectors % 8, 0);
        assert!(l.capacity() >= 4 << 20);
        assert_eq!(l.slot_lba[1], 8 + u64::from(l.slot_sectors));
        // A small disk: the slots share what there is.
        let l = Label::plan(512, 128, 4 << 20, 7).unwrap();
        assert_eq!((l.slot_lba, l.slot_sectors), ([8, 64], 56));
        assert!(l.slot_lba[1] + u64::from(l.slot_sectors) <= 128);
        // 4K sectors.
        let l = Label::plan(4096, 100, 4 << 20, 7).unwrap();
        assert_eq!(l.slot_lba[0], 1);
        // Too small, odd sector sizes.
        assert_eq!(Label::plan(512, 9, 4096, 7), None);
        assert_eq!(Label::plan(100, 1000, 4096, 7), None);
        assert_eq!(Label::plan(0, 1000, 4096, 7), None);
    }

    #[test]
    fn label_round_trips_and_rejects_damage() {
        let l = Label::plan(512, 1000, 1 << 20, 0xfeed).unwrap();
        let mut s = [0u8; 512];
        l.encode(&mut s);
        assert_eq!(Label::decode(&s, 512, 1000), Ok(l));
        assert_eq!(Label::decode(&s, 4096, 1000), Err(LabelError::Geometry));
        assert_eq!(Label::decode(&s, 512, 100), Err(LabelError::Geometry));
        let mut bad = s;
        bad[20] ^= 1;
        assert_eq!(Label::decode(&bad, 512, 1000), Err(LabelError::BadCrc));
        let mut bad = s;
        bad[0] = b'X';
        assert_eq!(Label::decode(&bad, 512, 1000), Err(LabelError::NoMagic));
        let mut newer = s;
        newer[8..10].copy_from_slice(&2u16.to_le_bytes());
        let crc = crc32(&newer[..44]);
        newer[44..48].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            Label::decode(&newer, 512, 1000),
            Err(LabelError::NewerLayout(2))
        );
    }

    #[test]
    fn header_round_trips_and_belongs_to_one_slot_of_one_disk() {
        let l = Label::plan(512, 1000, 1 << 20, 0xfeed).unwrap();
        let h = SlotHeader {
            slot: Slot::B,
            kind: KIND_CONFIG_ENVELOPE,
            sequence: 42,
            len: 1000,
            crc: 0x1234_5678,
            disk_id: 0xfeed,
        };
        let mut s = [0u8; 512];
        h.encode(&mut s);
        assert_eq!(SlotHeader::decode(&s, Slot::B, &l), Ok(h));
        assert_eq!(
            SlotHeader::decode(&s, Slot::A, &l),
            Err(HeaderError::Invalid)
        );
        let other_disk = Label { disk_id: 1, ..l };
        assert_eq!(
            SlotHeader::decode(&s, Slot::B, &other_disk),
            Err(HeaderError::Invalid)
        );
        let too_long = SlotHeader {
            len: l.capacity() as u32 + 1,
            ..h
        };
        too_long.encode(&mut s);
        assert_eq!(
            SlotHeader::decode(&s, Slot::B, &l),
            Err(HeaderError::Invalid)
        );
        assert_eq!(
            SlotHeader::decode(&[0u8; 512], Slot::B, &l),
            Err(HeaderError::Empty)
        );
    }
}
