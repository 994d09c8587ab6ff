//! `tools disk create|write|show`: the appliance's config disk on the host.
//!
//! The disk is a raw image the VM sees as its config store (virtio-blk in
//! QEMU). These commands use the appliance's own store code (lb-core's
//! `store`) over a file, so an image can ship configured: `create` makes
//! an empty store, `write` saves a config into it exactly as the
//! appliance's `save` does (the older of the two slots, flushed before its
//! header), `show` says what the appliance would boot with.

use anyhow::{Context, Result, bail};
use lb_core::config::Config;
use lb_core::envelope;
use lb_core::store::{
    BlockDevice, DiskState, IoError, KIND_CONFIG_ENVELOPE, Loaded, SlotState, Store,
};
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Default size of a new config disk.
pub const DEFAULT_SIZE_MIB: u64 = 16;
const SECTOR: usize = 512;

/// A raw disk image as a [`BlockDevice`].
pub struct FileDisk {
    file: File,
    sectors: u64,
}

impl FileDisk {
    pub fn open(path: &Path) -> Result<FileDisk> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        Ok(FileDisk {
            file,
            sectors: len / SECTOR as u64,
        })
    }
}

fn io(e: std::io::Error) -> IoError {
    IoError::Device(e.raw_os_error().unwrap_or(0) as u32)
}

impl BlockDevice for FileDisk {
    fn sector_size(&self) -> usize {
        SECTOR
    }
    fn sector_count(&self) -> u64 {
        self.sectors
    }
    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        lb_core::store::device::check_request(self.sectors, SECTOR, lba, buf.len())?;
        self.file
            .read_exact_at(buf, lba * SECTOR as u64)
            .map_err(io)
    }
    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        lb_core::store::device::check_request(self.sectors, SECTOR, lba, buf.len())?;
        self.file.write_all_at(buf, lba * SECTOR as u64).map_err(io)
    }
    fn flush(&mut self) -> Result<(), IoError> {
        self.file.sync_data().map_err(io)
    }
}

/// The store of a raw image: its config store partition when it has one
/// (`tools build`'s `appliance.img`), else the whole image (a config disk).
pub fn open_store(path: &Path) -> Result<Box<dyn BlockDevice + Send>> {
    let mut disk = FileDisk::open(path)?;
    Ok(
        match lb_core::store::partition::find_config_partition(&mut disk)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        {
            Some(extent) => Box::new(lb_core::store::partition::Partition::new(
                Box::new(disk),
                extent,
            )),
            None => Box::new(disk),
        },
    )
}

/// A random disk id (the OS seeds std's hasher keys).
fn disk_id() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish() | 1
}

