//! The store against a simulated disk that can lose power after any write
//! or flush: whatever survives, the store reads back the config before
//! the save or the one being saved, whole, never neither and never a mix.

use super::*;
use alloc::vec::Vec;
use proptest::prelude::*;

/// A disk with a volatile write cache. Unflushed writes survive a power
/// loss in any subset, sector by sector (each sector atomic).
struct PowerLossDisk {
    durable: Vec<u8>,
    /// Sectors written since the last flush, in order.
    pending: Vec<(u64, Vec<u8>)>,
    ss: usize,
    /// Write and flush calls left before the power fails; the call that
    /// finds it at zero fails, its sectors left pending.
    budget: Option<usize>,
    dead: bool,
}

/// xorshift64*: a deterministic choice of which writes survive.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl PowerLossDisk {
    fn new(image: Vec<u8>, ss: usize) -> Self {
        PowerLossDisk {
            durable: image,
            pending: Vec::new(),
            ss,
            budget: None,
            dead: false,
        }
    }

    /// Counts an operation against the budget; false when the power fails.
    fn spend(&mut self) -> bool {
        match &mut self.budget {
            _ if self.dead => false,
            Some(0) => {
                self.dead = true;
                false
            }
            Some(n) => {
                *n -= 1;
                true
            }
            None => true,
        }
    }

    /// The image after the power came back: a random subset of the
    /// pending sectors made it.
    fn crash(mut self, seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed | 1);
        for (lba, sector) in core::mem::take(&mut self.pending) {
            if rng.next() & 1 == 1 {
                let at = lba as usize * self.ss;
                self.durable[at..at + self.ss].copy_from_slice(&sector);
            }
        }
        self.durable
    }

    /// What a read sees: durable data overlaid with pending writes.
    fn current(&self) -> Vec<u8> {
        let mut img = self.durable.clone();
        for (lba, sector) in &self.pending {
            let at = *lba as usize * self.ss;
            img[at..at + self.ss].copy_from_slice(sector);
        }
        img
    }
}

impl BlockDevice for PowerLossDisk {
    fn sector_size(&self) -> usize {
        self.ss
    }
    fn sector_count(&self) -> u64 {
        (self.durable.len() / self.ss) as u64
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        device::check_request(self.sector_count(), self.ss, lba, buf.len())?;
        if self.dead {
            return Err(IoError::Device(1));
        }
        let img = self.current();
        let at = lba as usize * self.ss;
        buf.copy_from_slice(&img[at..at + buf.len()]);
        Ok(())
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        device::check_request(self.sector_count(), self.ss, lba, buf.len())?;
        let was_dead = self.dead;
        let alive = self.spend();
        if !was_dead {
            // The write that meets the power failure may still have reached
            // the cache, sector by sector.
            for (i, s) in buf.chunks(self.ss).enumerate() {
                self.pending.push((lba + i as u64, s.to_vec()));
            }
        }
        if alive {
            Ok(())
        } else {
            Err(IoError::Device(1))
        }
    }
    fn flush(&mut self) -> Result<(), IoError> {
        if !self.spend() {
            return Err(IoError::Device(1));
        }
        let img = self.current();
        self.durable = img;
        self.pending.clear();
        Ok(())
    }
}

fn payload(len: usize, tag: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
}

fn load_any(dev: &mut dyn BlockDevice) -> Option<Vec<u8>> {
    let mut store = Store::open(dev).expect("open");
    store
        .load(dev, |l| Ok::<_, ()>(l.payload.clone()), |_, _| {})
        .map(|(_, p)| p)
}

#[test]
fn a_blank_disk_is_formatted_on_the_first_save_and_reads_back() {
    let mut d = MemDisk::new(512, 2048);
    let mut s = Store::open(&mut d).unwrap();
    assert_eq!(s.state, DiskState::Blank);
    assert_eq!(load_any(&mut d), None);
    let p = payload(3000, 1);
    let h = s.save(&mut d, &p, KIND_CONFIG_ENVELOPE, 99).unwrap();
    assert_eq!((h.slot, h.sequence), (Slot::A, 1));
    assert!(matches!(s.state, DiskState::Formatted(_)));
    assert_eq!(load_any(&mut d), Some(p.clone()));
    // The next saves alternate slots, each newer.
    let q = payload(10, 2);
    assert_eq!(s.save(&mut d, &q, 1, 0).unwrap().slot, Slot::B);
    let r = payload(600, 3);
    let h = s.save(&mut d, &r, 1, 0).unwrap();
    assert_eq!((h.slot, h.sequence), (Slot::A, 3));
    let mut again = Store::open(&mut d).unwrap();
    assert_eq!((again.state, again.slots), (s.state, s.slots));
    assert_eq!(again.candidates(), alloc::vec![Slot::A, Slot::B]);
    let (l, _) = again
        .load(&mut d, |l| Ok::<_, ()>(l.payload.clone()), |_, _| {})
        .unwrap();
    assert_eq!((l.slot, l.sequence, l.payload), (Slot::A, 3, r));
}

