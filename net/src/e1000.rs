//! Intel 8254x / 82574 Gigabit Ethernet ("e1000", "e1000e"): the NICs
//! VMware (E1000, E1000e), VirtualBox and QEMU emulate most often.
//!
//! Written from Intel's *PCI/PCI-X Family of Gigabit Ethernet Controllers
//! Software Developer's Manual* (8254x, rev. 4.0) and the *82574 GbE
//! Controller Datasheet*. One driver serves the 82540EM, 82545EM and
//! 82574L: all three take the legacy receive and transmit descriptors
//! (16 bytes: buffer address, length, status) and share the register
//! offsets used here; they differ in how the EEPROM is read (`EERD`'s
//! field positions) and in interrupts (the 82574L has MSI/MSI-X, the 8254x
//! only INTx), which the caller sets up.
//!
//! No crate fits: the `e1000` crates on crates.io are either `std` drivers
//! over Linux UIO or hobby-OS code tied to their kernel; this is ~400 lines.
//!
//! Offloads: none (`Features::default()`): the legacy descriptors have no
//! checksum insertion that QEMU honours, so frames leave as the frame path
//! completed them.
//!
//! Receive buffers are [`BufSize::Small`] (2048 bytes after the headroom,
//! `RCTL.BSIZE` = 2048); long packets are off, so a frame never spans two.

use crate::device::{DeviceStats, NicDevice};
use crate::dma::{BufSize, DmaBuf, Packet};
use crate::mmio::{DescRing, Mmio, Slots};
use lb_core::frame::Offload;
use virtio_drivers::{BufferDirection, Hal};

const CTRL: usize = 0x0000;
const STATUS: usize = 0x0008;
const EERD: usize = 0x0014;
const ICR: usize = 0x00C0;
const ITR: usize = 0x00C4;
const IMS: usize = 0x00D0;
const IMC: usize = 0x00D8;
const RCTL: usize = 0x0100;
const TCTL: usize = 0x0400;
const TIPG: usize = 0x0410;
const RDBAL: usize = 0x2800;
const RDBAH: usize = 0x2804;
const RDLEN: usize = 0x2808;
const RDH: usize = 0x2810;
const RDT: usize = 0x2818;
const RDTR: usize = 0x2820;
const TDBAL: usize = 0x3800;
const TDBAH: usize = 0x3804;
const TDLEN: usize = 0x3808;
const TDH: usize = 0x3810;
const TDT: usize = 0x3818;
const MTA: usize = 0x5200;
const RAL0: usize = 0x5400;
const RAH0: usize = 0x5404;

const CTRL_ASDE: u32 = 1 << 5;
const CTRL_SLU: u32 = 1 << 6;
const CTRL_RST: u32 = 1 << 26;
const CTRL_LRST: u32 = 1 << 3;
const CTRL_PHY_RST: u32 = 1 << 31;
const CTRL_VME: u32 = 1 << 30;
const STATUS_LU: u32 = 1 << 1;
const RAH_AV: u32 = 1 << 31;

const RCTL_EN: u32 = 1 << 1;
const RCTL_BAM: u32 = 1 << 15;
const RCTL_SECRC: u32 = 1 << 26;
// BSIZE 00 with BSEX 0: 2048-byte buffers; RDMTS 00: interrupt at half empty.

const TCTL_EN: u32 = 1 << 1;
const TCTL_PSP: u32 = 1 << 3;
const TCTL_CT: u32 = 0x10 << 4;
const TCTL_COLD: u32 = 0x40 << 12;
/// Inter-packet gap for copper (IPGT 10, IPGR1 8, IPGR2 6).
const TIPG_COPPER: u32 = 10 | (8 << 10) | (6 << 20);

const ICR_TXDW: u32 = 1 << 0;
const ICR_LSC: u32 = 1 << 2;
const ICR_RXDMT0: u32 = 1 << 4;
const ICR_RXO: u32 = 1 << 6;
const ICR_RXT0: u32 = 1 << 7;

const RX_DD: u8 = 1 << 0;
const RX_EOP: u8 = 1 << 1;
const TX_CMD_EOP: u32 = 1 << 24;
const TX_CMD_IFCS: u32 = 1 << 25;
const TX_CMD_RS: u32 = 1 << 27;
const TX_DD: u32 = 1 << 0;

/// Descriptors per ring (a multiple of 8: ring lengths are in 128 bytes).
const RING: usize = 256;
/// Receive buffer size the device is told (RCTL.BSIZE).
const RX_BUF: usize = 2048;
/// Interrupt throttling: at most one interrupt per 256 ns × this (~20 k/s).
const ITR_INTERVAL: u32 = 196;

/// The members of the family this driver tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Model {
    /// 82540EM / 82545EM (QEMU `e1000`, `e1000-82545em`; VMware "E1000").
    I8254x,
    /// 82574L (QEMU `e1000e`; VMware "E1000e").
    I82574,
}

