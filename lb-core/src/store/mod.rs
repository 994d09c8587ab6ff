//! The persistent config store: two slots (A/B) on a small disk, each
//! holding one payload (the versioned config envelope) with a sequence
//! number, so that a power loss at any moment leaves the last good config
//! bootable.
//!
//! Saving writes the new payload into the slot that does *not* hold the
//! newest config, flushes, then writes that slot's header with the next
//! sequence number and flushes again: only then does the new config win.
//! A loss of power before the header is durable leaves the slot's old
//! header over new data, whose CRC then fails, so the other slot — the
//! newest config before the save — is the one read at boot. The header is
//! one sector, written atomically (see [`device`]).
//!
//! A disk is used only if it carries our label or is blank (all zero in
//! its first [`BLANK_CHECK_BYTES`]); a blank disk gets its label on the
//! first save. Anything else is *foreign* and is never written unless the
//! operator asks for [`Store::format`] (the console's `store format`).
//!
//! Everything here is synchronous over [`BlockDevice`]; saving is a
//! [`SaveJob`] that does one bounded piece of I/O per [`SaveJob::step`], so
//! the kernel can let the data path run between the pieces.

pub mod ata;
pub mod device;
pub mod layout;
pub mod partition;

#[cfg(test)]
mod tests;

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

pub use device::{BlockDevice, IoError, MemDisk};
pub use layout::{KIND_CONFIG_ENVELOPE, Label, LabelError, Slot, SlotHeader};

use crate::envelope::crc32;
use layout::HeaderError;

/// Largest payload a slot is made for: the envelope's limit plus room for
/// a signed wrapper around it.
pub const MAX_PAYLOAD: usize =
    crate::envelope::MAX_PAYLOAD as usize + crate::envelope::HEADER_LEN + 4096;
/// A disk that is all zero this far is blank (ours to format).
pub const BLANK_CHECK_BYTES: usize = 64 * 1024;
/// Bytes one save step writes (and one read request reads) at most.
pub const CHUNK_BYTES: usize = 64 * 1024;

/// What is on the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskState {
    /// All zero: formatted on the first save.
    Blank,
    /// A config store.
    Formatted(Label),
    /// Not a config store: never written without [`Store::format`].
    Foreign(Foreign),
}

/// Why a disk is not taken as a config store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Foreign {
    /// Data where the label belongs (a partition table, a file system,
    /// random bytes...).
    NotOurs,
    /// Our label, damaged.
    DamagedLabel,
    /// Formatted by a newer build (layout version).
    NewerLayout(u16),
    /// Our label, for a disk of another size or sector size.
    Geometry,
    /// Too small to hold two slots.
    TooSmall,
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Foreign::NotOurs => f.write_str("it holds data that is not a config store"),
            Foreign::DamagedLabel => f.write_str("its store label is damaged"),
            Foreign::NewerLayout(v) => {
                write!(f, "it was formatted by a newer version (store layout {v})")
            }
            Foreign::Geometry => f.write_str("its store label does not match the disk's size"),
            Foreign::TooSmall => f.write_str("it is too small for a config store"),
        }
    }
}

/// What one slot holds, as far as its header (and, once read, its payload
/// CRC) tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// Never written or erased.
    Empty,
    /// A valid header; the payload is checked when read.
    Written(SlotHeader),
    /// A header or payload that does not check out (an interrupted save,
    /// or damage), or a payload the caller refused (see [`Store::load`]).
    Damaged,
}

/// Why the store could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    Io(IoError),
    /// The disk is not ours (see [`Foreign`]); `store format` makes it ours.
    Foreign(Foreign),
    /// The payload is larger than a slot.
    TooLarge {
        len: usize,
        capacity: usize,
    },
    /// A payload read back does not match its header's CRC.
    BadCrc,
}

impl From<IoError> for StoreError {
    fn from(e: IoError) -> Self {
        StoreError::Io(e)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io(e) => write!(f, "disk error: {e}"),
            StoreError::Foreign(why) => write!(
                f,
                "the disk is not a config store ({why}); `store format` erases it and makes it one"
            ),
            StoreError::TooLarge { len, capacity } => write!(
                f,
                "the config is {len} bytes, a slot of this disk holds {capacity}"
            ),
            StoreError::BadCrc => f.write_str("the slot's data does not match its checksum"),
        }
    }
}

/// A payload read from a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    pub slot: Slot,
    pub sequence: u64,
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// The store on one disk: what its label and slot headers say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Store {
    pub state: DiskState,
    pub slots: [SlotState; 2],
    /// Slots whose payload was read back and matched its CRC.
    verified: [bool; 2],
    sector_size: usize,
    sectors: u64,
}

