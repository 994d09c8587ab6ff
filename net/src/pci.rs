//! PCI configuration space through port I/O (configuration mechanism #1:
//! address to 0xCF8, data at 0xCFC), which q35, i440fx, VMware and Hyper-V
//! generation 1 all provide; bus enumeration; MSI-X for virtio queues.

use alloc::vec::Vec;
use virtio_drivers::Hal;
use virtio_drivers::transport::pci::bus::{
    Command, ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, HeaderType, PciRoot,
};

/// Configuration mechanism #1 over I/O ports 0xCF8/0xCFC.
#[derive(Debug)]
pub struct PortIoCam(());

impl PortIoCam {
    /// # Safety
    /// The caller must own the PCI configuration ports (one instance at a time
    /// doing writes, on a machine that has them).
    pub unsafe fn new() -> Self {
        PortIoCam(())
    }
}

fn address(df: DeviceFunction, offset: u8) -> u32 {
    0x8000_0000
        | (u32::from(df.bus) << 16)
        | (u32::from(df.device) << 11)
        | (u32::from(df.function) << 8)
        | u32::from(offset & 0xFC)
}

#[cfg(target_arch = "x86_64")]
mod port {
    use core::arch::asm;
    pub fn out32(port: u16, v: u32) {
        // SAFETY: PortIoCam::new's caller owns the configuration ports.
        unsafe {
            asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
        }
    }
    pub fn in32(port: u16) -> u32 {
        let v: u32;
        // SAFETY: as for `out32`.
        unsafe {
            asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags))
        }
        v
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod port {
    pub fn out32(_: u16, _: u32) {}
    pub fn in32(_: u16) -> u32 {
        u32::MAX
    }
}

/// A second handle on the (stateless) ports, for registers `PciRoot` does not expose.
fn raw() -> PortIoCam {
    PortIoCam(())
}

impl ConfigurationAccess for PortIoCam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        port::out32(0xCF8, address(df, offset));
        port::in32(0xCFC)
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        port::out32(0xCF8, address(df, offset));
        port::out32(0xCFC, data);
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortIoCam(())
    }
}

