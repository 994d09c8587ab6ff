//! virtio-net (virtio 1.1, section 5.1) on `virtio-drivers`' PCI transport,
//! with our own rings ([`super::ring`]).
//!
//! Why not `virtio-drivers`' `VirtIONetRaw`: its feature set is fixed (no
//! checksum offload, no TSO, so the host must segment and checksum every
//! frame for the appliance), its header fields are private, and it rings
//! the doorbell for every buffer. This driver negotiates:
//! * `CSUM` + `HOST_TSO4`: frames are sent with partial checksums and as
//!   TCP super-frames, which the host finishes;
//! * `GUEST_CSUM` + `GUEST_TSO4`: the host hands over partial checksums and
//!   super-frames; without mergeable receive buffers every receive buffer
//!   must then hold 64 KiB ([`BufSize::Large`]), which is what the
//!   forwarding path wants anyway: a super-frame arrives in one buffer and
//!   leaves in the same one. Guest TSO is off when RAM is short;
//! * `EVENT_IDX`: doorbells and interrupts only where the other side asked;
//! * `MAC`, `STATUS` (link state), `VERSION_1`.

use super::ring::{Ring, RingError};
use crate::device::{DeviceStats, Features, NicDevice};
use crate::dma::{BufSize, DmaBuf, HEADROOM, Packet};
use alloc::vec::Vec;
use core::ptr::NonNull;
use lb_core::frame::{Gso, L4Checksum, Offload};
use virtio_drivers::transport::{DeviceStatus, Transport};
use virtio_drivers::{BufferDirection, Hal};

const F_CSUM: u64 = 1 << 0;
const F_GUEST_CSUM: u64 = 1 << 1;
const F_MAC: u64 = 1 << 5;
const F_GUEST_TSO4: u64 = 1 << 7;
const F_HOST_TSO4: u64 = 1 << 11;
const F_STATUS: u64 = 1 << 16;
const F_EVENT_IDX: u64 = 1 << 29;
const F_VERSION_1: u64 = 1 << 32;

/// `virtio_net_hdr` with `num_buffers` (always there with `VERSION_1`).
const HDR_LEN: usize = 12;
const HDR_F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;

const QUEUE_RX: u16 = 0;
const QUEUE_TX: u16 = 1;
/// Ring entries per queue (at most; fewer if the device has fewer).
const QUEUE_SIZE: u16 = 256;
const STATUS_LINK_UP: u16 = 1;

/// Why a virtio-net device could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VirtioNetError {
    /// The device does not offer VIRTIO_F_VERSION_1 (legacy-only).
    Legacy,
    /// The device refused our feature set.
    FeaturesRefused,
    Ring(RingError),
}

/// A virtio-net device.
pub struct VirtioNet<H: Hal, T: Transport> {
    transport: T,
    mac: [u8; 6],
    features: Features,
    has_status: bool,
    link_up: bool,
    rx: Ring<H>,
    tx: Ring<H>,
    /// Buffers the device holds, by descriptor.
    rx_posted: Vec<Option<DmaBuf>>,
    tx_posted: Vec<Option<DmaBuf>>,
    /// Doorbell of each queue (memory-mapped, one 16-bit write).
    notify: [NonNull<u16>; 2],
    stats: DeviceStats,
}