#[test]
fn a_foreign_disk_is_never_written_until_formatted() {
    let mut rng = Rng(0x1234_5678);
    let bytes: Vec<u8> = (0..512 * 2048).map(|_| rng.next() as u8).collect();
    let mut d = MemDisk::from_bytes(512, bytes.clone());
    let mut s = Store::open(&mut d).unwrap();
    assert_eq!(s.state, DiskState::Foreign(Foreign::NotOurs));
    assert_eq!(
        s.begin_save(&mut d, b"cfg", 1, 5).err(),
        Some(StoreError::Foreign(Foreign::NotOurs))
    );
    assert!(s.erase().is_err());
    assert_eq!(d.writes, 0);
    assert_eq!(d.bytes, bytes);
    // A partition table in sector 0 is foreign too; so is one stray byte
    // anywhere in the first 64 KiB.
    let mut d = MemDisk::new(512, 2048);
    d.bytes[BLANK_CHECK_BYTES - 1] = 1;
    assert_eq!(
        Store::open(&mut d).unwrap().state,
        DiskState::Foreign(Foreign::NotOurs)
    );
    // `store format` makes it ours, empty.
    let mut s = Store::open(&mut d).unwrap();
    let job = s.format(77).unwrap();
    s.run(&mut d, job).unwrap();
    assert!(matches!(s.state, DiskState::Formatted(l) if l.disk_id == 77));
    assert_eq!(load_any(&mut d), None);
    s.save(&mut d, b"now ours", 1, 0).unwrap();
    assert_eq!(load_any(&mut d), Some(b"now ours".to_vec()));
}

#[test]
fn labels_from_elsewhere_are_foreign() {
    let mut d = MemDisk::new(512, 2048);
    let mut s = Store::open(&mut d).unwrap();
    s.save(&mut d, b"x", 1, 3).unwrap();
    let image = d.bytes.clone();
    // The same image on a smaller disk: the label does not fit.
    let mut small = MemDisk::from_bytes(512, image[..512 * 200].to_vec());
    assert_eq!(
        Store::open(&mut small).unwrap().state,
        DiskState::Foreign(Foreign::Geometry)
    );
    // A damaged label.
    d.bytes[20] ^= 0xff;
    assert_eq!(
        Store::open(&mut d).unwrap().state,
        DiskState::Foreign(Foreign::DamagedLabel)
    );
    // A tiny disk.
    let mut tiny = MemDisk::new(512, 8);
    assert_eq!(
        Store::open(&mut tiny).unwrap().state,
        DiskState::Foreign(Foreign::TooSmall)
    );
}

#[test]
fn a_damaged_newest_slot_falls_back_to_the_other() {
    let mut d = MemDisk::new(512, 2048);
    let mut s = Store::open(&mut d).unwrap();
    s.save(&mut d, &payload(2000, 1), 1, 3).unwrap();
    let h = s.save(&mut d, &payload(2000, 2), 1, 3).unwrap();
    let label = *s.label().unwrap();
    // One flipped byte in slot B's data.
    let at = (label.slot_lba[h.slot.index()] as usize + 2) * 512;
    d.bytes[at] ^= 1;
    let mut s = Store::open(&mut d).unwrap();
    let mut rejected = Vec::new();
    let (l, _) = s
        .load(
            &mut d,
            |l| Ok::<_, ()>(l.payload.clone()),
            |slot, e| rejected.push((slot, e)),
        )
        .unwrap();
    assert_eq!(l.payload, payload(2000, 1));
    assert_eq!(rejected, alloc::vec![(Slot::B, Ok(StoreError::BadCrc))]);
    assert_eq!(s.slots[Slot::B.index()], SlotState::Damaged);
    // The caller's validation can refuse a slot too (e.g. an envelope
    // version this build does not read): the older one is tried.
    let mut d2 = MemDisk::new(512, 2048);
    let mut s2 = Store::open(&mut d2).unwrap();
    s2.save(&mut d2, b"good", 1, 3).unwrap();
    s2.save(&mut d2, b"unreadable", 1, 3).unwrap();
    let got = s2.load(
        &mut d2,
        |l| {
            if l.payload == b"good" {
                Ok(1)
            } else {
                Err("version")
            }
        },
        |_, _| {},
    );
    assert_eq!(got.map(|(l, t)| (l.sequence, t)), Some((1, 1)));
    // The next save replaces the refused slot, not the good one.
    assert_eq!(s2.slots[Slot::B.index()], SlotState::Damaged);
    let job = s2.begin_save(&mut d2, b"n", 1, 0).unwrap();
    assert_eq!((job.header().slot, job.header().sequence), (Slot::B, 2));
    // Without that knowledge, the older of two good slots is replaced.
    let mut fresh = Store::open(&mut d2).unwrap();
    let job = fresh.begin_save(&mut d2, b"n", 1, 0).unwrap();
    assert_eq!((job.header().slot, job.header().sequence), (Slot::A, 3));
}

