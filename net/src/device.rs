//! The interface every NIC driver implements (virtio-net, and the emulated
//! Intel, VMware and DEC cards of other hypervisors), so that the frame path
//! in [`crate::nic`] drives them all alike.
//!
//! The model is NAPI's: the frame path polls a device for at most a budget
//! of received frames, queues frames to send without telling the device,
//! then makes a whole burst visible with one [`NicDevice::flush`] (one
//! doorbell write, when the device wants one). Interrupts are asked for
//! only when the frame path is about to sleep ([`NicDevice::arm`]).

use crate::dma::{BufSize, DmaBuf, Packet};

/// The Ethernet group address of VRRP (224.0.0.18): every driver's
/// multicast filter lets it in, besides broadcast (ARP) and its own address.
pub const VRRP_MAC: [u8; 6] = [0x01, 0x00, 0x5e, 0x00, 0x00, 0x12];

/// What a device does for the frames it sends and receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Completes partial TCP/UDP checksums of frames it sends.
    pub tx_checksum: bool,
    /// Cuts TCP super-frames it sends into segments (TSO for IPv4).
    pub tx_tso4: bool,
    /// May hand over frames with partial checksums.
    pub rx_checksum: bool,
    /// May hand over TCP super-frames (needs [`BufSize::Large`] buffers).
    pub rx_gso: bool,
}

impl Features {
    /// Short names of the features that are on, for the banner.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.tx_checksum, "tx-csum"),
            (self.tx_tso4, "tso4"),
            (self.rx_checksum, "rx-csum"),
            (self.rx_gso, "rx-gso"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
    }
}

/// Device-level counters a driver keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Doorbell writes (each one costs a trap into the hypervisor).
    pub kicks: u64,
    /// Completions the device reported that the driver could not match to
    /// a buffer, or frames with device errors.
    pub errors: u64,
    /// Times the link went up or down.
    pub link_changes: u64,
}

/// A NIC driver.
pub trait NicDevice {
    /// The device model, for the banner (e.g. "virtio-net", "e1000").
    fn model(&self) -> &'static str;

    fn mac(&self) -> [u8; 6];

    /// What the device offloads (none, unless the driver says otherwise).
    fn features(&self) -> Features {
        Features::default()
    }

    /// The size of receive buffers this device must be given.
    fn rx_buf_size(&self) -> BufSize {
        BufSize::Small
    }

    /// Whether the link is up (read from the device; cheap to call often).
    fn link_up(&mut self) -> bool;

    /// The next received frame, if any; its buffer is the caller's now.
    fn receive(&mut self) -> Option<Packet>;

    /// How many more receive buffers the device can take.
    fn rx_room(&self) -> usize;

    /// Gives the device an empty receive buffer (visible at the next
    /// [`NicDevice::flush`]); gives it back if there is no room.
    fn post_rx(&mut self, buf: DmaBuf) -> Result<(), DmaBuf>;

    /// How many more frames can be queued for sending.
    fn tx_room(&self) -> usize;

    /// Queues a frame for sending (visible at the next flush). The frame's
    /// offload metadata must be what [`NicDevice::features`] allows:
    /// the caller segments and checksums in software otherwise.
    fn transmit(&mut self, pkt: Packet) -> Result<(), Packet>;

    /// Hands each buffer the device has finished sending to `done`.
    fn reclaim_tx(&mut self, done: &mut dyn FnMut(DmaBuf));

    /// Makes queued frames and posted buffers visible to the device and
    /// rings its doorbell if it needs one.
    fn flush(&mut self);

    /// Whether received frames are waiting.
    fn rx_pending(&self) -> bool;

    /// Whether sent frames are waiting to be reclaimed.
    fn tx_pending(&self) -> bool;

    /// Asks for an interrupt when a frame arrives (and when sends complete,
    /// if any are in flight, so their buffers return). Returns true if
    /// work arrived meanwhile: then the caller must poll instead of sleep.
    fn arm(&mut self) -> bool;

    /// No interrupts for received frames: the caller is polling.
    fn disarm(&mut self);

    fn stats(&self) -> DeviceStats;

    /// A completed receive buffer as a frame of `len` bytes when `good`;
    /// else the buffer goes straight back to the device (dropped if it
    /// has no room) and `None`, for the driver to count and read on.
    fn frame_or_repost(&mut self, buf: DmaBuf, len: usize, good: bool) -> Option<Packet> {
        if good {
            return Some(Packet {
                buf,
                len,
                offload: lb_core::frame::Offload::NONE,
            });
        }
        let _ = self.post_rx(buf);
        None
    }
}
