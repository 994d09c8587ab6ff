//! Disks for the config store.
//!
//! Each controller driver implements lb-core's
//! [`BlockDevice`](lb_core::store::BlockDevice) trait (sector size and
//! count, read, write, flush; its contract is in `lb_core::store::device`),
//! and [`probe`] returns the first disk found: virtio-blk, then SATA
//! (AHCI), then IDE. When that disk has a GUID partition table with the
//! config store's partition (the appliance's own disk images), the store
//! gets that partition; otherwise the whole disk (a separate store disk).

mod ahci;
mod ide;
mod virtio_blk;

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use lb_core::store::BlockDevice;
use lb_core::store::partition::{Partition, find_config_partition};
use net::pci::PortIoCam;
use virtio_drivers::transport::pci::bus::{DeviceFunction, DeviceFunctionInfo, PciRoot};

/// A disk found on the PCI bus.
pub struct Disk {
    pub device: Box<dyn BlockDevice + Send>,
    /// What it is, for the banner (e.g. `virtio-blk 16 MiB (pci 00:04.0)`).
    pub description: String,
}

/// The first disk controller with a disk, if any; drivers that fail say why.
pub fn probe(
    root: &mut PciRoot<PortIoCam>,
    functions: &[(DeviceFunction, DeviceFunctionInfo)],
) -> Option<Disk> {
    let mut disk = virtio_blk::probe(root, functions)
        .or_else(|| ahci::probe(root, functions))
        .or_else(|| ide::probe(root, functions))?;
    match find_config_partition(&mut *disk.device) {
        Ok(Some(extent)) => {
            let description = format!(
                "{}, config store partition of {} at sector {}",
                disk.description,
                size_text(extent.sectors * disk.device.sector_size() as u64),
                extent.first
            );
            Some(Disk {
                device: alloc::boxed::Box::new(Partition::new(disk.device, extent)),
                description,
            })
        }
        Ok(None) => Some(disk),
        Err(e) => {
            crate::println!("warning: disk: cannot read its partition table: {e}");
            disk.description.push_str(" (partition table unreadable)");
            Some(disk)
        }
    }
}

/// `16 MiB`, `512 KiB`: a size for the banner.
pub fn size_text(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{} KiB", bytes >> 10)
    }
}
