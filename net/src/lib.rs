//! NIC drivers and the frame path of the appliance.
//!
//! Frame path: every received frame first goes to a [`FrameHook`] (the L4
//! data path plugs in here later); only frames the hook passes on reach the
//! `embassy-net` stack, which runs on eth0. See [`hook`] and [`nic`].
//!
//! - [`pci`]: PCI configuration space through port I/O (mechanism #1, works on
//!   q35 and i440fx), bus enumeration, MSI-X setup.
//! - [`nic`]: virtio-net devices (modern and transitional) via `virtio-drivers`,
//!   named eth0, eth1, ... in PCI order.
//! - [`driver`]: the `embassy-net-driver` `Driver` for one NIC of the set.
#![no_std]

extern crate alloc;

pub mod arp;
pub mod driver;
pub mod hook;
pub mod nic;
pub mod pci;

pub use hook::{FrameHook, PassThrough, Verdict};
pub use nic::{Nic, NicSet, NicStats};
