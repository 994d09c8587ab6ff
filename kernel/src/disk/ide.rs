//! ATA disks on an IDE controller (QEMU `pc`'s PIIX3, VMware IDE, Hyper-V
//! generation 1), from the ATA/ATAPI-6 register interface.
//!
//! PIO, polled, interrupts masked (nIEN): the config store moves a few
//! KiB per save, so bus-master DMA would not be noticed. Each sector is
//! one REP INSW/OUTSW (one trap from ring 3). Channels in compatibility
//! mode use the legacy ports (0x1F0/0x3F6, 0x170/0x376); channels in
//! native mode use their I/O BARs. ATAPI devices (the CD-ROM) are skipped.
//! The command encodings come from lb-core's `store::ata`.

use super::{Disk, size_text};
use crate::cpu::Port;
use crate::println;
use alloc::boxed::Box;
use alloc::format;
use embassy_time::{Duration, Instant};
use lb_core::store::ata::{self, Identity, Op, Reg, STATUS_BSY, STATUS_DF, STATUS_DRQ, STATUS_ERR};
use lb_core::store::device::check_request;
use lb_core::store::{BlockDevice, IoError};
use net::pci::{self, PortIoCam};
use virtio_drivers::transport::pci::bus::{DeviceFunction, DeviceFunctionInfo, PciRoot};

const TIMEOUT: Duration = Duration::from_secs(5);
/// Sectors per command: what LBA28 allows, so one path serves both modes.
const CHUNK_SECTORS: u32 = 128;
/// Device control register: interrupts off.
const CONTROL_NIEN: u8 = 0x02;

#[derive(Clone, Copy)]
struct Channel {
    base: u16,
    control: u16,
}

struct Ide {
    channel: Channel,
    /// 0 = master, 1 = slave.
    drive: u8,
    id: Identity,
}

impl Channel {
    fn port(&self, offset: u16) -> Port {
        // SAFETY: the command and control blocks of an IDE channel the
        // kernel owns (found on its PCI function); PIO moves data through
        // the CPU, so no device access reaches memory Rust owns.
        unsafe { Port::new(self.base + offset) }
    }

    fn set(&self, r: Reg, v: u8) {
        self.port(r as u16).write8(v)
    }

    fn get(&self, r: Reg) -> u8 {
        self.port(r as u16).read8()
    }

    fn status(&self) -> u8 {
        self.port(7).read8()
    }

    fn alt_status(&self) -> u8 {
        // SAFETY: as for `port`.
        unsafe { Port::new(self.control) }.read8()
    }

    fn set_control(&self, v: u8) {
        // SAFETY: as for `port`.
        unsafe { Port::new(self.control) }.write8(v)
    }

    /// Selects a drive and waits the 400 ns the device needs to answer.
    fn select(&self, drive: u8, device: u8) {
        self.set(Reg::Device, device | (drive << 4));
        for _ in 0..4 {
            self.alt_status();
        }
    }

    /// Waits for BSY to clear, then returns the status.
    fn wait_ready(&self) -> Result<u8, IoError> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let s = self.status();
            if s & STATUS_BSY == 0 {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(IoError::Device(0x1_0000));
            }
            core::hint::spin_loop();
        }
    }

    /// Waits until the device wants data moved (DRQ), or failed.
    fn wait_data(&self) -> Result<(), IoError> {
        let s = self.wait_ready()?;
        if s & (STATUS_ERR | STATUS_DF) != 0 {
            return Err(IoError::Device(
                u32::from(s) | u32::from(self.port(1).read8()) << 8,
            ));
        }
        if s & STATUS_DRQ == 0 {
            return Err(IoError::Device(u32::from(s) | 0x2_0000));
        }
        Ok(())
    }

    fn issue(&self, drive: u8, tf: ata::Taskfile) -> Result<(), IoError> {
        self.select(drive, tf.device & !0x10);
        self.wait_ready()?;
        for (reg, v) in tf.register_writes() {
            match reg {
                Reg::Device => self.select(drive, v & !0x10),
                _ => self.set(reg, v),
            }
        }
        Ok(())
    }
}

impl Ide {
    fn transfer(
        &mut self,
        op: Op,
        lba: u64,
        len: usize,
        buf: &mut dyn FnMut(&mut [u16; 256], usize),
    ) -> Result<(), IoError> {
        let ss = self.id.sector_size;
        let sectors = check_request(self.id.sectors, ss, lba, len)?;
        let mut done: u64 = 0;
        let mut words = [0u16; 256];
        while done < sectors {
            let n = (sectors - done).min(u64::from(CHUNK_SECTORS)) as u32;
            let tf = ata::taskfile(op, lba + done, n, self.id.lba48, false)
                .map_err(|_| IoError::OutOfRange)?;
            let ch = self.channel;
            ch.issue(self.drive, tf)?;
            for k in 0..u64::from(n) {
                let at = ((done + k) as usize) * ss;
                ch.wait_data()?;
                if op == Op::Write {
                    buf(&mut words, at);
                    ch.port(0).write_words(&words);
                } else {
                    ch.port(0).read_words(&mut words);
                    buf(&mut words, at);
                }
            }
            let s = ch.wait_ready()?;
            if s & (STATUS_ERR | STATUS_DF) != 0 {
                return Err(IoError::Device(u32::from(s)));
            }
            done += u64::from(n);
        }
        Ok(())
    }
}

