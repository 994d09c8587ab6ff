//! SATA disks behind an AHCI controller (QEMU q35's ICH9, VMware's SATA
//! controller, VirtualBox), from the Serial ATA AHCI 1.3.1 specification.
//!
//! Polled, one command at a time in command slot 0: the config store does
//! a handful of requests per save, so interrupts and queueing would buy
//! nothing. Data goes through one 64 KiB DMA buffer (the store's largest
//! request), so the caller's buffers need no particular alignment. The
//! command encodings come from lb-core's `store::ata`.

use super::{Disk, size_text};
use crate::hal::KernelHal;
use crate::println;
use alloc::boxed::Box;
use alloc::format;
use core::ptr::NonNull;
use core::sync::atomic::{Ordering, fence};
use embassy_time::{Duration, Instant};
use lb_core::store::ata::{self, Identity, Op, STATUS_BSY, STATUS_DF, STATUS_DRQ, STATUS_ERR};
use lb_core::store::device::check_request;
use lb_core::store::{BlockDevice, IoError};
use net::mmio::Mmio;
use net::pci::{self, PortIoCam};
use virtio_drivers::transport::pci::bus::{DeviceFunction, DeviceFunctionInfo, PciRoot};
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE};

// HBA registers.
const GHC: usize = 0x04;
const PI: usize = 0x0C;
const GHC_AE: u32 = 1 << 31;
const GHC_IE: u32 = 1 << 1;
// Port registers (offsets from the port's base).
const P_CLB: usize = 0x00;
const P_CLBU: usize = 0x04;
const P_FB: usize = 0x08;
const P_FBU: usize = 0x0C;
const P_IS: usize = 0x10;
const P_IE: usize = 0x14;
const P_CMD: usize = 0x18;
const P_TFD: usize = 0x20;
const P_SIG: usize = 0x24;
const P_SSTS: usize = 0x28;
const P_SERR: usize = 0x30;
const P_CI: usize = 0x38;
const CMD_ST: u32 = 1;
const CMD_SUD: u32 = 1 << 1;
const CMD_POD: u32 = 1 << 2;
const CMD_FRE: u32 = 1 << 4;
const CMD_FR: u32 = 1 << 14;
const CMD_CR: u32 = 1 << 15;
const IS_TFES: u32 = 1 << 30;
/// PxSIG of an ATA disk (ATAPI drives, port multipliers... are skipped).
const SIG_ATA: u32 = 0x0000_0101;

/// Layout of the one control page: command list (32 headers; slot 0 is
/// used), received-FIS area, command table (FIS, then the PRDT).
const CL_OFF: usize = 0x000;
const FIS_OFF: usize = 0x400;
const CT_OFF: usize = 0x600;
const PRDT_OFF: usize = CT_OFF + 0x80;
const BOUNCE_BYTES: usize = 64 * 1024;
const TIMEOUT: Duration = Duration::from_secs(5);

struct Ahci {
    regs: Mmio,
    port: usize,
    control: NonNull<u8>,
    control_phys: u64,
    bounce: NonNull<u8>,
    bounce_phys: u64,
    id: Identity,
}

// SAFETY: the DMA pages and register window belong to this driver alone;
// the store runs it from one task at a time (inside its mutex).
unsafe impl Send for Ahci {}

impl Ahci {
    fn reg(&self, r: usize) -> usize {
        0x100 + 0x80 * self.port + r
    }

    fn read(&self, r: usize) -> u32 {
        self.regs.read32(self.reg(r))
    }

    fn write(&self, r: usize, v: u32) {
        self.regs.write32(self.reg(r), v)
    }

