//! Finding the NICs: every PCI function a driver in `net` takes, in PCI
//! order (eth0, eth1, ...), with its interrupt: MSI-X (virtio-net), MSI
//! (82574L), else the legacy line through the I/O APIC.

use crate::hal::KernelHal;
use crate::{Nics, apic, interrupts, ioapic, println, trace};
use alloc::boxed::Box;
use alloc::vec::Vec;
use net::dma::BufSize;
use net::dma::DmaBuf;
use net::e1000::{self, E1000};
use net::mmio::Mmio;
use net::pci::{self, PortIoCam};
use net::tulip::{self, Tulip};
use net::vmxnet3::{self, Vmxnet3};
use net::{Nic, NicDevice, NicSet, PassThrough};
use virtio_drivers::transport::DeviceType;
use virtio_drivers::transport::pci::bus::{DeviceFunction, DeviceFunctionInfo, PciRoot};
use virtio_drivers::transport::pci::virtio_device_type;

/// Large receive buffers (64 KiB each, for TCP super-frames) take at most
/// this share of the heap, split between the NICs that can use them: with
/// less, virtio-net does not ask for guest TSO and takes MTU-sized frames.
const LARGE_RX_HEAP_SHARE: usize = 8;
/// Fewest large receive buffers per NIC worth turning guest TSO on for.
const LARGE_RX_MIN: usize = 32;
/// Receive buffers per NIC when frames are MTU-sized.
const SMALL_RX: usize = 256;
/// Bytes of the 8254x register window (BAR 0).
const E1000_REGS: usize = 128 << 10;
/// Bytes of the 21140/21143 CSR window (BAR 1).
const TULIP_REGS: usize = 128;
/// Bytes of each vmxnet3 register window (BAR 0 and BAR 1).
const VMXNET3_REGS: usize = 4096;

/// How a NIC interrupts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Irq {
    MsiX,
    Msi,
    /// Legacy INTx on this I/O APIC input.
    Line(u8),
    /// None: the main loop polls it every millisecond when idle.
    Polled,
}

impl core::fmt::Display for Irq {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Irq::MsiX => write!(f, "msi-x"),
            Irq::Msi => write!(f, "msi"),
            Irq::Line(l) => write!(f, "irq {l}"),
            Irq::Polled => write!(f, "polled"),
        }
    }
}

