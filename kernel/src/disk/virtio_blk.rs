//! virtio-blk through `virtio-drivers` (modern and transitional devices).
//!
//! Requests are synchronous: the driver posts one and polls the used ring
//! until the device answers. The store keeps each request to at most 64 KiB
//! and lets other tasks run between them, so a save never holds the data
//! path for long.

use super::Disk;
use crate::hal::KernelHal;
use crate::println;
use alloc::boxed::Box;
use alloc::format;
use lb_core::store::device::check_request;
use lb_core::store::{BlockDevice, IoError};
use net::pci::{self, PortIoCam};
use virtio_drivers::device::blk::{SECTOR_SIZE, VirtIOBlk};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{DeviceFunction, DeviceFunctionInfo, PciRoot};
use virtio_drivers::transport::pci::{PciTransport, virtio_device_type};

struct VirtioBlk {
    dev: VirtIOBlk<KernelHal, PciTransport>,
    sectors: u64,
    read_only: bool,
}

fn device_error(e: virtio_drivers::Error) -> IoError {
    use virtio_drivers::Error as E;
    IoError::Device(match e {
        E::QueueFull => 1,
        E::NotReady => 2,
        E::WrongToken => 3,
        E::AlreadyUsed => 4,
        E::InvalidParam => 5,
        E::DmaError => 6,
        E::IoError => 7,
        E::Unsupported => 8,
        _ => 9,
    })
}

impl BlockDevice for VirtioBlk {
    fn sector_size(&self) -> usize {
        SECTOR_SIZE
    }

    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        check_request(self.sectors, SECTOR_SIZE, lba, buf.len())?;
        self.dev
            .read_blocks(lba as usize, buf)
            .map_err(device_error)
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        check_request(self.sectors, SECTOR_SIZE, lba, buf.len())?;
        if self.read_only {
            return Err(IoError::ReadOnly);
        }
        self.dev
            .write_blocks(lba as usize, buf)
            .map_err(device_error)
    }

    fn flush(&mut self) -> Result<(), IoError> {
        self.dev.flush().map_err(device_error)
    }
}

/// The first virtio-blk device that initialises.
pub fn probe(
    root: &mut PciRoot<PortIoCam>,
    functions: &[(DeviceFunction, DeviceFunctionInfo)],
) -> Option<Disk> {
    for (df, info) in functions {
        if virtio_device_type(info) != Some(DeviceType::Block) {
            continue;
        }
        pci::enable_device(root, *df);
        let transport = match PciTransport::new::<KernelHal, _>(root, *df) {
            Ok(t) => t,
            Err(e) => {
                println!(
                    "warning: virtio-blk at {df}: {e} (legacy-only devices are not supported)"
                );
                continue;
            }
        };
        let dev = match VirtIOBlk::<KernelHal, _>::new(transport) {
            Ok(d) => d,
            Err(e) => {
                println!("warning: virtio-blk at {df}: {e:?}");
                continue;
            }
        };
        let sectors = dev.capacity();
        let read_only = dev.readonly();
        let size = sectors * SECTOR_SIZE as u64;
        let description = format!(
            "virtio-blk {} {} (pci {df}){}",
            if size >= 1 << 20 {
                size >> 20
            } else {
                size >> 10
            },
            if size >= 1 << 20 { "MiB" } else { "KiB" },
            if read_only { ", read-only" } else { "" }
        );
        return Some(Disk {
            device: Box::new(VirtioBlk {
                dev,
                sectors,
                read_only,
            }),
            description,
        });
    }
    None
}
