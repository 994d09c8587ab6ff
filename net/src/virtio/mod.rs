//! virtio devices: the split virtqueue ([`ring`]) and the network device
//! ([`net`]), on `virtio-drivers`' PCI transport.

pub mod net;
pub mod ring;

use crate::pci::{self, PortIoCam};
pub use net::{VirtioNet, VirtioNetError};
use virtio_drivers::Hal;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::{DeviceFunction, PciRoot};

/// Why a virtio-net function could not be driven.
#[derive(Debug)]
pub enum ProbeError {
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    /// The device has no notification capability we can use.
    NoDoorbell,
    Device(VirtioNetError),
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeError::Transport(e) => {
                write!(f, "{e} (legacy-only devices are not supported)")
            }
            ProbeError::NoDoorbell => write!(f, "no notification capability"),
            ProbeError::Device(e) => write!(f, "{e:?}"),
        }
    }
}

/// Brings up the virtio-net device at `df` (decoding and bus mastering on).
pub fn probe_net<H: Hal>(
    root: &mut PciRoot<PortIoCam>,
    df: DeviceFunction,
    rx_gso: bool,
) -> Result<VirtioNet<H, PciTransport>, ProbeError> {
    pci::enable_device(root, df);
    let transport = PciTransport::new::<H, _>(root, df).map_err(ProbeError::Transport)?;
    let notify =
        pci::virtio_notify_addresses::<H, 2>(root, df, [0, 1]).ok_or(ProbeError::NoDoorbell)?;
    VirtioNet::new(transport, rx_gso, notify).map_err(ProbeError::Device)
}