/// What drives a PCI function, if anything does.
enum Kind {
    Virtio,
    E1000(e1000::Model),
    Tulip(&'static str),
    Vmxnet3,
}

fn kind(info: &DeviceFunctionInfo) -> Option<Kind> {
    if virtio_device_type(info) == Some(DeviceType::Network) {
        return Some(Kind::Virtio);
    }
    match info.vendor_id {
        0x8086 => e1000::Model::from_device_id(info.device_id).map(Kind::E1000),
        0x1011 => tulip::takes(info.device_id).map(Kind::Tulip),
        0x15AD if info.device_id == vmxnet3::DEVICE_ID => Some(Kind::Vmxnet3),
        _ => None,
    }
}

/// MSI, else the legacy line routed through the I/O APIC, else polling.
fn msi_or_line(root: &mut PciRoot<PortIoCam>, df: DeviceFunction, msg_addr: u64) -> Irq {
    if pci::enable_msi(root, df, msg_addr, u32::from(interrupts::NIC_VECTOR)) {
        return Irq::Msi;
    }
    match pci::interrupt_line(df) {
        Some(line) if ioapic::route(line, interrupts::INTX_VECTOR, apic::id()) => Irq::Line(line),
        _ => Irq::Polled,
    }
}

/// Finds and starts the NICs among `functions` (every PCI function, in
/// PCI order). `heap` (bytes free) sizes receive buffers.
pub fn probe(
    root: &mut PciRoot<PortIoCam>,
    functions: &[(DeviceFunction, DeviceFunctionInfo)],
    heap: usize,
) -> (Nics, Vec<Irq>) {
    let msg_addr = 0xFEE0_0000u64 | (u64::from(apic::id()) << 12);
    let functions: Vec<_> = functions
        .iter()
        .filter_map(|(df, info)| Some((*df, kind(info)?)))
        .collect();
    let virtio = functions
        .iter()
        .filter(|(_, k)| matches!(k, Kind::Virtio))
        .count()
        .max(1);
    let large_per_nic = heap / LARGE_RX_HEAP_SHARE / BufSize::Large.bytes() / virtio;
    let rx_gso = large_per_nic >= LARGE_RX_MIN;
    let mut list = Vec::new();
    let mut irqs = Vec::new();
    for (df, kind) in functions {
        let (dev, irq, target): (Box<dyn NicDevice>, Irq, usize) = match kind {
            Kind::Virtio => match net::virtio::probe_net::<KernelHal>(root, df, rx_gso) {
                Ok(dev) => {
                    let irq = if pci::enable_virtio_msix::<KernelHal>(
                        root,
                        df,
                        msg_addr,
                        u32::from(interrupts::NIC_VECTOR),
                        &[0, 1],
                    ) {
                        Irq::MsiX
                    } else {
                        Irq::Polled
                    };
                    let target = if dev.features().rx_gso {
                        large_per_nic
                    } else {
                        SMALL_RX
                    };
                    (Box::new(dev), irq, target)
                }
                Err(e) => {
                    println!("warning: virtio-net at {df}: {e}");
                    continue;
                }
            },
            Kind::E1000(model) => {
                pci::enable_device(root, df);
                let Some(bar) = pci::memory_bar(df, 0) else {
                    println!("warning: {} at {df}: no register BAR", model.name());
                    continue;
                };
                // SAFETY: BAR 0 of this function is its register window,
                // driven by this driver alone.
                let regs = unsafe { Mmio::map::<KernelHal>(bar, E1000_REGS) };
                let dev = E1000::<KernelHal>::new(regs, model);
                let irq = msi_or_line(root, df, msg_addr);
                (Box::new(dev), irq, SMALL_RX)
            }
            Kind::Tulip(model) => {
                pci::enable_device(root, df);
                let (Some(bar), Some(setup)) =
                    (pci::memory_bar(df, 1), DmaBuf::new(BufSize::Small))
                else {
                    println!("warning: {model} at {df}: no CSR BAR");
                    continue;
                };
                // SAFETY: BAR 1 of this function is its CSR window, driven
                // by this driver alone.
                let regs = unsafe { Mmio::map::<KernelHal>(bar, TULIP_REGS) };
                let dev = Tulip::<KernelHal>::new(regs, model, setup);
                let irq = msi_or_line(root, df, msg_addr);
                (Box::new(dev), irq, SMALL_RX)
            }
            Kind::Vmxnet3 => {
                pci::enable_device(root, df);
                let (Some(pt), Some(vd)) = (pci::memory_bar(df, 0), pci::memory_bar(df, 1)) else {
                    println!("warning: vmxnet3 at {df}: no register BARs");
                    continue;
                };
                // SAFETY: BARs 0 and 1 of this function are its register
                // windows, driven by this driver alone.
                let (pt, vd) = unsafe {
                    (
                        Mmio::map::<KernelHal>(pt, VMXNET3_REGS),
                        Mmio::map::<KernelHal>(vd, VMXNET3_REGS),
                    )
                };
                // MSI before activation: the device picks its interrupt
                // mode from what the function has enabled.
                let irq = msi_or_line(root, df, msg_addr);
                match Vmxnet3::<KernelHal>::new(pt, vd) {
                    Ok(dev) => (Box::new(dev), irq, SMALL_RX),
                    Err(e) => {
                        println!("warning: vmxnet3 at {df}: {e:?}");
                        continue;
                    }
                }
            }
        };
        trace::mark("nic init");
        list.push(Nic::new(list.len(), df, dev, target));
        irqs.push(irq);
    }
    let now = || lb_core::time::Instant(crate::time::now_us() / 1000);
    (NicSet::new(list, Box::new(PassThrough), now), irqs)
}

/// How often link states are read.
const LINK_POLL_MS: u64 = 250;

/// Reads every NIC's link state periodically and logs each change (the
/// stack of a NIC sees the new state at once, see `NicSet::check_links`).
#[embassy_executor::task]
pub async fn link_task(nics: &'static Nics) {
    loop {
        for (i, up) in nics.check_links() {
            let name = nics.with(i, |n| alloc::string::String::from(n.name()));
            println!("{name}: link {}", if up { "up" } else { "down" });
        }
        embassy_time::Timer::after_millis(LINK_POLL_MS).await;
    }
}
