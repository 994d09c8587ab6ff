//! NIC drivers and the frame path of the appliance.
//!
//! Frame path: every received frame first goes to a [`FrameHook`] (the
//! kernel plugs lb-core's `Datapath` in here); only frames the hook passes
//! on reach the `embassy-net` stack of their NIC. See [`hook`] and [`nic`].
//!
//! - [`pci`]: PCI configuration space through port I/O (mechanism #1, works on
//!   q35 and i440fx), bus enumeration, MSI-X setup.
//! - [`nic`]: virtio-net devices (modern and transitional) via `virtio-drivers`,
//!   named eth0, eth1, ... in PCI order.
//! - [`driver`]: the `embassy-net-driver` `Driver` for one NIC of the set.
#![no_std]

extern crate alloc;

pub mod driver;
pub mod hook;
pub mod nic;
pub mod pci;

pub use hook::{FrameHook, PassThrough, Verdict};
pub use nic::{Nic, NicSet, NicStats};