    fn wait(&self, mut done: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            core::hint::spin_loop();
        }
    }

    fn put32(&self, off: usize, v: u32) {
        assert!(off + 4 <= PAGE_SIZE);
        // SAFETY: inside the control page this driver owns; the device reads
        // it only after the fence and the PxCI write below.
        unsafe {
            self.control
                .as_ptr()
                .add(off)
                .cast::<u32>()
                .write_volatile(v)
        }
    }

    /// Stops the port's command engine (the firmware may have left it
    /// running on its own memory), points it at our memory, starts it.
    fn start(&self) -> Result<(), &'static str> {
        let cmd = self.read(P_CMD);
        if cmd & CMD_ST != 0 {
            self.write(P_CMD, cmd & !CMD_ST);
        }
        if !self.wait(|s| s.read(P_CMD) & CMD_CR == 0) {
            return Err("command engine does not stop");
        }
        let cmd = self.read(P_CMD);
        if cmd & CMD_FRE != 0 {
            self.write(P_CMD, cmd & !CMD_FRE);
        }
        if !self.wait(|s| s.read(P_CMD) & CMD_FR == 0) {
            return Err("FIS receive does not stop");
        }
        let cl = self.control_phys + CL_OFF as u64;
        let fis = self.control_phys + FIS_OFF as u64;
        self.write(P_CLB, cl as u32);
        self.write(P_CLBU, (cl >> 32) as u32);
        self.write(P_FB, fis as u32);
        self.write(P_FBU, (fis >> 32) as u32);
        self.write(P_IE, 0);
        self.write(P_SERR, u32::MAX);
        self.write(P_IS, u32::MAX);
        self.write(P_CMD, self.read(P_CMD) | CMD_FRE | CMD_SUD | CMD_POD);
        if !self.wait(|s| s.read(P_TFD) as u8 & (STATUS_BSY | STATUS_DRQ) == 0) {
            return Err("the disk stays busy");
        }
        self.write(P_CMD, self.read(P_CMD) | CMD_ST);
        Ok(())
    }

    /// Runs one command; `bytes` of data move through the bounce buffer.
    fn command(&self, tf: ata::Taskfile, write: bool, bytes: usize) -> Result<(), IoError> {
        debug_assert!(bytes <= BOUNCE_BYTES && bytes.is_multiple_of(2));
        let fis = tf.h2d_fis();
        for (i, w) in fis.chunks(4).enumerate() {
            self.put32(CT_OFF + 4 * i, u32::from_le_bytes([w[0], w[1], w[2], w[3]]));
        }
        let prdtl = u32::from(bytes > 0);
        // Header 0: FIS length 5 dwords, write bit, PRDT length.
        self.put32(CL_OFF, 5 | if write { 1 << 6 } else { 0 } | (prdtl << 16));
        self.put32(CL_OFF + 4, 0);
        let ct = self.control_phys + CT_OFF as u64;
        self.put32(CL_OFF + 8, ct as u32);
        self.put32(CL_OFF + 12, (ct >> 32) as u32);
        if bytes > 0 {
            self.put32(PRDT_OFF, self.bounce_phys as u32);
            self.put32(PRDT_OFF + 4, (self.bounce_phys >> 32) as u32);
            self.put32(PRDT_OFF + 8, 0);
            self.put32(PRDT_OFF + 12, (bytes - 1) as u32);
        }
        // The command list, table and any written data are in memory
        // before the device is told to fetch them.
        fence(Ordering::SeqCst);
        self.write(P_IS, u32::MAX);
        self.write(P_CI, 1);
        let finished = self.wait(|s| s.read(P_CI) & 1 == 0 || s.read(P_IS) & IS_TFES != 0);
        fence(Ordering::SeqCst);
        let tfd = self.read(P_TFD);
        let failed = self.read(P_IS) & IS_TFES != 0 || tfd as u8 & (STATUS_ERR | STATUS_DF) != 0;
        if !finished || failed {
            // Restart the port so the next command finds it idle.
            let _ = self.start();
            return Err(IoError::Device(if finished {
                tfd & 0xFFFF
            } else {
                0x1_0000
            }));
        }
        Ok(())
    }

    fn bounce(&mut self, len: usize) -> &mut [u8] {
        // SAFETY: the bounce buffer is BOUNCE_BYTES of DMA memory this driver
        // owns; the device writes it only during `command`, which has
        // returned (the port is idle) whenever this slice is alive.
        unsafe { core::slice::from_raw_parts_mut(self.bounce.as_ptr(), len.min(BOUNCE_BYTES)) }
    }

    fn transfer(
        &mut self,
        op: Op,
        lba: u64,
        len: usize,
        mut data: impl FnMut(&mut [u8], usize),
    ) -> Result<(), IoError> {
        let ss = self.id.sector_size;
        check_request(self.id.sectors, ss, lba, len)?;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(BOUNCE_BYTES);
            let at = lba + (done / ss) as u64;
            let tf = ata::taskfile(op, at, (n / ss) as u32, self.id.lba48, true)
                .map_err(|_| IoError::OutOfRange)?;
            if op == Op::Write {
                data(self.bounce(n), done);
            }
            self.command(tf, op == Op::Write, n)?;
            if op == Op::Read {
                data(self.bounce(n), done);
            }
            done += n;
        }
        Ok(())
    }
}

