//! VMware vmxnet3: the paravirtual NIC of VMware ESXi/Workstation (and
//! QEMU's `vmxnet3`), what an appliance OVA gets by default.
//!
//! Written from VMware's published interface definition (the
//! `vmxnet3_defs.h` header VMware ships with its open-source drivers, which
//! is the device's specification): the driver hands the device one
//! "driver shared" block (configuration, queue descriptors, receive
//! filter), then exchanges 16-byte descriptors through rings whose entries
//! change hands by a *generation* bit that flips each time a ring wraps.
//! One transmit queue (transmit ring, data ring, completion ring) and one
//! receive queue (head-buffer ring, body-buffer ring, completion ring);
//! doorbells are the producer registers in BAR 0, written once per burst.
//! No crate fits (no `no_std` vmxnet3 driver exists).
//!
//! Layout constants below are byte offsets in the little-endian structures
//! of that header (`Vmxnet3_DriverShared` and friends).
//!
//! Offloads: none yet; receive buffers are [`BufSize::Small`] (frames up
//! to the 1500-byte MTU fit one head buffer, so the body ring stays empty).

use crate::device::{DeviceStats, NicDevice, VRRP_MAC};
use crate::dma::{BufSize, DmaBuf, Packet};
use crate::mmio::{DescRing, Mmio, Slots};
use lb_core::frame::Offload;
use virtio_drivers::{BufferDirection, Hal};

// BAR 1 ("VD") registers.
const VRRS: usize = 0x00;
const UVRS: usize = 0x08;
const DSAL: usize = 0x10;
const DSAH: usize = 0x18;
const CMD: usize = 0x20;
const MACL: usize = 0x28;
const MACH: usize = 0x30;
const ECR: usize = 0x40;
// BAR 0 ("PT") registers.
const IMR0: usize = 0x000;
const TXPROD0: usize = 0x600;
const RXPROD0: usize = 0x800;

const CMD_ACTIVATE_DEV: u32 = 0xCAFE_0000;
const CMD_RESET_DEV: u32 = 0xCAFE_0002;
const CMD_UPDATE_RX_MODE: u32 = 0xCAFE_0003;
const CMD_UPDATE_MAC_FILTERS: u32 = 0xCAFE_0004;
const CMD_GET_LINK: u32 = 0xF00D_0002;

const MAGIC: u32 = 0xBABE_FEE1;
const RXM_UCAST: u32 = 0x01;
const RXM_MCAST: u32 = 0x02;
const RXM_BCAST: u32 = 0x04;
const IC_DISABLE_ALL: u32 = 0x1;

// Vmxnet3_DriverShared (720 bytes) at offset 0 of the shared page.
const DS_MAGIC: usize = 0;
const DS_VERSION: usize = 8;
const DS_GOS: usize = 12;
const DS_REV_SPT: usize = 16;
const DS_UPT_SPT: usize = 20;
const DS_UPT_FEATURES: usize = 24;
const DS_QUEUE_DESC_PA: usize = 40;
const DS_QUEUE_DESC_LEN: usize = 52;
const DS_MTU: usize = 56;
const DS_MAX_RX_SG: usize = 60;
const DS_NUM_TXQ: usize = 62;
const DS_NUM_RXQ: usize = 63;
const DS_AUTO_MASK: usize = 80;
const DS_NUM_INTRS: usize = 81;
const DS_EVENT_INTR: usize = 82;
const DS_MOD_LEVELS: usize = 83;
const DS_INTR_CTRL: usize = 108;
const DS_RX_MODE: usize = 120;
const DS_MF_LEN: usize = 124;
const DS_MF_PA: usize = 128;
const DS_ECR: usize = 696;
/// Queue descriptors (128-aligned): one Vmxnet3_TxQueueDesc (256 bytes),
/// then one Vmxnet3_RxQueueDesc (256 bytes).
const QD: usize = 1024;
const QD_LEN: usize = 512;
const TXQ_CONF: usize = QD + 16;
const RXQ_CONF: usize = QD + 256 + 16;
/// The multicast filter table: 6-byte addresses.
const MF_TABLE: usize = 1536;

const TX_RING: usize = 256;
const RX_RING: usize = 256;
/// The body-buffer ring: the smallest size allowed, left empty.
const RX_RING2: usize = 32;
const RX_COMP: usize = RX_RING + RX_RING2;
const TX_DATA_DESC: usize = 128;