impl<H: Hal, T: Transport> VirtioNet<H, T> {
    /// Initialises the device. `rx_gso` asks for guest TSO (64 KiB receive
    /// buffers); `notify` are the doorbell addresses of the receive and the
    /// transmit queue (see [`crate::pci::virtio_notify_addresses`]).
    pub fn new(
        mut transport: T,
        rx_gso: bool,
        notify: [NonNull<u16>; 2],
    ) -> Result<Self, VirtioNetError> {
        transport.set_status(DeviceStatus::empty());
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = transport.read_device_features();
        if offered & F_VERSION_1 == 0 {
            transport.set_status(DeviceStatus::FAILED);
            return Err(VirtioNetError::Legacy);
        }
        let mut wanted = F_VERSION_1 | F_MAC | F_STATUS | F_EVENT_IDX | F_CSUM | F_GUEST_CSUM;
        // TSO needs the matching checksum offload (virtio 1.1, 5.1.3.1).
        if offered & F_CSUM != 0 {
            wanted |= F_HOST_TSO4;
        }
        if rx_gso && offered & F_GUEST_CSUM != 0 {
            wanted |= F_GUEST_TSO4;
        }
        let ours = offered & wanted;
        transport.write_driver_features(ours);
        transport.set_status(
            DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK,
        );
        if !transport.get_status().contains(DeviceStatus::FEATURES_OK) {
            transport.set_status(DeviceStatus::FAILED);
            return Err(VirtioNetError::FeaturesRefused);
        }
        let has = |f: u64| ours & f != 0;
        let features = Features {
            tx_checksum: has(F_CSUM),
            tx_tso4: has(F_HOST_TSO4),
            rx_checksum: has(F_GUEST_CSUM),
            rx_gso: has(F_GUEST_TSO4),
        };
        let event_idx = has(F_EVENT_IDX);
        let size = |t: &mut T, q: u16| {
            let max = t.max_queue_size(q).min(u32::from(QUEUE_SIZE));
            // The largest power of two the device allows.
            if max == 0 {
                0
            } else {
                1u16 << (31 - max.leading_zeros())
            }
        };
        let (rx_size, tx_size) = (
            size(&mut transport, QUEUE_RX),
            size(&mut transport, QUEUE_TX),
        );
        let rings = Ring::new(&mut transport, QUEUE_RX, rx_size, event_idx)
            .and_then(|rx| Ok((rx, Ring::new(&mut transport, QUEUE_TX, tx_size, event_idx)?)));
        let (rx, tx) = match rings {
            Ok(r) => r,
            Err(e) => {
                transport.set_status(DeviceStatus::FAILED);
                return Err(VirtioNetError::Ring(e));
            }
        };
        let mac = if has(F_MAC) {
            transport.read_config_space::<[u8; 6]>(0).unwrap_or([0; 6])
        } else {
            [0x02, 0, 0, 0, 0, 0x01]
        };
        transport.finish_init();
        let mut dev = VirtioNet {
            transport,
            mac,
            features,
            has_status: has(F_STATUS),
            link_up: true,
            rx_posted: (0..rx.size()).map(|_| None).collect(),
            tx_posted: (0..tx.size()).map(|_| None).collect(),
            rx,
            tx,
            notify,
            stats: DeviceStats::default(),
        };
        dev.link_up = dev.read_link();
        Ok(dev)
    }

    fn read_link(&self) -> bool {
        !self.has_status
            || self
                .transport
                .read_config_space::<u16>(6)
                .is_ok_and(|s| s & STATUS_LINK_UP != 0)
    }

    fn kick(&mut self, queue: u16) {
        let ring = if queue == QUEUE_RX {
            &mut self.rx
        } else {
            &mut self.tx
        };
        ring.publish();
        if ring.needs_kick() {
            // SAFETY: the doorbell address of this queue inside the device's
            // notification BAR (found at probe time, mapped by the HAL).
            unsafe {
                self.notify[usize::from(queue)]
                    .as_ptr()
                    .write_volatile(queue)
            };
            self.stats.kicks += 1;
        }
    }

    /// The header the device wrote in front of a received frame.
    fn rx_offload(hdr: &[u8], len: usize) -> Option<Offload> {
        let flags = hdr[0];
        let gso_type = hdr[1];
        let gso_size = u16::from_le_bytes([hdr[4], hdr[5]]);
        let start = u16::from_le_bytes([hdr[6], hdr[7]]);
        let offset = u16::from_le_bytes([hdr[8], hdr[9]]);
        let checksum = if flags & HDR_F_NEEDS_CSUM != 0 {
            if usize::from(start) + usize::from(offset) + 2 > len {
                return None;
            }
            L4Checksum::Partial { start, offset }
        } else {
            // DATA_VALID (the host checked it) or nothing: the field holds
            // whatever the sender computed; end to end, it stays so.
            L4Checksum::Complete
        };
        let gso = match gso_type {
            GSO_NONE => None,
            GSO_TCPV4 if checksum != L4Checksum::Complete && gso_size > 0 => {
                Some(Gso { mss: gso_size })
            }
            // Not negotiated (UDP, IPv6, ECN) or inconsistent.
            _ => return None,
        };
        Some(Offload { checksum, gso })
    }

    /// Writes the transmit header for `pkt` into its headroom.
    fn tx_header(pkt: &mut Packet) {
        let mut hdr = [0u8; HDR_LEN];
        if let L4Checksum::Partial { start, offset } = pkt.offload.checksum {
            hdr[0] = HDR_F_NEEDS_CSUM;
            hdr[6..8].copy_from_slice(&start.to_le_bytes());
            hdr[8..10].copy_from_slice(&offset.to_le_bytes());
            let mut hdr_len = start + offset + 2;
            if let Some(gso) = pkt.offload.gso {
                hdr[1] = GSO_TCPV4;
                hdr[4..6].copy_from_slice(&gso.mss.to_le_bytes());
                // Headers up to the end of the TCP header.
                let doff = pkt
                    .frame()
                    .get(usize::from(start) + 12)
                    .map_or(20, |b| b >> 4);
                hdr_len = start + u16::from(doff) * 4;
            }
            hdr[2..4].copy_from_slice(&hdr_len.to_le_bytes());
        }
        pkt.buf.bytes_mut()[HEADROOM - HDR_LEN..HEADROOM].copy_from_slice(&hdr);
    }
}

impl<H: Hal, T: Transport> NicDevice for VirtioNet<H, T> {
    fn model(&self) -> &'static str {
        "virtio-net"
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn features(&self) -> Features {
        self.features
    }