fn read_sector(dev: &mut dyn BlockDevice, lba: u64) -> Result<Vec<u8>, IoError> {
    let mut s = vec![0u8; dev.sector_size()];
    dev.read(lba, &mut s)?;
    Ok(s)
}

/// Reads `len` bytes starting at sector `lba`, in chunks.
fn read_bytes(dev: &mut dyn BlockDevice, lba: u64, len: usize) -> Result<Vec<u8>, IoError> {
    let ss = dev.sector_size();
    let mut out = vec![0u8; len.div_ceil(ss) * ss];
    let per = (CHUNK_BYTES / ss).max(1) * ss;
    for (i, chunk) in out.chunks_mut(per).enumerate() {
        dev.read(lba + (i * per / ss) as u64, chunk)?;
    }
    out.truncate(len);
    Ok(out)
}

impl Store {
    /// Reads the label and both slot headers.
    pub fn open(dev: &mut dyn BlockDevice) -> Result<Store, IoError> {
        let (ss, sectors) = (dev.sector_size(), dev.sector_count());
        let mut store = Store {
            state: DiskState::Blank,
            slots: [SlotState::Empty; 2],
            verified: [false; 2],
            sector_size: ss,
            sectors,
        };
        if Label::plan(ss, sectors, 1, 0).is_none() {
            store.state = DiskState::Foreign(Foreign::TooSmall);
            return Ok(store);
        }
        let first = read_sector(dev, 0)?;
        let label = match Label::decode(&first, ss, sectors) {
            Ok(l) => l,
            Err(LabelError::NoMagic) => {
                let check = BLANK_CHECK_BYTES.min(sectors as usize * ss);
                let head = read_bytes(dev, 0, check)?;
                if !head.iter().all(|&b| b == 0) {
                    store.state = DiskState::Foreign(Foreign::NotOurs);
                }
                return Ok(store);
            }
            Err(LabelError::BadCrc) => {
                store.state = DiskState::Foreign(Foreign::DamagedLabel);
                return Ok(store);
            }
            Err(LabelError::NewerLayout(v)) => {
                store.state = DiskState::Foreign(Foreign::NewerLayout(v));
                return Ok(store);
            }
            Err(LabelError::Geometry) => {
                store.state = DiskState::Foreign(Foreign::Geometry);
                return Ok(store);
            }
        };
        store.state = DiskState::Formatted(label);
        for slot in [Slot::A, Slot::B] {
            let s = read_sector(dev, label.slot_lba[slot.index()])?;
            store.slots[slot.index()] = match SlotHeader::decode(&s, slot, &label) {
                Ok(h) => SlotState::Written(h),
                Err(HeaderError::Empty) => SlotState::Empty,
                Err(HeaderError::Invalid) => SlotState::Damaged,
            };
        }
        Ok(store)
    }

    pub fn label(&self) -> Option<&Label> {
        match &self.state {
            DiskState::Formatted(l) => Some(l),
            _ => None,
        }
    }

    /// Bytes of payload a slot holds (of the label, or of the label a
    /// first save would write).
    pub fn capacity(&self) -> Option<usize> {
        match &self.state {
            DiskState::Formatted(l) => Some(l.capacity()),
            DiskState::Blank => {
                Label::plan(self.sector_size, self.sectors, MAX_PAYLOAD, 0).map(|l| l.capacity())
            }
            DiskState::Foreign(_) => None,
        }
    }

    fn header(&self, slot: Slot) -> Option<&SlotHeader> {
        match &self.slots[slot.index()] {
            SlotState::Written(h) => Some(h),
            _ => None,
        }
    }

    /// Slots with a valid header, newest first.
    pub fn candidates(&self) -> Vec<Slot> {
        let mut v: Vec<&SlotHeader> = [Slot::A, Slot::B]
            .into_iter()
            .filter_map(|s| self.header(s))
            .collect();
        v.sort_by_key(|h| core::cmp::Reverse(h.sequence));
        v.into_iter().map(|h| h.slot).collect()
    }

    /// The newest sequence number with a valid header (0 if none).
    pub fn newest_sequence(&self) -> u64 {
        [Slot::A, Slot::B]
            .into_iter()
            .filter_map(|s| self.header(s))
            .map(|h| h.sequence)
            .max()
            .unwrap_or(0)
    }

    /// Reads and checks the payload of `slot`; a payload that fails its
    /// CRC marks the slot damaged.
    pub fn read_slot(
        &mut self,
        dev: &mut dyn BlockDevice,
        slot: Slot,
    ) -> Result<Loaded, StoreError> {
        let (Some(label), Some(h)) = (self.label().copied(), self.header(slot).copied()) else {
            return Err(StoreError::BadCrc);
        };
        let payload = read_bytes(dev, label.slot_lba[slot.index()] + 1, h.len as usize)?;
        if crc32(&payload) != h.crc {
            self.slots[slot.index()] = SlotState::Damaged;
            return Err(StoreError::BadCrc);
        }
        self.verified[slot.index()] = true;
        Ok(Loaded {
            slot,
            sequence: h.sequence,
            kind: h.kind,
            payload,
        })
    }

