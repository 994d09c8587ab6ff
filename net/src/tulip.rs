//! DEC 21140/21143 "Tulip": Hyper-V generation 1's "Legacy Network
//! Adapter" (a 21140A) and QEMU's `tulip` (a 21143).
//!
//! Written from DEC's *21140A PCI Fast Ethernet LAN Controller Hardware
//! Reference Manual* and the *21143 Hardware Reference Manual*: CSRs at an
//! 8-byte stride in a memory BAR (BAR 1; BAR 0 is the same window in I/O
//! space), 16-byte descriptors in rings whose last entry carries the
//! end-of-ring bit, ownership by the OWN bit, one transmit "poll demand"
//! write per burst. No crate fits (none exists for this chip in `no_std`).
//!
//! The MAC address comes from the serial ROM (a 93C46 read bit by bit
//! through CSR9; the IEEE address is at byte 20 in DEC's SROM format); the
//! chip filters by a 16-entry perfect filter loaded with a *setup frame*:
//! our address, broadcast (ARP) and VRRP's group address.
//!
//! Link state: the 21143 reports link fail/pass in CSR5/CSR12, the 21140
//! only through board-specific general-purpose pins; QEMU models neither
//! (its CSR12 always reads "autonegotiation complete"), so the link is
//! reported up.
//!
//! Offloads: none; receive buffers are [`BufSize::Small`].

use crate::device::{DeviceStats, NicDevice, VRRP_MAC};
use crate::dma::{BufSize, DmaBuf, Packet};
use crate::mmio::{DescRing, Mmio, Slots};
use lb_core::frame::Offload;
use virtio_drivers::{BufferDirection, Hal};

const fn csr(n: usize) -> usize {
    n * 8
}

const CSR0_SWR: u32 = 1 << 0;
/// Programmable burst length: 8 longwords.
const CSR0_PBL8: u32 = 8 << 8;
const CSR5_TI: u32 = 1 << 0;
const CSR5_TU: u32 = 1 << 2;
const CSR5_RI: u32 = 1 << 6;
const CSR5_RU: u32 = 1 << 7;
const CSR5_AIS: u32 = 1 << 15;
const CSR5_NIS: u32 = 1 << 16;
/// Every write-one-to-clear status bit of CSR5.
const CSR5_CLEAR: u32 = 0x0C01_FFFF;
const CSR6_SR: u32 = 1 << 1;
const CSR6_IF: u32 = 1 << 4;
const CSR6_PR: u32 = 1 << 6;
const CSR6_PM: u32 = 1 << 7;
const CSR6_FD: u32 = 1 << 9;
const CSR6_OM: u32 = 3 << 10;
const CSR6_ST: u32 = 1 << 13;
const CSR6_RA: u32 = 1 << 30;
const CSR9_SR_CS: u32 = 1 << 0;
const CSR9_SR_SK: u32 = 1 << 1;
const CSR9_SR_DI: u32 = 1 << 2;
const CSR9_SR_DO: u32 = 1 << 3;
const CSR9_SR: u32 = 1 << 11;
const CSR9_RD: u32 = 1 << 14;

const OWN: u32 = 1 << 31;
const ES: u32 = 1 << 15;
const RDES0_LS: u32 = 1 << 8;
const RDES0_FS: u32 = 1 << 9;
const RDES1_RER: u32 = 1 << 25;
const TDES1_TER: u32 = 1 << 25;
const TDES1_SET: u32 = 1 << 27;
const TDES1_FS: u32 = 1 << 29;
const TDES1_LS: u32 = 1 << 30;
const TDES1_IC: u32 = 1 << 31;

/// Descriptors per ring.
const RING: usize = 128;
/// Receive buffer size given to the chip (11 bits, a multiple of 4).
const RX_BUF: u32 = 2044;
/// Bytes of the setup frame: 16 perfect-filter entries of 12 bytes.
const SETUP_LEN: usize = 192;
/// Where the IEEE address sits in the serial ROM (bytes).
const SROM_MAC: u8 = 20;
/// Address bits of the 93C46 serial ROM (64 words of 16 bits).
const SROM_ADDR_BITS: u32 = 6;

/// PCI IDs this driver takes (vendor 0x1011).
pub fn takes(device_id: u16) -> Option<&'static str> {
    match device_id {
        0x0009 => Some("tulip-21140"),
        0x0019 => Some("tulip-21143"),
        _ => None,
    }
}

