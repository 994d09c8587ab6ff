//! Disks for the config store.
//!
//! Each controller driver implements lb-core's
//! [`BlockDevice`](lb_core::store::BlockDevice) trait (sector size and
//! count, read, write, flush; its contract is in `lb_core::store::device`),
//! and [`probe`] returns the first disk found. virtio-blk is the one driven
//! today; AHCI/SATA and ATA/IDE controllers belong here too, each in a
//! module of its own, tried by [`probe`] in turn.

mod virtio_blk;

use alloc::boxed::Box;
use alloc::string::String;
use lb_core::store::BlockDevice;
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
    virtio_blk::probe(root, functions)
}
