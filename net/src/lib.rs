//! NIC drivers and the frame path of the appliance.
//!
//! Frame path: every received frame first goes to a [`FrameHook`] (the
//! kernel plugs lb-core's `Datapath` in here); only frames the hook passes
//! on reach the `embassy-net` stack of their NIC. See [`hook`] and [`nic`].
//!
//! - [`pci`]: PCI configuration space through port I/O (mechanism #1, works on
//!   q35 and i440fx) or ECAM, bus enumeration, MSI-X setup.
//! - [`device`]: the interface every NIC driver implements.
//! - [`virtio`]: virtio-net (modern and transitional) on `virtio-drivers`'
//!   transport with our own virtqueues (offloads, batching).
//! - [`e1000`]: Intel 8254x/82574 (e1000, e1000e).
//! - [`tulip`]: DEC 21140/21143 (Hyper-V's legacy adapter, QEMU `tulip`).
//! - [`vmxnet3`]: VMware's paravirtual NIC.
//! - [`mmio`]: register windows and descriptor rings the drivers share.
//! - [`dma`]: frame buffers and the pool all NICs share.
//! - [`nic`]: the NICs, named eth0, eth1, ... in PCI order, and the frame
//!   path between them (budgeted polling, zero-copy forwarding, bursts).
//! - [`driver`]: the `embassy-net-driver` `Driver` for one NIC of the set.
#![no_std]

extern crate alloc;

pub mod device;
pub mod dma;
pub mod driver;
pub mod e1000;
pub mod hook;
pub mod mmio;
pub mod nic;
pub mod pci;
pub mod tulip;
pub mod virtio;
pub mod vmxnet3;

pub use device::{Features, NicDevice};
pub use hook::{FrameHook, PassThrough, Verdict};
pub use nic::{Nic, NicSet, NicStats};