impl BlockDevice for Ide {
    fn sector_size(&self) -> usize {
        self.id.sector_size
    }

    fn sector_count(&self) -> u64 {
        self.id.sectors
    }

    fn read(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), IoError> {
        let len = buf.len();
        self.transfer(Op::Read, lba, len, &mut |w, at| {
            for (i, word) in w.iter().enumerate() {
                buf[at + 2 * i..at + 2 * i + 2].copy_from_slice(&word.to_le_bytes());
            }
        })
    }

    fn write(&mut self, lba: u64, buf: &[u8]) -> Result<(), IoError> {
        self.transfer(Op::Write, lba, buf.len(), &mut |w, at| {
            for (i, word) in w.iter_mut().enumerate() {
                *word = u16::from_le_bytes([buf[at + 2 * i], buf[at + 2 * i + 1]]);
            }
        })
    }

    fn flush(&mut self) -> Result<(), IoError> {
        let tf = ata::taskfile(Op::Flush, 0, 0, self.id.lba48, false)
            .map_err(|_| IoError::Device(0x3_0000))?;
        self.channel.issue(self.drive, tf)?;
        let s = self.channel.wait_ready()?;
        if s & (STATUS_ERR | STATUS_DF) != 0 {
            return Err(IoError::Device(u32::from(s)));
        }
        Ok(())
    }
}

/// IDENTIFY DEVICE on one drive; `None` when there is no ATA disk there.
fn identify(ch: Channel, drive: u8) -> Option<Result<Identity, &'static str>> {
    ch.set_control(CONTROL_NIEN);
    ch.select(drive, 0xA0);
    if ch.status() == 0xFF {
        return None; // floating bus: no drive
    }
    for r in [Reg::Count, Reg::LbaLow, Reg::LbaMid, Reg::LbaHigh] {
        ch.set(r, 0);
    }
    ch.set(Reg::Command, ata::CMD_IDENTIFY);
    if ch.status() == 0 {
        return None;
    }
    ch.wait_ready().ok()?;
    // ATAPI and SATA-bridge devices answer with a signature here.
    if ch.get(Reg::LbaMid) != 0 || ch.get(Reg::LbaHigh) != 0 {
        return None;
    }
    if ch.wait_data().is_err() {
        return None;
    }
    let mut words = [0u16; 256];
    ch.port(0).read_words(&mut words);
    let mut data = [0u8; 512];
    for (i, w) in words.iter().enumerate() {
        data[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
    }
    Some(ata::parse_identify(&data).map_err(|_| "unusable IDENTIFY data"))
}

/// The first ATA disk on the first IDE controller that has one.
pub fn probe(
    root: &mut PciRoot<PortIoCam>,
    functions: &[(DeviceFunction, DeviceFunctionInfo)],
) -> Option<Disk> {
    for (df, info) in functions {
        if (info.class, info.subclass) != (0x01, 0x01) {
            continue;
        }
        pci::enable_device(root, *df);
        // Programming interface bit 0 / bit 2: primary / secondary channel
        // in native mode (I/O BARs 0-1 / 2-3) rather than compatibility.
        let channel = |native: bool, bar: u8, legacy: Channel| -> Option<Channel> {
            if !native {
                return Some(legacy);
            }
            Some(Channel {
                base: pci::io_bar(*df, bar)?,
                control: pci::io_bar(*df, bar + 1)? + 2,
            })
        };
        let channels = [
            channel(
                info.prog_if & 1 != 0,
                0,
                Channel {
                    base: 0x1F0,
                    control: 0x3F6,
                },
            ),
            channel(
                info.prog_if & 4 != 0,
                2,
                Channel {
                    base: 0x170,
                    control: 0x376,
                },
            ),
        ];
        for (c, ch) in channels.into_iter().enumerate() {
            let Some(ch) = ch else { continue };
            for drive in 0..2u8 {
                match identify(ch, drive) {
                    None => {}
                    Some(Err(why)) => println!("warning: IDE at {df}: {why}"),
                    Some(Ok(id)) if id.sector_size != 512 => {
                        println!(
                            "warning: IDE at {df}: {}-byte sectors are not driven",
                            id.sector_size
                        )
                    }
                    Some(Ok(id)) => {
                        let size = id.sectors * 512;
                        let description = format!(
                            "IDE {} {} (pci {df} {} {}, PIO)",
                            id.model,
                            size_text(size),
                            ["primary", "secondary"][c],
                            ["master", "slave"][usize::from(drive)],
                        );
                        return Some(Disk {
                            device: Box::new(Ide {
                                channel: ch,
                                drive,
                                id,
                            }),
                            description,
                        });
                    }
                }
            }
        }
    }
    None
}