#[test]
fn too_large_payloads_are_refused_before_any_write() {
    let mut d = MemDisk::new(512, 200);
    let mut s = Store::open(&mut d).unwrap();
    let cap = s.capacity().unwrap();
    assert!(matches!(
        s.begin_save(&mut d, &payload(cap + 1, 0), 1, 1),
        Err(StoreError::TooLarge { .. })
    ));
    assert!(s.begin_save(&mut d, &payload(cap, 0), 1, 1).is_ok());
    assert_eq!(d.writes, 0);
}

#[test]
fn erase_empties_both_slots_and_keeps_the_label() {
    let mut d = MemDisk::new(512, 2048);
    let mut s = Store::open(&mut d).unwrap();
    s.save(&mut d, b"a", 1, 3).unwrap();
    s.save(&mut d, b"b", 1, 3).unwrap();
    let job = s.erase().unwrap();
    s.run(&mut d, job).unwrap();
    let again = Store::open(&mut d).unwrap();
    assert_eq!(again.slots, [SlotState::Empty; 2]);
    assert!(matches!(again.state, DiskState::Formatted(l) if l.disk_id == 3));
    assert_eq!(load_any(&mut d), None);
}

/// Saves `new` over a disk holding `old` (if any), with the power failing
/// after `budget` writes/flushes; returns the image after the crash and
/// whether the save had finished.
fn crashed_save(
    image: Vec<u8>,
    ss: usize,
    new: &[u8],
    budget: usize,
    seed: u64,
) -> (Vec<u8>, bool) {
    let mut d = PowerLossDisk::new(image, ss);
    let mut store = Store::open(&mut d).unwrap();
    let mut job = store
        .begin_save(&mut d, new, 1, 0xd15c)
        .unwrap()
        .with_chunk(ss);
    d.budget = Some(budget);
    let mut finished = false;
    loop {
        match job.step(&mut d) {
            Ok(Progress::Done) => {
                finished = true;
                break;
            }
            Ok(Progress::More) => {}
            Err(_) => break,
        }
    }
    (d.crash(seed), finished)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Power fails after any number of writes during a save, and any
    /// subset of the unflushed sectors survives: the disk then reads back
    /// the old config or the new one, exactly.
    #[test]
    fn power_loss_during_a_save_leaves_old_or_new(
        ss in prop_oneof![Just(512usize), Just(4096usize)],
        history in 0usize..3,
        old_len in 0usize..3000,
        new_len in 0usize..3000,
        budget in 0usize..24,
        seed in any::<u64>(),
    ) {
        let mut d = MemDisk::new(ss, (256 * 1024 / ss) as u64);
        let mut s = Store::open(&mut d).unwrap();
        for i in 0..history {
            s.save(&mut d, &payload(100 + i, 0x40 + i as u8), 1, 0xd15c).unwrap();
        }
        let old = (history > 0).then(|| payload(old_len, 0xaa));
        if let Some(o) = &old {
            s.save(&mut d, o, 1, 0xd15c).unwrap();
        }
        let new = payload(new_len, 0x55);
        let (image, finished) = crashed_save(d.bytes.clone(), ss, &new, budget, seed);
        let mut after = MemDisk::from_bytes(ss, image);
        let got = load_any(&mut after);
        if finished {
            prop_assert_eq!(got, Some(new));
        } else {
            prop_assert!(got == old || got == Some(new), "neither old nor new after the crash");
        }
    }
}

/// Many saves in a row on one disk, each interrupted at a random point:
/// every boot reads the last config it read before or the one being saved.
#[test]
fn repeated_power_loss_never_loses_the_last_good_config() {
    let ss = 512;
    let mut image = alloc::vec![0u8; 128 * 1024];
    let mut rng = Rng(42);
    let mut last: Option<Vec<u8>> = None;
    for round in 0..300u32 {
        let new = payload(1 + (rng.next() % 5000) as usize, round as u8);
        let budget = (rng.next() % 20) as usize;
        let (crashed, finished) = crashed_save(image, ss, &new, budget, rng.next());
        let mut d = MemDisk::from_bytes(ss, crashed);
        let got = load_any(&mut d);
        assert!(
            got == last || got == Some(new.clone()),
            "round {round}: read neither the last good config nor the new one"
        );
        if finished {
            assert_eq!(got.as_ref(), Some(&new), "round {round}");
        }
        last = got;
        image = d.bytes;
    }
    assert!(last.is_some());
}