    /// The newest slot whose payload checks out and that `accept` takes
    /// (the caller's validation, e.g. decoding the envelope), with what
    /// `accept` made of it. Slots that fail are reported to `rejected` and
    /// count as damaged from then on (the next save goes there).
    pub fn load<T, E>(
        &mut self,
        dev: &mut dyn BlockDevice,
        mut accept: impl FnMut(&Loaded) -> Result<T, E>,
        mut rejected: impl FnMut(Slot, Result<StoreError, E>),
    ) -> Option<(Loaded, T)> {
        for slot in self.candidates() {
            match self.read_slot(dev, slot) {
                Ok(l) => match accept(&l) {
                    Ok(t) => return Some((l, t)),
                    Err(e) => {
                        // Unusable to this build: a save may replace it.
                        self.slots[slot.index()] = SlotState::Damaged;
                        rejected(slot, Err(e));
                    }
                },
                Err(e) => rejected(slot, Ok(e)),
            }
        }
        None
    }

    /// The newest slot whose payload checks out (read back unless it was
    /// already), so a save never overwrites the only good config because a
    /// damaged slot carries a higher sequence number.
    fn newest_good(&mut self, dev: &mut dyn BlockDevice) -> Result<Option<Slot>, StoreError> {
        for slot in self.candidates() {
            if self.verified[slot.index()] {
                return Ok(Some(slot));
            }
            match self.read_slot(dev, slot) {
                Ok(_) => return Ok(Some(slot)),
                Err(StoreError::BadCrc) => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Starts saving `payload` (of `kind`) into the slot that does not
    /// hold the newest good config; a blank disk is labelled first with
    /// `disk_id`. Foreign disks are refused.
    pub fn begin_save(
        &mut self,
        dev: &mut dyn BlockDevice,
        payload: &[u8],
        kind: u16,
        disk_id: u64,
    ) -> Result<SaveJob, StoreError> {
        let (label, phase) = match self.state {
            DiskState::Foreign(why) => return Err(StoreError::Foreign(why)),
            DiskState::Formatted(l) => (l, Phase::Data),
            DiskState::Blank => (self.plan(disk_id)?, Phase::Format(0)),
        };
        if payload.len() > label.capacity() {
            return Err(StoreError::TooLarge {
                len: payload.len(),
                capacity: label.capacity(),
            });
        }
        let target = match self.newest_good(dev)? {
            Some(newest) => newest.other(),
            None => Slot::A,
        };
        let header = SlotHeader {
            slot: target,
            kind,
            sequence: self.newest_sequence() + 1,
            len: payload.len() as u32,
            crc: crc32(payload),
            disk_id: label.disk_id,
        };
        let ss = self.sector_size;
        let mut data = payload.to_vec();
        data.resize(payload.len().div_ceil(ss) * ss, 0);
        Ok(SaveJob::new(JobKind::Save, label, phase, header, data))
    }

    fn plan(&self, disk_id: u64) -> Result<Label, StoreError> {
        Label::plan(self.sector_size, self.sectors, MAX_PAYLOAD, disk_id)
            .ok_or(StoreError::Foreign(Foreign::TooSmall))
    }

    /// Starts making the disk an empty config store, whatever it held: a
    /// new label (with `disk_id`) and both slots empty.
    pub fn format(&self, disk_id: u64) -> Result<SaveJob, StoreError> {
        let label = self.plan(disk_id)?;
        Ok(SaveJob::new(
            JobKind::Format,
            label,
            Phase::Format(0),
            SlotHeader::empty(label.disk_id),
            Vec::new(),
        ))
    }

    /// Starts erasing both slots (factory reset); the label stays. Nothing
    /// to do on a blank disk; refused on a disk that is not ours.
    pub fn erase(&self) -> Result<SaveJob, StoreError> {
        let (label, phase) = match self.state {
            DiskState::Formatted(label) => (label, Phase::Format(1)),
            DiskState::Blank => (self.plan(0)?, Phase::Done),
            DiskState::Foreign(why) => return Err(StoreError::Foreign(why)),
        };
        Ok(SaveJob::new(
            JobKind::Erase,
            label,
            phase,
            SlotHeader::empty(label.disk_id),
            Vec::new(),
        ))
    }

    /// Records what a finished job did.
    pub fn commit(&mut self, job: &SaveJob) {
        if job.phase != Phase::Done {
            return;
        }
        match job.kind {
            JobKind::Save => {
                self.state = DiskState::Formatted(job.label);
                self.slots[job.header.slot.index()] = SlotState::Written(job.header);
                self.verified[job.header.slot.index()] = true;
            }
            JobKind::Format => {
                self.state = DiskState::Formatted(job.label);
                self.slots = [SlotState::Empty; 2];
                self.verified = [false; 2];
            }
            JobKind::Erase => {
                self.slots = [SlotState::Empty; 2];
                self.verified = [false; 2];
            }
        }
    }

    /// Runs a job to its end (host tool, tests).
    pub fn run(
        &mut self,
        dev: &mut dyn BlockDevice,
        mut job: SaveJob,
    ) -> Result<SlotHeader, StoreError> {
        while job.step(dev)? == Progress::More {}
        self.commit(&job);
        Ok(job.header)
    }

    /// Saves `payload` now (host tool, tests).
    pub fn save(
        &mut self,
        dev: &mut dyn BlockDevice,
        payload: &[u8],
        kind: u16,
        disk_id: u64,
    ) -> Result<SlotHeader, StoreError> {
        let job = self.begin_save(dev, payload, kind, disk_id)?;
        self.run(dev, job)
    }
}

/// Where a [`SaveJob`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Formatting: 0 = write the label, 1 = empty slot A's header, 2 = slot
    /// B's, 3 = flush.
    Format(u8),
    /// Writing payload sectors.
    Data,
    FlushData,
    Header,
    FlushHeader,
    Done,
}

/// Whether a job has more to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    More,
    Done,
}

/// What a [`SaveJob`] does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobKind {
    /// Write a payload into a slot (labelling a blank disk first).
    Save,
    /// Write a new label and empty both slots.
    Format,
    /// Empty both slots.
    Erase,
}