const TXD_GEN: u32 = 1 << 14;
const TXD_EOP: u32 = 1 << 12;
const TXD_CQ: u32 = 1 << 13;
const RXD_GEN: u32 = 1 << 31;
const COMP_GEN: u32 = 1 << 31;
const RCD_EOP: u32 = 1 << 14;
const RCD_SOP: u32 = 1 << 15;
const RCD_ERR: u32 = 1 << 14;
/// Largest length a receive descriptor can name (14 bits).
const RX_BUF: u32 = 2048;

/// Where the driver reads a completion ring: the next entry and the
/// generation that marks it as written by the device.
struct Cursor {
    next: usize,
    generation: bool,
    len: usize,
}

impl Cursor {
    fn new(len: usize) -> Cursor {
        Cursor {
            next: 0,
            generation: true,
            len,
        }
    }

    fn ready<H: Hal>(&self, ring: &DescRing<H>) -> bool {
        (ring.read32(self.next, 12) & COMP_GEN != 0) == self.generation
    }

    /// The index of the next completed entry, moving past it.
    fn take<H: Hal>(&mut self, ring: &DescRing<H>) -> Option<usize> {
        if !self.ready(ring) {
            return None;
        }
        // The rest of the entry is read after its generation bit.
        core::sync::atomic::fence(core::sync::atomic::Ordering::Acquire);
        let c = self.next;
        self.next = (c + 1) % self.len;
        if self.next == 0 {
            self.generation = !self.generation;
        }
        Some(c)
    }
}

/// The vmxnet3 PCI ID (vendor 0x15AD).
pub const DEVICE_ID: u16 = 0x07B0;

/// Why the device refused to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vmxnet3Error {
    /// It does not speak revision 1 of the device or UPT interface.
    Revision,
    /// ACTIVATE_DEV returned this error code.
    Activate(u32),
}

/// A vmxnet3 NIC with one transmit and one receive queue.
pub struct Vmxnet3<H: Hal> {
    pt: Mmio,
    vd: Mmio,
    mac: [u8; 6],
    shared: DescRing<H>,
    tx: DescRing<H>,
    _tx_data: DescRing<H>,
    tx_comp: DescRing<H>,
    rx: DescRing<H>,
    _rx2: DescRing<H>,
    rx_comp: DescRing<H>,
    tx_slots: Slots<H>,
    rx_slots: Slots<H>,
    /// Generation of the next transmit / receive descriptor filled.
    tx_gen: bool,
    rx_gen: bool,
    tx_done: Cursor,
    rx_done: Cursor,
    armed: bool,
    link_up: bool,
    stats: DeviceStats,
}