/// Every function on bus 0 and on the buses behind PCI-PCI bridges, in
/// bus/device/function order.
///
/// Each configuration access is a VM exit (slow under nested virtualisation),
/// so this reads only function 0 of empty slots and looks at functions 1-7
/// only on multi-function devices, and scans only buses that bridges lead to.
pub fn enumerate() -> Vec<(DeviceFunction, DeviceFunctionInfo)> {
    let cam = raw();
    let mut out = Vec::new();
    let mut buses = alloc::vec![0u8];
    let mut seen = [false; 256];
    while let Some(bus) = buses.pop() {
        if core::mem::replace(&mut seen[usize::from(bus)], true) {
            continue;
        }
        for device in 0..32u8 {
            for function in 0..8u8 {
                let df = DeviceFunction {
                    bus,
                    device,
                    function,
                };
                let id = cam.read_word(df, 0);
                if id & 0xFFFF == 0xFFFF {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                let class = cam.read_word(df, 0x08);
                let bist_header = cam.read_word(df, 0x0C);
                let header = (bist_header >> 16) as u8;
                let header_type = HeaderType::from(header & 0x7F);
                if header_type == HeaderType::PciPciBridge {
                    let secondary = (cam.read_word(df, 0x18) >> 8) as u8;
                    if secondary != 0 {
                        buses.push(secondary);
                    }
                }
                out.push((
                    df,
                    DeviceFunctionInfo {
                        vendor_id: id as u16,
                        device_id: (id >> 16) as u16,
                        class: (class >> 24) as u8,
                        subclass: (class >> 16) as u8,
                        prog_if: (class >> 8) as u8,
                        revision: class as u8,
                        header_type,
                    },
                ));
                if function == 0 && header & 0x80 == 0 {
                    break;
                }
            }
        }
    }
    out.sort_by_key(|(df, _)| (df.bus, df.device, df.function));
    out
}

/// Lets the device decode its BARs and master DMA.
pub fn enable_device<C: ConfigurationAccess>(root: &mut PciRoot<C>, df: DeviceFunction) {
    let (_, cmd) = root.get_status_command(df);
    root.set_command(
        df,
        cmd | Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER,
    );
}

const CAP_MSIX: u8 = 0x11;
const CAP_VENDOR: u8 = 0x09;
const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
const COMMON_QUEUE_SELECT: usize = 0x16;
const COMMON_QUEUE_MSIX_VECTOR: usize = 0x1A;
const VIRTIO_NO_VECTOR: u16 = 0xFFFF;

/// Base address of memory BAR `bar` (read, not sized: sizing costs a dozen
/// configuration accesses).
fn bar_address(df: DeviceFunction, bar: u8) -> Option<u64> {
    if bar > 5 {
        return None;
    }
    let cam = raw();
    let lo = cam.read_word(df, 0x10 + 4 * bar);
    if lo & 1 != 0 {
        return None; // I/O BAR
    }
    let hi = if (lo >> 1) & 3 == 2 && bar < 5 {
        cam.read_word(df, 0x14 + 4 * bar)
    } else {
        0
    };
    let addr = (u64::from(hi) << 32) | u64::from(lo & !0xF);
    (addr != 0).then_some(addr)
}

/// Points MSI-X table entry 0 at (`msg_addr`, `msg_data`), masks the other
/// entries, enables MSI-X, and makes virtqueues `queues` signal through entry 0.
/// Returns false (leaving MSI-X off) if the device lacks what is needed.
///
/// Call after the virtio driver finished its initialisation.
pub fn enable_virtio_msix<H: Hal>(
    root: &mut PciRoot<PortIoCam>,
    df: DeviceFunction,
    msg_addr: u64,
    msg_data: u32,
    queues: &[u16],
) -> bool {
    let caps: Vec<_> = root.capabilities(df).collect();
    let Some(msix) = caps.iter().find(|c| c.id == CAP_MSIX) else {
        return false;
    };
    let Some(common) = caps
        .iter()
        .find(|c| c.id == CAP_VENDOR && (c.private_header >> 8) as u8 == VIRTIO_PCI_CAP_COMMON_CFG)
    else {
        return false;
    };
    let ctrl = msix.private_header;
    let entries = usize::from(ctrl & 0x7FF) + 1;
    let table = raw().read_word(df, msix.offset + 4);
    let Some(bar_addr) = bar_address(df, (table & 7) as u8) else {
        return false;
    };
    let table_off = u64::from(table & !7);
    let cbar = raw().read_word(df, common.offset + 4) as u8;
    let coff = raw().read_word(df, common.offset + 8);
    let Some(common_addr) = bar_address(df, cbar) else {
        return false;
    };

    // SAFETY: the capabilities place both ranges inside memory BARs of this
    // device; the HAL maps device memory for us.
    let (tbl, cfg) = unsafe {
        (
            H::mmio_phys_to_virt(bar_addr + table_off, entries * 16).as_ptr() as *mut u32,
            H::mmio_phys_to_virt(common_addr + u64::from(coff), 0x20).as_ptr(),
        )
    };
    for i in 0..entries {
        // SAFETY: entry i of the MSI-X table: address lo, address hi, data, vector control.
        unsafe {
            let e = tbl.add(i * 4);
            e.write_volatile(msg_addr as u32);
            e.add(1).write_volatile((msg_addr >> 32) as u32);
            e.add(2).write_volatile(msg_data);
            e.add(3).write_volatile(if i == 0 { 0 } else { 1 });
        }
    }
    // Enable (bit 15), function mask off (bit 14); the low half is the read-only header.
    let header = raw().read_word(df, msix.offset) & 0xFFFF;
    let ctrl = (ctrl | 0x8000) & !0x4000;
    raw().write_word(df, msix.offset, header | (u32::from(ctrl) << 16));

    for &q in queues {
        // SAFETY: queue_select and queue_msix_vector are u16 fields of the
        // virtio common configuration structure inside the BAR.
        let ok = unsafe {
            (cfg.add(COMMON_QUEUE_SELECT) as *mut u16).write_volatile(q);
            let v = cfg.add(COMMON_QUEUE_MSIX_VECTOR) as *mut u16;
            v.write_volatile(0);
            v.read_volatile() != VIRTIO_NO_VECTOR
        };
        if !ok {
            return false;
        }
    }
    true
}