/// A save, format or erase in progress: one bounded piece of I/O per
/// [`step`](Self::step).
#[derive(Clone, Debug)]
pub struct SaveJob {
    kind: JobKind,
    label: Label,
    header: SlotHeader,
    /// The payload padded to whole sectors.
    data: Vec<u8>,
    /// Payload bytes written so far.
    written: usize,
    phase: Phase,
    /// Bytes per data step.
    chunk: usize,
}

impl SaveJob {
    fn new(
        kind: JobKind,
        label: Label,
        phase: Phase,
        header: SlotHeader,
        data: Vec<u8>,
    ) -> SaveJob {
        SaveJob {
            kind,
            label,
            header,
            data,
            written: 0,
            phase,
            chunk: CHUNK_BYTES,
        }
    }

    /// Bytes per data step (tests use one sector to stop between any two
    /// writes).
    pub fn with_chunk(mut self, bytes: usize) -> SaveJob {
        self.chunk = bytes.max(1);
        self
    }

    /// The slot header this job writes (sequence number, slot).
    pub fn header(&self) -> &SlotHeader {
        &self.header
    }

    /// Payload bytes written so far, and in all.
    pub fn progress(&self) -> (usize, usize) {
        let len = self.header.len as usize;
        (self.written.min(len), len)
    }

    /// Does the next piece of I/O.
    pub fn step(&mut self, dev: &mut dyn BlockDevice) -> Result<Progress, StoreError> {
        let ss = dev.sector_size();
        let label = self.label;
        match self.phase {
            Phase::Format(0) => {
                let mut s = vec![0u8; ss];
                label.encode(&mut s);
                dev.write(0, &s)?;
                self.phase = Phase::Format(1);
            }
            Phase::Format(n @ (1 | 2)) => {
                let zero = vec![0u8; ss];
                dev.write(label.slot_lba[usize::from(n - 1)], &zero)?;
                self.phase = Phase::Format(n + 1);
            }
            Phase::Format(_) => {
                dev.flush()?;
                self.phase = match self.kind {
                    JobKind::Save => Phase::Data,
                    JobKind::Format | JobKind::Erase => Phase::Done,
                };
            }
            Phase::Data => {
                let per = (self.chunk / ss).max(1) * ss;
                let end = (self.written + per).min(self.data.len());
                if self.written < end {
                    let lba =
                        label.slot_lba[self.header.slot.index()] + 1 + (self.written / ss) as u64;
                    dev.write(lba, &self.data[self.written..end])?;
                    self.written = end;
                }
                if self.written >= self.data.len() {
                    self.phase = Phase::FlushData;
                }
            }
            Phase::FlushData => {
                dev.flush()?;
                self.phase = Phase::Header;
            }
            Phase::Header => {
                let mut s = vec![0u8; ss];
                self.header.encode(&mut s);
                dev.write(label.slot_lba[self.header.slot.index()], &s)?;
                self.phase = Phase::FlushHeader;
            }
            Phase::FlushHeader => {
                dev.flush()?;
                self.phase = Phase::Done;
            }
            Phase::Done => {}
        }
        Ok(if self.phase == Phase::Done {
            Progress::Done
        } else {
            Progress::More
        })
    }
}