/// A 21140/21143 NIC.
pub struct Tulip<H: Hal> {
    regs: Mmio,
    model: &'static str,
    mac: [u8; 6],
    rx: DescRing<H>,
    tx: DescRing<H>,
    rx_slots: Slots<H>,
    tx_slots: Slots<H>,
    armed: bool,
    stats: DeviceStats,
}

impl<H: Hal> Tulip<H> {
    /// Resets and starts the chip whose CSRs are `regs`; `setup` is a small
    /// buffer for the setup frame (returned to the caller via
    /// [`NicDevice::reclaim_tx`] once sent).
    pub fn new(regs: Mmio, model: &'static str, mut setup: DmaBuf) -> Tulip<H> {
        regs.write32(csr(0), CSR0_SWR);
        for _ in 0..1000 {
            if regs.read32(csr(0)) & CSR0_SWR == 0 {
                break;
            }
            core::hint::spin_loop();
        }
        regs.write32(csr(0), CSR0_PBL8);
        regs.write32(csr(7), 0);
        regs.write32(csr(5), CSR5_CLEAR);
        let mac = Self::read_mac(&regs);
        let rx = DescRing::<H>::new(RING, 16);
        let tx = DescRing::<H>::new(RING, 16);
        for i in 0..RING {
            let end = if i == RING - 1 { RDES1_RER } else { 0 };
            rx.write32(i, 4, end);
            tx.write32(i, 4, if i == RING - 1 { TDES1_TER } else { 0 });
        }
        regs.write32(csr(3), rx.paddr() as u32);
        regs.write32(csr(4), tx.paddr() as u32);
        let mut dev = Tulip {
            regs,
            model,
            mac,
            rx,
            tx,
            rx_slots: Slots::new(RING, BufferDirection::DeviceToDriver),
            tx_slots: Slots::new(RING, BufferDirection::DriverToDevice),
            armed: false,
            stats: DeviceStats::default(),
        };
        // The perfect filter: our address, broadcast, VRRP, the rest
        // repeating ours. Each address takes three longwords, with its
        // bytes in the low half of each.
        let frame = &mut setup.bytes_mut()[crate::dma::HEADROOM..crate::dma::HEADROOM + SETUP_LEN];
        frame.fill(0);
        for (n, entry) in frame.chunks_exact_mut(12).enumerate() {
            let a = match n {
                1 => [0xFF; 6],
                2 => VRRP_MAC,
                _ => mac,
            };
            for w in 0..3 {
                entry[4 * w] = a[2 * w];
                entry[4 * w + 1] = a[2 * w + 1];
            }
        }
        if dev.queue_tx(setup, SETUP_LEN, TDES1_SET).is_err() {
            dev.stats.errors += 1;
        }
        let r = &dev.regs;
        let mode = r.read32(csr(6)) & !(CSR6_PR | CSR6_PM | CSR6_IF | CSR6_OM | CSR6_RA);
        r.write32(csr(6), mode | CSR6_FD | CSR6_ST | CSR6_SR);
        // Starting the transmitter fetches the setup frame.
        dev.flush();
        dev
    }

    /// Reads 16-bit word `addr` of the 93C46 serial ROM through CSR9: chip
    /// select, the read command (start bit, opcode 10) and the address
    /// shifted in MSB first on rising clock edges, then 16 data bits out.
    fn srom_word(regs: &Mmio, addr: u32) -> u16 {
        let base = CSR9_SR | CSR9_RD;
        let cmd = (0b110 << SROM_ADDR_BITS) | (addr & ((1 << SROM_ADDR_BITS) - 1));
        regs.write32(csr(9), base);
        regs.write32(csr(9), base | CSR9_SR_CS);
        for bit in (0..3 + SROM_ADDR_BITS).rev() {
            let di = if cmd & (1 << bit) != 0 { CSR9_SR_DI } else { 0 };
            regs.write32(csr(9), base | CSR9_SR_CS | di);
            regs.write32(csr(9), base | CSR9_SR_CS | di | CSR9_SR_SK);
            regs.write32(csr(9), base | CSR9_SR_CS | di);
        }
        let mut word = 0u16;
        for _ in 0..16 {
            regs.write32(csr(9), base | CSR9_SR_CS | CSR9_SR_SK);
            let bit = regs.read32(csr(9)) & CSR9_SR_DO != 0;
            word = (word << 1) | u16::from(bit);
            regs.write32(csr(9), base | CSR9_SR_CS);
        }
        regs.write32(csr(9), base);
        word
    }