impl<H: Hal> Vmxnet3<H> {
    /// Starts the device whose BAR 0 and BAR 1 windows are `pt` and `vd`.
    pub fn new(pt: Mmio, vd: Mmio) -> Result<Vmxnet3<H>, Vmxnet3Error> {
        if vd.read32(VRRS) & 1 == 0 || vd.read32(UVRS) & 1 == 0 {
            return Err(Vmxnet3Error::Revision);
        }
        vd.write32(VRRS, 1);
        vd.write32(UVRS, 1);
        vd.write32(CMD, CMD_RESET_DEV);
        let (lo, hi) = (vd.read32(MACL), vd.read32(MACH));
        let mut mac = [0u8; 6];
        mac[..4].copy_from_slice(&lo.to_le_bytes());
        mac[4..].copy_from_slice(&(hi as u16).to_le_bytes());

        let shared = DescRing::<H>::new(1, 4096);
        let tx = DescRing::<H>::new(TX_RING, 16);
        let tx_data = DescRing::<H>::new(TX_RING, TX_DATA_DESC);
        let tx_comp = DescRing::<H>::new(TX_RING, 16);
        let rx = DescRing::<H>::new(RX_RING, 16);
        let rx2 = DescRing::<H>::new(RX_RING2, 16);
        let rx_comp = DescRing::<H>::new(RX_COMP, 16);

        let s = &shared;
        s.write32(0, DS_MAGIC, MAGIC);
        s.write32(0, DS_VERSION, 1);
        // gosBits 2 (64-bit), gosType 0 (unknown).
        s.write32(0, DS_GOS, 2);
        s.write32(0, DS_REV_SPT, 1);
        s.write32(0, DS_UPT_SPT, 1);
        s.write64(0, DS_UPT_FEATURES, 0);
        s.write64(0, DS_QUEUE_DESC_PA, s.paddr() + QD as u64);
        s.write32(0, DS_QUEUE_DESC_LEN, QD_LEN as u32);
        s.write32(0, DS_MTU, 1500);
        s.write16(0, DS_MAX_RX_SG, 1);
        s.write8(0, DS_NUM_TXQ, 1);
        s.write8(0, DS_NUM_RXQ, 1);
        // One interrupt for everything, no automatic masking, no moderation.
        s.write8(0, DS_AUTO_MASK, 0);
        s.write8(0, DS_NUM_INTRS, 1);
        s.write8(0, DS_EVENT_INTR, 0);
        s.write8(0, DS_MOD_LEVELS, 0);
        s.write32(0, DS_INTR_CTRL, 0);
        s.write32(0, DS_RX_MODE, RXM_UCAST | RXM_BCAST | RXM_MCAST);
        s.write_bytes(0, MF_TABLE, &VRRP_MAC);
        s.write16(0, DS_MF_LEN, 6);
        s.write64(0, DS_MF_PA, s.paddr() + MF_TABLE as u64);
        // Vmxnet3_TxQueueConf.
        s.write64(0, TXQ_CONF, tx.paddr());
        s.write64(0, TXQ_CONF + 8, tx_data.paddr());
        s.write64(0, TXQ_CONF + 16, tx_comp.paddr());
        s.write32(0, TXQ_CONF + 40, TX_RING as u32);
        s.write32(0, TXQ_CONF + 44, TX_RING as u32);
        s.write32(0, TXQ_CONF + 48, TX_RING as u32);
        s.write8(0, TXQ_CONF + 56, 0);
        // Vmxnet3_RxQueueConf.
        s.write64(0, RXQ_CONF, rx.paddr());
        s.write64(0, RXQ_CONF + 8, rx2.paddr());
        s.write64(0, RXQ_CONF + 16, rx_comp.paddr());
        s.write32(0, RXQ_CONF + 40, RX_RING as u32);
        s.write32(0, RXQ_CONF + 44, RX_RING2 as u32);
        s.write32(0, RXQ_CONF + 48, RX_COMP as u32);
        s.write8(0, RXQ_CONF + 56, 0);

        vd.write32(DSAL, s.paddr() as u32);
        vd.write32(DSAH, (s.paddr() >> 32) as u32);
        vd.write32(CMD, CMD_ACTIVATE_DEV);
        let status = vd.read32(CMD);
        if status != 0 {
            return Err(Vmxnet3Error::Activate(status));
        }
        vd.write32(CMD, CMD_UPDATE_RX_MODE);
        vd.write32(CMD, CMD_UPDATE_MAC_FILTERS);
        // Interrupts stay masked until armed.
        pt.write32(IMR0, 1);
        let mut dev = Vmxnet3 {
            pt,
            vd,
            mac,
            shared,
            tx,
            _tx_data: tx_data,
            tx_comp,
            rx,
            _rx2: rx2,
            rx_comp,
            tx_slots: Slots::new(TX_RING, BufferDirection::DriverToDevice),
            rx_slots: Slots::new(RX_RING, BufferDirection::DeviceToDriver),
            tx_gen: true,
            rx_gen: true,
            tx_done: Cursor::new(TX_RING),
            rx_done: Cursor::new(RX_COMP),
            armed: false,
            link_up: false,
            stats: DeviceStats::default(),
        };
        dev.link_up = dev.read_link();
        Ok(dev)
    }

    fn read_link(&self) -> bool {
        self.vd.write32(CMD, CMD_GET_LINK);
        self.vd.read32(CMD) & 1 != 0
    }

    /// Acknowledges device events (link changes, queue errors).
    fn ack_events(&self) {
        // The device posts events in the shared block; writing them back to
        // the ECR register acknowledges them.
        let ecr = self.shared.read32(0, DS_ECR);
        if ecr != 0 {
            self.vd.write32(ECR, ecr);
        }
    }
}