impl Model {
    /// The model for a PCI device ID of vendor 0x8086, if this driver takes it.
    pub fn from_device_id(id: u16) -> Option<Model> {
        match id {
            0x100E | 0x100F | 0x1004 | 0x100C | 0x1015 | 0x1026 => Some(Model::I8254x),
            0x10D3 => Some(Model::I82574),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Model::I8254x => "e1000",
            Model::I82574 => "e1000e",
        }
    }
}

/// An 8254x/82574 NIC.
pub struct E1000<H: Hal> {
    regs: Mmio,
    model: Model,
    mac: [u8; 6],
    rx: DescRing<H>,
    tx: DescRing<H>,
    rx_slots: Slots<H>,
    tx_slots: Slots<H>,
    armed: bool,
    link_up: bool,
    stats: DeviceStats,
}

impl<H: Hal> E1000<H> {
    /// Resets and initialises the NIC whose registers are `regs`.
    pub fn new(regs: Mmio, model: Model) -> E1000<H> {
        regs.write32(IMC, u32::MAX);
        regs.write32(CTRL, regs.read32(CTRL) | CTRL_RST);
        // The reset completes within microseconds; RST reads back 0 then.
        for _ in 0..100_000 {
            if regs.read32(CTRL) & CTRL_RST == 0 {
                break;
            }
            core::hint::spin_loop();
        }
        regs.write32(IMC, u32::MAX);
        let _ = regs.read32(ICR);
        let ctrl = regs.read32(CTRL) & !(CTRL_LRST | CTRL_PHY_RST | CTRL_VME);
        regs.write32(CTRL, ctrl | CTRL_SLU | CTRL_ASDE);

        let mac = Self::read_mac(&regs, model);
        let (lo, hi) = (
            u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
            u32::from(u16::from_le_bytes([mac[4], mac[5]])),
        );
        regs.write32(RAL0, lo);
        regs.write32(RAH0, hi | RAH_AV);
        for i in 0..128 {
            regs.write32(MTA + 4 * i, 0);
        }
        let mut dev = E1000 {
            rx: DescRing::new(RING, 16),
            tx: DescRing::new(RING, 16),
            rx_slots: Slots::new(RING, BufferDirection::DeviceToDriver),
            tx_slots: Slots::new(RING, BufferDirection::DriverToDevice),
            regs,
            model,
            mac,
            armed: false,
            link_up: false,
            stats: DeviceStats::default(),
        };
        dev.join_multicast(&crate::device::VRRP_MAC);

        let r = &dev.regs;
        r.write32(RDBAL, dev.rx.paddr() as u32);
        r.write32(RDBAH, (dev.rx.paddr() >> 32) as u32);
        r.write32(RDLEN, dev.rx.bytes() as u32);
        r.write32(RDH, 0);
        r.write32(RDT, 0);
        r.write32(RDTR, 0);
        r.write32(RCTL, RCTL_EN | RCTL_BAM | RCTL_SECRC);

        r.write32(TDBAL, dev.tx.paddr() as u32);
        r.write32(TDBAH, (dev.tx.paddr() >> 32) as u32);
        r.write32(TDLEN, dev.tx.bytes() as u32);
        r.write32(TDH, 0);
        r.write32(TDT, 0);
        r.write32(TIPG, TIPG_COPPER);
        r.write32(TCTL, TCTL_EN | TCTL_PSP | TCTL_CT | TCTL_COLD);
        r.write32(ITR, ITR_INTERVAL);
        dev.link_up = dev.regs.read32(STATUS) & STATUS_LU != 0;
        dev
    }

    /// The MAC address: from RAL0/RAH0 when the device loaded it there at
    /// reset, else from EEPROM words 0-2.
    fn read_mac(regs: &Mmio, model: Model) -> [u8; 6] {
        let (lo, hi) = (regs.read32(RAL0), regs.read32(RAH0));
        let mut mac = [0u8; 6];
        mac[..4].copy_from_slice(&lo.to_le_bytes());
        mac[4..].copy_from_slice(&(hi as u16).to_le_bytes());
        if hi & RAH_AV != 0 && mac != [0; 6] {
            return mac;
        }
        for w in 0..3 {
            let word = Self::eeprom_word(regs, model, w).unwrap_or(0);
            mac[2 * w as usize..2 * w as usize + 2].copy_from_slice(&word.to_le_bytes());
        }
        mac
    }

    fn eeprom_word(regs: &Mmio, model: Model, addr: u32) -> Option<u16> {
        let (addr_shift, done) = match model {
            Model::I8254x => (8, 1 << 4),
            Model::I82574 => (2, 1 << 1),
        };
        regs.write32(EERD, (addr << addr_shift) | 1);
        for _ in 0..100_000 {
            let v = regs.read32(EERD);
            if v & done != 0 {
                return Some((v >> 16) as u16);
            }
            core::hint::spin_loop();
        }
        None
    }