    fn read_mac(regs: &Mmio) -> [u8; 6] {
        let mut mac = [0u8; 6];
        for w in 0..3u8 {
            let word = Self::srom_word(regs, u32::from(SROM_MAC / 2 + w));
            mac[2 * usize::from(w)..2 * usize::from(w) + 2].copy_from_slice(&word.to_le_bytes());
        }
        mac
    }

    fn queue_tx(&mut self, buf: DmaBuf, len: usize, flags: u32) -> Result<(), DmaBuf> {
        let (i, addr) = self.tx_slots.push(buf)?;
        let end = if i == RING - 1 { TDES1_TER } else { 0 };
        self.tx.write32(i, 8, addr as u32);
        self.tx.write32(i, 12, 0);
        self.tx.write32(
            i,
            4,
            end | flags | TDES1_FS | TDES1_LS | TDES1_IC | len as u32,
        );
        // Ownership last: the chip may look at the descriptor at any time.
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        self.tx.write32(i, 0, OWN);
        Ok(())
    }
}

impl<H: Hal> NicDevice for Tulip<H> {
    fn model(&self) -> &'static str {
        self.model
    }

    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn link_up(&mut self) -> bool {
        true
    }

    fn receive(&mut self) -> Option<Packet> {
        loop {
            if self.rx_slots.held() == 0 {
                return None;
            }
            let status = self.rx.read32(self.rx_slots.head(), 0);
            if status & OWN != 0 {
                return None;
            }
            let Some((_, Some(buf))) = self.rx_slots.pop() else {
                self.stats.errors += 1;
                continue;
            };
            let whole = status & (RDES0_FS | RDES0_LS) == RDES0_FS | RDES0_LS;
            // The frame length counts the 4-byte CRC.
            let len = (((status >> 16) & 0x3FFF) as usize).saturating_sub(4);
            let good = whole && status & ES == 0 && (14..=RX_BUF as usize).contains(&len);
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
        let end = if i == RING - 1 { RDES1_RER } else { 0 };
        self.rx.write32(i, 8, addr as u32);
        self.rx.write32(i, 12, 0);
        self.rx.write32(i, 4, end | RX_BUF);
        core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
        self.rx.write32(i, 0, OWN);
        Ok(())
    }

    fn tx_room(&self) -> usize {
        self.tx_slots.room(0)
    }

    fn transmit(&mut self, pkt: Packet) -> Result<(), Packet> {
        if pkt.offload != Offload::NONE || pkt.len > 2047 {
            return Err(pkt);
        }
        let len = pkt.len;
        self.queue_tx(pkt.buf, len, 0).map_err(|buf| Packet {
            buf,
            len,
            offload: Offload::NONE,
        })
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
        // Poll demands: the chip looks at its rings again.
        if self.tx_slots.publish().is_some() {
            self.regs.write32(csr(1), 1);
            self.stats.kicks += 1;
        }
        if self.rx_slots.publish().is_some() {
            self.regs.write32(csr(2), 1);
            self.stats.kicks += 1;
        }
    }

    fn rx_pending(&self) -> bool {
        self.rx_slots.held() > 0 && self.rx.read32(self.rx_slots.head(), 0) & OWN == 0
    }

    fn tx_pending(&self) -> bool {
        self.tx_slots.held() > 0 && self.tx.read32(self.tx_slots.head(), 0) & OWN == 0
    }

    fn arm(&mut self) -> bool {
        if !self.armed {
            let mut enable = CSR5_NIS | CSR5_AIS | CSR5_RI | CSR5_RU;
            if self.tx_slots.held() > 0 {
                enable |= CSR5_TI | CSR5_TU;
            }
            self.regs.write32(csr(7), enable);
            self.armed = true;
        }
        self.rx_pending() || self.tx_pending()
    }

    fn disarm(&mut self) {
        if self.armed {
            self.regs.write32(csr(7), 0);
            // Clearing the status lowers INTx.
            self.regs.write32(csr(5), CSR5_CLEAR);
            self.armed = false;
        }
    }

    fn stats(&self) -> DeviceStats {
        self.stats
    }
}

impl<H: Hal> Drop for Tulip<H> {
    fn drop(&mut self) {
        // Stop DMA before the rings and buffers go.
        self.regs.write32(csr(7), 0);
        self.regs.write32(csr(6), 0);
        self.regs.write32(csr(0), CSR0_SWR);
    }
}