impl BlockDevice for Ahci {
    fn sector_size(&self) -> usize {
        self.id.sector_size
    }

    fn sector_count(&self) -> u64 {
        self.id.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let len = buf.len();
        self.transfer(Op::Read, lba, len, |b, at| {
            buf[at..at + b.len()].copy_from_slice(b)
        })
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        self.transfer(Op::Write, lba, buf.len(), |b, at| {
            let n = b.len();
            b.copy_from_slice(&buf[at..at + n])
        })
    }

    fn flush(&mut self) -> Result<(), IoError> {
        let tf = ata::taskfile(Op::Flush, 0, 0, self.id.lba48, true)
            .map_err(|_| IoError::Device(0x2_0000))?;
        self.command(tf, false, 0)
    }
}

fn dma_pages(pages: usize) -> (u64, NonNull<u8>) {
    let (phys, virt) = KernelHal::dma_alloc(pages, BufferDirection::Both);
    (phys, virt)
}

/// Sets up `port` of the HBA at `regs` and reads its disk's identity.
fn open_port(regs: Mmio, port: usize) -> Result<Ahci, &'static str> {
    let (control_phys, control) = dma_pages(1);
    let (bounce_phys, bounce) = dma_pages(BOUNCE_BYTES / PAGE_SIZE);
    let mut dev = Ahci {
        regs,
        port,
        control,
        control_phys,
        bounce,
        bounce_phys,
        id: Identity {
            model: alloc::string::String::new(),
            sectors: 0,
            lba48: true,
            sector_size: 512,
        },
    };
    dev.start()?;
    let tf = ata::taskfile(Op::Identify, 0, 0, true, true).map_err(|_| "identify")?;
    dev.command(tf, false, 512)
        .map_err(|_| "IDENTIFY DEVICE failed")?;
    let mut data = [0u8; 512];
    data.copy_from_slice(dev.bounce(512));
    dev.id = ata::parse_identify(&data).map_err(|_| "unusable IDENTIFY data")?;
    if !dev.id.lba48 {
        return Err("the disk has no 48-bit addressing");
    }
    Ok(dev)
}

/// The first ATA disk on the first AHCI controller that has one.
pub fn probe(
    root: &mut PciRoot<PortIoCam>,
    functions: &[(DeviceFunction, DeviceFunctionInfo)],
) -> Option<Disk> {
    for (df, info) in functions {
        // Mass storage, SATA, AHCI 1.0 programming interface.
        if (info.class, info.subclass, info.prog_if) != (0x01, 0x06, 0x01) {
            continue;
        }
        let Some(abar) = pci::memory_bar(*df, 5) else {
            println!("warning: AHCI at {df}: no register BAR");
            continue;
        };
        pci::enable_device(root, *df);
        // SAFETY: BAR 5 of an AHCI function is its register window
        // (0x100 + 0x80 per port, 32 ports at most); this driver alone
        // drives the controller.
        let regs = unsafe { Mmio::map::<KernelHal>(abar, 0x1100) };
        regs.write32(GHC, (regs.read32(GHC) | GHC_AE) & !GHC_IE);
        let implemented = regs.read32(PI);
        for port in 0..32 {
            if implemented & (1 << port) == 0 {
                continue;
            }
            let base = 0x100 + 0x80 * port;
            let present = regs.read32(base + P_SSTS) & 0xF == 3;
            if !present || regs.read32(base + P_SIG) != SIG_ATA {
                continue;
            }
            match open_port(regs, port) {
                Ok(dev) => {
                    let size = dev.id.sectors * dev.id.sector_size as u64;
                    let description = format!(
                        "SATA {} {} (ahci pci {df} port {port})",
                        dev.id.model,
                        size_text(size)
                    );
                    return Some(Disk {
                        device: Box::new(dev),
                        description,
                    });
                }
                Err(why) => println!("warning: AHCI at {df} port {port}: {why}"),
            }
        }
    }
    None
}