    /// Sets the multicast table bit for `mac` (filter mode 0: bits 47:36).
    fn join_multicast(&mut self, mac: &[u8; 6]) {
        let hash = ((u32::from(mac[4]) >> 4) | (u32::from(mac[5]) << 4)) & 0xFFF;
        let reg = MTA + 4 * (hash >> 5) as usize;
        self.regs
            .write32(reg, self.regs.read32(reg) | (1 << (hash & 31)));
    }
}

impl<H: Hal> NicDevice for E1000<H> {
    fn model(&self) -> &'static str {
        self.model.name()
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        let up = self.regs.read32(STATUS) & STATUS_LU != 0;
        if up != self.link_up {
            self.link_up = up;
            self.stats.link_changes += 1;
        }
        up
    }

    fn receive(&mut self) -> Option<Packet> {
        loop {
            if self.rx_slots.held() == 0 {
                return None;
            }
            let i = self.rx_slots.head();
            let status_word = self.rx.read32(i, 12);
            let (status, errors) = (status_word as u8, (status_word >> 8) as u8);
            if status & RX_DD == 0 {
                return None;
            }
            let len = usize::from(self.rx.read32(i, 8) as u16);
            let Some((_, Some(buf))) = self.rx_slots.pop() else {
                self.stats.errors += 1;
                continue;
            };
            let good = status & RX_EOP != 0 && errors == 0 && (14..=RX_BUF).contains(&len);
            match self.frame_or_repost(buf, len, good) {
                Some(p) => return Some(p),
                None => self.stats.errors += 1,
            }
        }
    }

    fn rx_room(&self) -> usize {
        // One descriptor stays empty: head == tail means "device holds none".
        self.rx_slots.room(1)
    }

    fn post_rx(&mut self, buf: DmaBuf) -> Result<(), DmaBuf> {
        if self.rx_room() == 0 || buf.size() != BufSize::Small {
            return Err(buf);
        }
        let (i, addr) = self.rx_slots.push(buf)?;
        self.rx.write64(i, 0, addr);
        self.rx.write64(i, 8, 0);
        Ok(())
    }

    fn tx_room(&self) -> usize {
        self.tx_slots.room(1)
    }

    fn transmit(&mut self, pkt: Packet) -> Result<(), Packet> {
        if self.tx_room() == 0 || pkt.offload != Offload::NONE || pkt.len > 16288 {
            return Err(pkt);
        }
        let len = pkt.len as u32;
        let (i, addr) = self.tx_slots.push(pkt.buf).map_err(|buf| Packet {
            buf,
            len: len as usize,
            offload: Offload::NONE,
        })?;
        self.tx.write64(i, 0, addr);
        self.tx.write32(i, 12, 0);
        self.tx
            .write32(i, 8, len | TX_CMD_EOP | TX_CMD_IFCS | TX_CMD_RS);
        Ok(())
    }

    fn reclaim_tx(&mut self, done: &mut dyn FnMut(DmaBuf)) {
        while self.tx_pending() {
            match self.tx_slots.pop() {
                Some((_, Some(b))) => done(b),
                _ => self.stats.errors += 1,
            }
        }
    }

    fn flush(&mut self) {
        if let Some(t) = self.tx_slots.publish() {
            self.regs.write32(TDT, t as u32);
            self.stats.kicks += 1;
        }
        if let Some(t) = self.rx_slots.publish() {
            self.regs.write32(RDT, t as u32);
            self.stats.kicks += 1;
        }
    }

    fn rx_pending(&self) -> bool {
        self.rx_slots.held() > 0 && self.rx.read32(self.rx_slots.head(), 12) as u8 & RX_DD != 0
    }

    fn tx_pending(&self) -> bool {
        let i = self.tx_slots.head();
        self.tx_slots.held() > 0
            && self.tx_slots.published_past(i)
            && self.tx.read32(i, 12) & TX_DD != 0
    }

    fn arm(&mut self) -> bool {
        if !self.armed {
            let mut causes = ICR_RXT0 | ICR_RXO | ICR_RXDMT0 | ICR_LSC;
            if self.tx_slots.held() > 0 {
                causes |= ICR_TXDW;
            }
            self.regs.write32(IMS, causes);
            self.armed = true;
        }
        self.rx_pending() || self.tx_pending()
    }

    fn disarm(&mut self) {
        if self.armed {
            self.regs.write32(IMC, u32::MAX);
            // Reading ICR clears the causes and lowers INTx.
            let _ = self.regs.read32(ICR);
            self.armed = false;
        }
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

impl<H: Hal> Drop for E1000<H> {
    fn drop(&mut self) {
        // Stop DMA before the rings and buffers go.
        self.regs.write32(IMC, u32::MAX);
        self.regs.write32(RCTL, 0);
        self.regs.write32(TCTL, 0);
        self.regs.write32(CTRL, self.regs.read32(CTRL) | CTRL_RST);
    }
}