/// Makes a new image of `size_mib` MiB holding an empty config store.
/// Refuses to replace an existing file.
pub fn create(path: &Path, size_mib: u64) -> Result<()> {
    if size_mib == 0 {
        bail!("the disk needs at least 1 MiB");
    }
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    file.set_len(size_mib << 20)?;
    drop(file);
    let mut disk = FileDisk::open(path)?;
    let mut store = Store::open(&mut disk).map_err(|e| anyhow::anyhow!("{e}"))?;
    let job = store
        .format(disk_id())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store
        .run(&mut disk, job)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

/// Saves `config` into the image's store, as the appliance's `save` does.
/// A blank image is formatted; a disk that is not a store is refused.
pub fn write(path: &Path, config: &Config) -> Result<String> {
    let blob = envelope::encode(config).map_err(|e| anyhow::anyhow!("encoding: {e}"))?;
    let mut disk = open_store(path)?;
    let mut store = Store::open(&mut *disk).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Read what is there first, so a damaged or unreadable slot is the one
    // replaced (what the appliance knows from its boot).
    store.load(&mut *disk, |l| envelope::decode(&l.payload), |_, _| {});
    let h = store
        .save(&mut *disk, &blob, KIND_CONFIG_ENVELOPE, disk_id())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(format!(
        "{}: saved {} bytes in slot {} (sequence {})",
        path.display(),
        blob.len(),
        h.slot.name(),
        h.sequence
    ))
}

/// What the appliance would boot with from this image.
pub struct Shown {
    pub status: String,
    pub config: Option<(Loaded, Config)>,
}

/// Reads the image's store: its state, both slots, and the config a boot
/// would take.
pub fn show(path: &Path) -> Result<Shown> {
    let mut disk = open_store(path)?;
    let mut store = Store::open(&mut *disk).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut problems = Vec::new();
    let config = store.load(
        &mut *disk,
        |l| envelope::decode(&l.payload),
        |slot, e| match e {
            Ok(store_err) => problems.push(format!("slot {}: {store_err}", slot.name())),
            Err(decode_err) => problems.push(format!("slot {}: {decode_err}", slot.name())),
        },
    );
    let mut status = match store.state {
        DiskState::Blank => "blank (formatted by the first save)\n".to_string(),
        DiskState::Foreign(why) => format!("not a config store: {why}\n"),
        DiskState::Formatted(l) => format!(
            "config store, disk id {:016x}, two slots of {} KiB\n",
            l.disk_id,
            l.capacity() / 1024
        ),
    };
    for (i, s) in store.slots.iter().enumerate() {
        let name = if i == 0 { "A" } else { "B" };
        let line = match s {
            SlotState::Empty => format!("slot {name}: empty\n"),
            SlotState::Damaged => format!("slot {name}: damaged or unreadable\n"),
            SlotState::Written(h) => format!(
                "slot {name}: sequence {}, {} bytes, crc {:08x}\n",
                h.sequence, h.len, h.crc
            ),
        };
        status.push_str(&line);
    }
    for p in problems {
        status.push_str(&p);
        status.push('\n');
    }
    Ok(Shown { status, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An image with the store partition (as `tools build` makes them, by
    /// xorriso) is written and shown through that partition.
    #[test]
    fn an_image_with_the_store_partition_uses_it() {
        let dir = std::env::temp_dir().join(format!("lbpart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let stage = dir.join("stage");
        std::fs::create_dir_all(&stage).unwrap();
        std::fs::write(stage.join("hello.txt"), b"hello").unwrap();
        let store = dir.join("store.bin");
        std::fs::File::create(&store)
            .unwrap()
            .set_len(4 << 20)
            .unwrap();
        let img = dir.join("disk.img");
        let _ = std::fs::remove_file(&img);
        let out = std::process::Command::new("xorriso")
            .args(["-as", "mkisofs", "-o"])
            .arg(&img)
            .args([
                "-append_partition",
                "2",
                lb_core::store::partition::CONFIG_STORE_TYPE_TEXT,
            ])
            .arg(&store)
            .args(["-appended_part_as_gpt"])
            .arg(&stage)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let before = std::fs::read(&img).unwrap();
        let medical: Config =
            lb_core::config::from_toml(include_str!("../../lb-core/configs/medical.toml")).unwrap();
        write(&img, &medical).unwrap();
        let shown = show(&img).unwrap();
        assert_eq!(shown.config.unwrap().1, medical);
        // Only bytes inside the partition changed.
        let extent =
            lb_core::store::partition::find_config_partition(&mut FileDisk::open(&img).unwrap())
                .unwrap()
                .unwrap();
        assert_eq!(extent.sectors, (4 << 20) / 512);
        let inside = extent.first as usize * 512..(extent.first + extent.sectors) as usize * 512;
        let after = std::fs::read(&img).unwrap();
        let changed: Vec<usize> = (0..before.len())
            .filter(|&i| before[i] != after[i])
            .collect();
        assert!(!changed.is_empty());
        assert!(
            changed.iter().all(|i| inside.contains(i)),
            "{:?}",
            changed.first()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn create_write_show_round_trip() {
        let dir = std::env::temp_dir().join(format!("lbdisk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("config.img");
        let _ = std::fs::remove_file(&img);
        create(&img, 2).unwrap();
        assert!(create(&img, 2).is_err(), "never replaces an existing file");
        let shown = show(&img).unwrap();
        assert!(shown.config.is_none());
        assert!(shown.status.contains("slot A: empty"), "{}", shown.status);
        let medical: Config =
            lb_core::config::from_toml(include_str!("../../lb-core/configs/medical.toml")).unwrap();
        write(&img, &medical).unwrap();
        let mut second = medical.clone();
        second.network.hostname = "second".into();
        let said = write(&img, &second).unwrap();
        assert!(said.contains("slot B (sequence 2)"), "{said}");
        let shown = show(&img).unwrap();
        let (loaded, config) = shown.config.unwrap();
        assert_eq!(loaded.sequence, 2);
        assert_eq!(config, second);
        // A file of random bytes is refused and left alone.
        let junk = dir.join("junk.img");
        let bytes: Vec<u8> = (0..1u32 << 20)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        std::fs::write(&junk, &bytes).unwrap();
        assert!(write(&junk, &medical).is_err());
        assert_eq!(std::fs::read(&junk).unwrap(), bytes);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