    fn rx_buf_size(&self) -> BufSize {
        if self.features.rx_gso {
            BufSize::Large
        } else {
            BufSize::Small
        }
    }

    fn link_up(&mut self) -> bool {
        let up = self.read_link();
        if up != self.link_up {
            self.link_up = up;
            self.stats.link_changes += 1;
        }
        up
    }

    fn receive(&mut self) -> Option<Packet> {
        loop {
            let (id, written) = match self.rx.pop_used()? {
                Ok(c) => c,
                Err(()) => {
                    self.stats.errors += 1;
                    continue;
                }
            };
            let Some(buf) = self
                .rx_posted
                .get_mut(usize::from(id))
                .and_then(Option::take)
            else {
                self.stats.errors += 1;
                continue;
            };
            // SAFETY: the buffer was shared for this descriptor in `post_rx`
            // and the device has returned it.
            unsafe {
                H::unshare(
                    0,
                    buf.raw_range(HEADROOM - HDR_LEN, buf.capacity()),
                    BufferDirection::DeviceToDriver,
                )
            };
            let written = written as usize;
            let len = written.saturating_sub(HDR_LEN);
            let hdr = &buf.bytes()[HEADROOM - HDR_LEN..HEADROOM];
            match (written >= HDR_LEN + 14 && HEADROOM + len <= buf.capacity())
                .then(|| Self::rx_offload(hdr, len))
                .flatten()
            {
                Some(offload) => return Some(Packet { buf, len, offload }),
                None => {
                    // A runt or a header we cannot honour: the buffer goes
                    // straight back to the device.
                    self.stats.errors += 1;
                    if let Err(b) = self.post_rx(buf) {
                        drop(b);
                    }
                }
            }
        }
    }

    fn rx_room(&self) -> usize {
        self.rx.room()
    }

    fn post_rx(&mut self, buf: DmaBuf) -> Result<(), DmaBuf> {
        if self.rx.room() == 0 || buf.size() != self.rx_buf_size() {
            return Err(buf);
        }
        let region = buf.raw_range(HEADROOM - HDR_LEN, buf.capacity());
        let len = region.len() as u32;
        // SAFETY: the buffer stays in `rx_posted` (never referenced) until
        // the device returns this descriptor.
        let addr = unsafe { H::share(region, BufferDirection::DeviceToDriver) };
        let Some(id) = self.rx.push(addr, len, true) else {
            return Err(buf);
        };
        self.rx_posted[usize::from(id)] = Some(buf);
        Ok(())
    }

    fn tx_room(&self) -> usize {
        self.tx.room()
    }

    fn transmit(&mut self, mut pkt: Packet) -> Result<(), Packet> {
        if self.tx.room() == 0 || HEADROOM + pkt.len > pkt.buf.capacity() {
            return Err(pkt);
        }
        Self::tx_header(&mut pkt);
        let region = pkt.buf.raw_range(HEADROOM - HDR_LEN, HDR_LEN + pkt.len);
        let len = region.len() as u32;
        // SAFETY: the buffer stays in `tx_posted` until the device returns it.
        let addr = unsafe { H::share(region, BufferDirection::DriverToDevice) };
        let Some(id) = self.tx.push(addr, len, false) else {
            return Err(pkt);
        };
        self.tx_posted[usize::from(id)] = Some(pkt.buf);
        Ok(())
    }

    fn reclaim_tx(&mut self, done: &mut dyn FnMut(DmaBuf)) {
        while let Some(c) = self.tx.pop_used() {
            match c
                .ok()
                .and_then(|(id, _)| self.tx_posted.get_mut(usize::from(id))?.take())
            {
                Some(buf) => {
                    // SAFETY: shared in `transmit`; the device is done with it.
                    unsafe {
                        H::unshare(0, buf.raw(), BufferDirection::DriverToDevice);
                    }
                    done(buf);
                }
                None => self.stats.errors += 1,
            }
        }
    }

    fn flush(&mut self) {
        self.kick(QUEUE_TX);
        self.kick(QUEUE_RX);
    }

    fn rx_pending(&self) -> bool {
        self.rx.has_used()
    }

    fn tx_pending(&self) -> bool {
        self.tx.has_used()
    }

    fn arm(&mut self) -> bool {
        let mut pending = self.rx.arm();
        let inflight = self.tx.in_flight();
        if inflight > 0 {
            // One interrupt when the last frame in flight is sent.
            pending |= self.tx.arm_after((inflight - 1) as u16);
        } else {
            self.tx.disarm();
        }
        pending
    }

    fn disarm(&mut self) {
        self.rx.disarm();
        self.tx.disarm();
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

impl<H: Hal, T: Transport> Drop for VirtioNet<H, T> {
    fn drop(&mut self) {
        // The device must stop using the rings and buffers before they go.
        self.transport.set_status(DeviceStatus::empty());
    }
}