impl<H: Hal> NicDevice for Vmxnet3<H> {
    fn model(&self) -> &'static str {
        "vmxnet3"
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        self.ack_events();
        let up = self.read_link();
        if up != self.link_up {
            self.link_up = up;
            self.stats.link_changes += 1;
        }
        up
    }

    fn receive(&mut self) -> Option<Packet> {
        loop {
            let c = self.rx_done.take(&self.rx_comp)?;
            let d0 = self.rx_comp.read32(c, 0);
            let d2 = self.rx_comp.read32(c, 8);
            let idx = (d0 & 0xFFF) as usize;
            let ring = (d0 >> 16) & 0x3FF;
            // The device fills head buffers in ring order; nothing is ever
            // posted to the body ring.
            if ring != 0 || idx != self.rx_slots.head() {
                self.stats.errors += 1;
                continue;
            }
            let Some((_, Some(buf))) = self.rx_slots.pop() else {
                self.stats.errors += 1;
                continue;
            };
            let len = (d2 & 0x3FFF) as usize;
            let whole = d0 & (RCD_SOP | RCD_EOP) == RCD_SOP | RCD_EOP;
            let good = whole && d2 & RCD_ERR == 0 && (14..=RX_BUF as usize).contains(&len);
            match self.frame_or_repost(buf, len, good) {
                Some(p) => return Some(p),
                None => self.stats.errors += 1,
            }
        }
    }

    fn rx_room(&self) -> usize {
        self.rx_slots.room(0)
    }

    fn post_rx(&mut self, buf: DmaBuf) -> Result<(), DmaBuf> {
        if buf.size() != BufSize::Small {
            return Err(buf);
        }
        let (i, addr) = self.rx_slots.push(buf)?;
        self.rx.write64(i, 0, addr);
        self.rx.write32(i, 12, 0);
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        // btype 0 (head), dtype 0; the generation bit hands it over.
        let gen_bit = if self.rx_gen { RXD_GEN } else { 0 };
        self.rx.write32(i, 8, RX_BUF | gen_bit);
        if self.rx_slots.tail() == 0 {
            self.rx_gen = !self.rx_gen;
        }
        Ok(())
    }

    fn tx_room(&self) -> usize {
        self.tx_slots.room(1)
    }

    fn transmit(&mut self, pkt: Packet) -> Result<(), Packet> {
        if self.tx_room() == 0 || pkt.offload != Offload::NONE || pkt.len >= 1 << 14 {
            return Err(pkt);
        }
        let len = pkt.len;
        let (i, addr) = self.tx_slots.push(pkt.buf).map_err(|buf| Packet {
            buf,
            len,
            offload: Offload::NONE,
        })?;
        self.tx.write64(i, 0, addr);
        self.tx.write32(i, 12, TXD_EOP | TXD_CQ);
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        let gen_bit = if self.tx_gen { TXD_GEN } else { 0 };
        self.tx.write32(i, 8, len as u32 | gen_bit);
        if self.tx_slots.tail() == 0 {
            self.tx_gen = !self.tx_gen;
        }
        Ok(())
    }

    fn reclaim_tx(&mut self, done: &mut dyn FnMut(DmaBuf)) {
        while let Some(c) = self.tx_done.take(&self.tx_comp) {
            let eop = (self.tx_comp.read32(c, 0) & 0xFFF) as usize;
            // Every descriptor up to the completed end of packet is free.
            while let Some((i, buf)) = self.tx_slots.pop() {
                match buf {
                    Some(b) => done(b),
                    None => self.stats.errors += 1,
                }
                if i == eop {
                    break;
                }
            }
        }
    }

    fn flush(&mut self) {
        if let Some(t) = self.tx_slots.publish() {
            self.pt.write32(TXPROD0, t as u32);
            self.stats.kicks += 1;
        }
        if let Some(t) = self.rx_slots.publish() {
            self.pt.write32(RXPROD0, t as u32);
            self.stats.kicks += 1;
        }
    }

    fn rx_pending(&self) -> bool {
        self.rx_done.ready(&self.rx_comp)
    }

    fn tx_pending(&self) -> bool {
        self.tx_done.ready(&self.tx_comp)
    }

    fn arm(&mut self) -> bool {
        if !self.armed {
            self.pt.write32(IMR0, 0);
            self.armed = true;
        }
        self.rx_pending() || self.tx_pending()
    }

    fn disarm(&mut self) {
        if self.armed {
            self.pt.write32(IMR0, 1);
            self.armed = false;
        }
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

impl<H: Hal> Drop for Vmxnet3<H> {
    fn drop(&mut self) {
        // Stop DMA before the rings and buffers go.
        self.shared.write32(0, DS_INTR_CTRL, IC_DISABLE_ALL);
        self.vd.write32(CMD, CMD_RESET_DEV);
    }
}
