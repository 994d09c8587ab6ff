//! PCI configuration space through port I/O (configuration mechanism #1:
//! address to 0xCF8, data at 0xCFC), which q35, i440fx, VMware and Hyper-V
//! generation 1 all provide; bus enumeration; MSI-X for virtio queues.

use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};
use virtio_drivers::Hal;
use virtio_drivers::transport::pci::bus::{
    Command, ConfigurationAccess, DeviceFunction, DeviceFunctionInfo, HeaderType, PciRoot,
};

/// Configuration space access: ECAM when the host bridge has it, else
/// mechanism #1 over I/O ports 0xCF8/0xCFC.
///
/// It also remembers BAR sizes. `virtio-drivers` sizes the device's BAR each
/// time it maps one of its four configuration structures, and every sizing
/// turns memory decoding off and on again through the command register; under
/// QEMU each such toggle rebuilds the guest memory map (0.3-0.8 ms each under
/// KVM-PVM). A repeated sizing of a BAR whose value has not changed is
/// therefore answered from memory, and the decode-off write that precedes it
/// is held back and dropped when the matching restore follows: the device
/// sees the same end state, without the toggles. Any other access first
/// performs a held-back write, so nothing else can observe the difference.
///
/// Only the unsafe [`PortIoCam::new`] makes one; every function here that
/// touches configuration space takes one (or a `PciRoot` over one), so safe
/// code cannot reach the configuration ports without that promise.
#[derive(Debug)]
pub struct PortIoCam {
    /// Sizes learned: (function, BAR register, its value, all-ones read-back).
    bars: RefCell<Vec<(DeviceFunction, u8, u32, u32)>>,
    /// A real sizing under way: (function, BAR register, original value).
    learning: Cell<Option<(DeviceFunction, u8, u32)>>,
    /// Sizings answered from `bars` (bit per BAR of one function): those
    /// registers read back their all-ones value until restored.
    replaying: Cell<Option<(DeviceFunction, u8)>>,
    /// Last value read from each register we track: (function, offset, value).
    last_read: Cell<Option<(DeviceFunction, u8, u32)>>,
    /// Command register read most recently: (function, value).
    last_command: Cell<Option<(DeviceFunction, u32)>>,
    /// Held-back decode-off write: (function, value written, value before).
    held_command: Cell<Option<(DeviceFunction, u32, u32)>>,
}

const COMMAND: u8 = 0x04;
const DECODE: u32 = 0x3; // I/O space | memory space

fn is_bar(offset: u8) -> bool {
    (0x10..=0x24).contains(&offset)
}

/// Bit of BAR register `offset` in `PortIoCam::replaying`.
fn bar_bit(offset: u8) -> u8 {
    1 << ((offset - 0x10) / 4)
}

impl PortIoCam {
    /// # Safety
    /// The caller must own the PCI configuration ports (one instance at a time
    /// doing writes, on a machine that has them).
    pub unsafe fn new() -> Self {
        PortIoCam::blank()
    }

    /// A second handle (private: the caller already holds one, or is this
    /// module acting for a function that was handed one).
    fn blank() -> Self {
        PortIoCam {
            bars: RefCell::new(Vec::new()),
            learning: Cell::new(None),
            replaying: Cell::new(None),
            last_read: Cell::new(None),
            last_command: Cell::new(None),
            held_command: Cell::new(None),
        }
    }

    /// Performs a held-back command write.
    fn release_command(&self) {
        if let Some((df, value, _)) = self.held_command.take() {
            raw_write(df, COMMAND, value);
        }
    }
}

fn address(df: DeviceFunction, offset: u8) -> u32 {
    0x8000_0000
        | (u32::from(df.bus) << 16)
        | (u32::from(df.device) << 11)
        | (u32::from(df.function) << 8)
        | u32::from(offset & 0xFC)
}

#[cfg(target_arch = "x86_64")]
mod port {
    use core::arch::asm;
    pub fn out32(port: u16, v: u32) {
        // SAFETY: PortIoCam::new's caller owns the configuration ports.
        unsafe {
            asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags))
        }
    }
    pub fn in32(port: u16) -> u32 {
        let v: u32;
        // SAFETY: as for `out32`.
        unsafe {
            asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags))
        }
        v
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod port {
    pub fn out32(_: u16, _: u32) {}
    pub fn in32(_: u16) -> u32 {
        u32::MAX
    }
}

/// How configuration space is reached, when not with the port instructions
/// directly: the kernel runs in ring 3 and registers functions that do the
/// address write and the data access in one trap.
pub struct ConfigIo {
    /// Reads the dword at a mechanism-#1 address.
    pub read: fn(u32) -> u32,
    /// Writes the dword at a mechanism-#1 address.
    pub write: fn(u32, u32),
}

static CONFIG_IO: AtomicPtr<ConfigIo> = AtomicPtr::new(core::ptr::null_mut());

/// Routes every configuration access through `io` from now on.
///
/// # Safety
/// `io`'s functions must perform configuration mechanism #1 accesses (the
/// address given, the data read or written) and nothing else.
pub unsafe fn set_config_io(io: &'static ConfigIo) {
    CONFIG_IO.store(core::ptr::from_ref(io).cast_mut(), Ordering::Release);
}

/// Base of the PCIe memory-mapped configuration space (ECAM) when found,
/// else 0: one memory access per configuration dword, where mechanism #1
/// needs an address write and a data access (two traps when virtualised).
static ECAM_BASE: AtomicU64 = AtomicU64::new(0);
/// Buses the ECAM window covers.
static ECAM_BUSES: AtomicU32 = AtomicU32::new(0);

/// Looks for the ECAM window of a Q35 host bridge (Intel 82G33 MCH, what
/// QEMU's q35 machine has): its PCIEXBAR register, which the firmware
/// programs. Other chipsets keep mechanism #1 (ACPI MCFG is not read).
fn probe_ecam() {
    let cam = raw();
    let host = DeviceFunction {
        bus: 0,
        device: 0,
        function: 0,
    };
    if cam.read_word(host, 0) != 0x29C0_8086 {
        return;
    }
    let lo = cam.read_word(host, 0x60);
    let hi = cam.read_word(host, 0x64);
    if lo & 1 == 0 {
        return;
    }
    // Length field: 256, 128 or 64 buses (1 MiB each); base aligned to it.
    let buses: u32 = match (lo >> 1) & 3 {
        0 => 256,
        1 => 128,
        2 => 64,
        _ => return,
    };
    let base =
        ((u64::from(hi) << 32) | u64::from(lo)) & 0x7F_F000_0000 & !(u64::from(buses << 20) - 1);
    // Only inside the identity-mapped first 4 GiB.
    if base == 0 || base + (u64::from(buses) << 20) > (1 << 32) {
        return;
    }
    ECAM_BUSES.store(buses, Ordering::Relaxed);
    ECAM_BASE.store(base, Ordering::Release);
}

fn ecam_address(df: DeviceFunction, offset: u8) -> Option<*mut u32> {
    let base = ECAM_BASE.load(Ordering::Acquire);
    if base == 0 || u32::from(df.bus) >= ECAM_BUSES.load(Ordering::Relaxed) {
        return None;
    }
    let off = (u64::from(df.bus) << 20)
        | (u64::from(df.device & 31) << 15)
        | (u64::from(df.function & 7) << 12)
        | u64::from(offset & 0xFC);
    Some((base + off) as *mut u32)
}

fn config_io() -> Option<&'static ConfigIo> {
    // SAFETY: only `set_config_io` stores, and only `&'static` references.
    unsafe { CONFIG_IO.load(Ordering::Acquire).as_ref() }
}

/// A second handle, for registers `PciRoot` does not expose.
fn raw() -> PortIoCam {
    PortIoCam::blank()
}

fn raw_read(df: DeviceFunction, offset: u8) -> u32 {
    if let Some(p) = ecam_address(df, offset) {
        // SAFETY: inside the ECAM window the firmware set up (identity-mapped
        // device memory below 4 GiB); a dword-aligned configuration register.
        return unsafe { p.read_volatile() };
    }
    if let Some(io) = config_io() {
        return (io.read)(address(df, offset));
    }
    port::out32(0xCF8, address(df, offset));
    port::in32(0xCFC)
}

fn raw_write(df: DeviceFunction, offset: u8, data: u32) {
    if let Some(p) = ecam_address(df, offset) {
        // SAFETY: as in `raw_read`.
        return unsafe { p.write_volatile(data) };
    }
    if let Some(io) = config_io() {
        return (io.write)(address(df, offset), data);
    }
    port::out32(0xCF8, address(df, offset));
    port::out32(0xCFC, data);
}

impl ConfigurationAccess for PortIoCam {
    fn read_word(&self, df: DeviceFunction, offset: u8) -> u32 {
        let offset = offset & 0xFC;
        if is_bar(offset)
            && self
                .replaying
                .get()
                .is_some_and(|(rdf, bits)| rdf == df && bits & bar_bit(offset) != 0)
        {
            let bars = self.bars.borrow();
            if let Some(&(.., mask)) = bars.iter().find(|b| (b.0, b.1) == (df, offset)) {
                return mask;
            }
        }
        // BAR values do not depend on decoding; anything else sees the held write.
        if !(is_bar(offset) && self.held_command.get().is_some_and(|h| h.0 == df)) {
            self.release_command();
        }
        let v = raw_read(df, offset);
        if let Some((ldf, loff, orig)) = self.learning.get()
            && (ldf, loff) == (df, offset)
        {
            let mut bars = self.bars.borrow_mut();
            bars.retain(|b| (b.0, b.1) != (df, offset));
            bars.push((df, offset, orig, v));
        }
        if offset == COMMAND {
            self.last_command.set(Some((df, v)));
        }
        self.last_read.set(Some((df, offset, v)));
        v
    }

    fn write_word(&mut self, df: DeviceFunction, offset: u8, data: u32) {
        let offset = offset & 0xFC;
        if offset == COMMAND {
            if let Some((hdf, _, before)) = self.held_command.get()
                && hdf == df
                && data == before & 0xFFFF
            {
                // The restore after a replayed sizing: decoding never went off.
                self.held_command.set(None);
                return;
            }
            self.release_command();
            if let Some((cdf, before)) = self.last_command.get()
                && cdf == df
                && before & DECODE != 0
                && data == before & 0xFFFF & !DECODE
            {
                self.held_command.set(Some((df, data, before)));
                return;
            }
            self.last_command.set(None);
            return raw_write(df, offset, data);
        }
        if is_bar(offset) {
            let known = self
                .bars
                .borrow()
                .iter()
                .find(|b| (b.0, b.1) == (df, offset))
                .map(|b| b.2);
            if data == u32::MAX {
                let current = self
                    .last_read
                    .get()
                    .filter(|r| (r.0, r.1) == (df, offset))
                    .map(|r| r.2);
                if known.is_some() && known == current {
                    let bits = match self.replaying.get() {
                        Some((rdf, bits)) if rdf == df => bits,
                        _ => 0,
                    };
                    self.replaying.set(Some((df, bits | bar_bit(offset))));
                    return;
                }
                self.release_command();
                if let Some(orig) = current {
                    self.learning.set(Some((df, offset, orig)));
                }
                return raw_write(df, offset, data);
            }
            if let Some((rdf, bits)) = self.replaying.get()
                && rdf == df
                && bits & bar_bit(offset) != 0
            {
                let rest = bits & !bar_bit(offset);
                self.replaying.set((rest != 0).then_some((df, rest)));
                if known == Some(data) {
                    return; // restoring the value it never lost
                }
            }
            if self
                .learning
                .get()
                .is_some_and(|l| (l.0, l.1) == (df, offset))
            {
                self.learning.set(None);
            }
            if known.is_some_and(|k| k != data) {
                self.bars
                    .borrow_mut()
                    .retain(|b| (b.0, b.1) != (df, offset));
            }
            self.release_command();
            return raw_write(df, offset, data);
        }
        self.release_command();
        raw_write(df, offset, data)
    }

    unsafe fn unsafe_clone(&self) -> Self {
        // The clone must not see a state that only this handle knows about.
        self.release_command();
        PortIoCam::blank()
    }
}

/// Every function on bus 0 and on the buses behind PCI-PCI bridges, in
/// bus/device/function order.
///
/// Switches to ECAM first when the host bridge has it (see [`probe_ecam`]).
/// Each configuration access is a VM exit (slow under nested virtualisation),
/// so this reads only function 0 of empty slots and looks at functions 1-7
/// only on multi-function devices, and scans only buses that bridges lead to.
/// `_cam` shows the caller owns configuration space (see [`PortIoCam`]).
pub fn enumerate(_cam: &PortIoCam) -> Vec<(DeviceFunction, DeviceFunctionInfo)> {
    probe_ecam();
    let cam = raw();
    let mut out = Vec::new();
    let mut buses = alloc::vec![0u8];
    let mut seen = [false; 256];
    while let Some(bus) = buses.pop() {
        if core::mem::replace(&mut seen[usize::from(bus)], true) {
            continue;
        }
        for device in 0..32u8 {
            for function in 0..8u8 {
                let df = DeviceFunction {
                    bus,
                    device,
                    function,
                };
                let id = cam.read_word(df, 0);
                if id & 0xFFFF == 0xFFFF {
                    if function == 0 {
                        break;
                    }
                    continue;
                }
                let class = cam.read_word(df, 0x08);
                let bist_header = cam.read_word(df, 0x0C);
                let header = (bist_header >> 16) as u8;
                let header_type = HeaderType::from(header & 0x7F);
                if header_type == HeaderType::PciPciBridge {
                    let secondary = (cam.read_word(df, 0x18) >> 8) as u8;
                    if secondary != 0 {
                        buses.push(secondary);
                    }
                }
                out.push((
                    df,
                    DeviceFunctionInfo {
                        vendor_id: id as u16,
                        device_id: (id >> 16) as u16,
                        class: (class >> 24) as u8,
                        subclass: (class >> 16) as u8,
                        prog_if: (class >> 8) as u8,
                        revision: class as u8,
                        header_type,
                    },
                ));
                if function == 0 && header & 0x80 == 0 {
                    break;
                }
            }
        }
    }
    out.sort_by_key(|(df, _)| (df.bus, df.device, df.function));
    out
}

/// Lets the device decode its BARs and master DMA.
///
/// First gives memory BARs the firmware left unassigned an address
/// (see [`assign_missing_bars`]).
pub fn enable_device(root: &mut PciRoot<PortIoCam>, df: DeviceFunction) {
    assign_missing_bars(df);
    let (_, cmd) = root.get_status_command(df);
    root.set_command(
        df,
        cmd | Command::MEMORY_SPACE | Command::IO_SPACE | Command::BUS_MASTER,
    );
}

/// Where unassigned 64-bit BARs go: 256 GiB, far above any RAM this
/// appliance has, inside the 39-bit physical space every x86-64 CPU has.
static NEXT_BAR64: AtomicU64 = AtomicU64::new(0x40_0000_0000);
/// Where unassigned 32-bit BARs go: 0xC000_0000 up to the IOAPIC at
/// 0xFEC0_0000, above the q35 ECAM window and the low RAM of any `-m` this
/// appliance runs with. Only used when the firmware assigned nothing there.
static NEXT_BAR32: AtomicU64 = AtomicU64::new(0xC000_0000);
const BAR32_END: u64 = 0xFEC0_0000;

/// Assigns an address to each memory BAR of `df` that reads 0.
///
/// Minimal firmware (qboot, which starts in milliseconds where SeaBIOS takes
/// seconds under nested virtualisation) leaves BARs unassigned. Each such BAR
/// is sized with decoding off and placed at the next suitably aligned address
/// of its window; BARs above 4 GiB are mapped by the HAL when used.
fn assign_missing_bars(df: DeviceFunction) {
    // Firmware that assigns BARs assigns them all: stop at the first one set
    // (usually the first read), so that unimplemented BARs (which also read
    // 0) are not sized for nothing on the common path.
    for bar in 0..6u8 {
        let v = raw_read(df, 0x10 + 4 * bar);
        if v & if v & 1 != 0 { !0x3 } else { !0xF } != 0 {
            return;
        }
    }
    let mut bar = 0u8;
    while bar < 6 {
        let off = 0x10 + 4 * bar;
        let lo = raw_read(df, off);
        let wide = lo & 1 == 0 && (lo >> 1) & 3 == 2 && bar < 5;
        let step = if wide { 2 } else { 1 };
        if lo & 1 != 0 || lo & !0xF != 0 {
            bar += step; // I/O BAR, or assigned
            continue;
        }
        let hi = if wide { raw_read(df, off + 4) } else { 0 };
        if hi != 0 {
            bar += step;
            continue;
        }
        let cmd = raw_read(df, COMMAND) & 0xFFFF;
        raw_write(df, COMMAND, cmd & !DECODE);
        raw_write(df, off, u32::MAX);
        let mut mask = u64::from(raw_read(df, off) & !0xF);
        if wide {
            raw_write(df, off + 4, u32::MAX);
            mask |= u64::from(raw_read(df, off + 4)) << 32;
        } else {
            mask |= 0xFFFF_FFFF_0000_0000;
        }
        let size = (!mask).wrapping_add(1).max(0x1000);
        let (next, end) = if wide {
            (&NEXT_BAR64, u64::MAX)
        } else {
            (&NEXT_BAR32, BAR32_END)
        };
        let base = next.load(Ordering::Relaxed).next_multiple_of(size);
        let (new_lo, new_hi) = if mask != 0xFFFF_FFFF_0000_0000
            && size.is_power_of_two()
            && base.checked_add(size).is_some_and(|e| e <= end)
        {
            next.store(base + size, Ordering::Relaxed);
            ((base as u32) | (lo & 0xF), (base >> 32) as u32)
        } else {
            (lo, hi) // unimplemented BAR (reads back 0) or no room: leave it
        };
        raw_write(df, off, new_lo);
        if wide {
            raw_write(df, off + 4, new_hi);
        }
        raw_write(df, COMMAND, cmd);
        bar += step;
    }
}

const CAP_MSIX: u8 = 0x11;
const CAP_VENDOR: u8 = 0x09;
const VIRTIO_PCI_CAP_COMMON_CFG: u8 = 1;
const VIRTIO_PCI_CAP_NOTIFY_CFG: u8 = 2;
const COMMON_MSIX_CONFIG: usize = 0x10;
const COMMON_QUEUE_SELECT: usize = 0x16;
const COMMON_QUEUE_MSIX_VECTOR: usize = 0x1A;
const COMMON_QUEUE_NOTIFY_OFF: usize = 0x1E;
const VIRTIO_NO_VECTOR: u16 = 0xFFFF;

/// The virtio capability of `cfg_type` (common, notify, ...) of `df`:
/// (BAR address + offset, capability offset in configuration space).
fn virtio_cap<H: Hal>(
    root: &mut PciRoot<PortIoCam>,
    df: DeviceFunction,
    cfg_type: u8,
    len: usize,
) -> Option<(*mut u8, u8)> {
    let cap = root
        .capabilities(df)
        .find(|c| c.id == CAP_VENDOR && (c.private_header >> 8) as u8 == cfg_type)?;
    let bar = raw().read_word(df, cap.offset + 4) as u8;
    let off = raw().read_word(df, cap.offset + 8);
    let base = bar_address(df, bar)?;
    // SAFETY: the capability places the structure inside a memory BAR of
    // this device; the HAL maps device memory.
    let p = unsafe { H::mmio_phys_to_virt(base + u64::from(off), len).as_ptr() };
    Some((p, cap.offset))
}

/// The doorbell address of each of `queues` of a modern virtio device: one
/// 16-bit write there notifies the queue, where `virtio-drivers`' transport
/// spends three register accesses (select, read offset, write) on each.
pub fn virtio_notify_addresses<H: Hal, const N: usize>(
    root: &mut PciRoot<PortIoCam>,
    df: DeviceFunction,
    queues: [u16; N],
) -> Option<[NonNull<u16>; N]> {
    let (common, _) = virtio_cap::<H>(root, df, VIRTIO_PCI_CAP_COMMON_CFG, 0x38)?;
    let (notify, cap) = virtio_cap::<H>(root, df, VIRTIO_PCI_CAP_NOTIFY_CFG, 4096)?;
    let multiplier = raw().read_word(df, cap + 16) as usize;
    let mut out = [NonNull::dangling(); N];
    for (slot, &q) in out.iter_mut().zip(queues.iter()) {
        // SAFETY: queue_select and queue_notify_off are u16 fields of the
        // common configuration structure; the doorbell lies inside the
        // notification structure (virtio 1.1, 4.1.4.4).
        let p = unsafe {
            (common.add(COMMON_QUEUE_SELECT) as *mut u16).write_volatile(q);
            let off = (common.add(COMMON_QUEUE_NOTIFY_OFF) as *mut u16).read_volatile();
            notify.add(usize::from(off) * multiplier).cast::<u16>()
        };
        *slot = NonNull::new(p)?;
    }
    Some(out)
}

/// Base address of memory BAR `bar` of `df`, if it is an assigned memory BAR.
pub fn memory_bar(df: DeviceFunction, bar: u8) -> Option<u64> {
    bar_address(df, bar)
}

/// Base port of I/O BAR `bar` of `df`, if it is an assigned I/O BAR.
pub fn io_bar(df: DeviceFunction, bar: u8) -> Option<u16> {
    if bar > 5 {
        return None;
    }
    let v = raw().read_word(df, 0x10 + 4 * bar);
    let port = v & 0xFFFC;
    (v & 1 == 1 && port != 0).then_some(port as u16)
}

/// The legacy interrupt line (the IRQ the firmware routed INTA#..INTD# of
/// `df` to, which is also its I/O APIC input on QEMU's pc and q35
/// machines); `None` when the device has no interrupt pin or none was
/// assigned.
pub fn interrupt_line(df: DeviceFunction) -> Option<u8> {
    let v = raw().read_word(df, 0x3C);
    let (line, pin) = (v as u8, (v >> 8) as u8);
    (pin != 0 && line != 0 && line != 0xFF).then_some(line)
}

const CAP_MSI: u8 = 0x05;

/// Enables MSI on `df` with one message (`msg_addr`, `msg_data`); false if
/// it has no MSI capability.
pub fn enable_msi(
    root: &mut PciRoot<PortIoCam>,
    df: DeviceFunction,
    msg_addr: u64,
    msg_data: u32,
) -> bool {
    let Some(cap) = root.capabilities(df).find(|c| c.id == CAP_MSI) else {
        return false;
    };
    let control = cap.private_header;
    let wide = control & (1 << 7) != 0;
    let mut cam = raw();
    cam.write_word(df, cap.offset + 4, msg_addr as u32);
    let data_at = if wide {
        cam.write_word(df, cap.offset + 8, (msg_addr >> 32) as u32);
        cap.offset + 12
    } else {
        cap.offset + 8
    };
    let old = cam.read_word(df, data_at);
    cam.write_word(df, data_at, (old & 0xFFFF_0000) | (msg_data & 0xFFFF));
    // One message (multiple message enable 0), MSI enable.
    let header = cam.read_word(df, cap.offset) & 0xFFFF;
    let control = (control & !(0x7 << 4)) | 1;
    cam.write_word(df, cap.offset, header | (u32::from(control) << 16));
    true
}

/// Base address of memory BAR `bar` (read, not sized: sizing costs a dozen
/// configuration accesses).
fn bar_address(df: DeviceFunction, bar: u8) -> Option<u64> {
    if bar > 5 {
        return None;
    }
    let cam = raw();
    let lo = cam.read_word(df, 0x10 + 4 * bar);
    if lo & 1 != 0 {
        return None; // I/O BAR
    }
    let hi = if (lo >> 1) & 3 == 2 && bar < 5 {
        cam.read_word(df, 0x14 + 4 * bar)
    } else {
        0
    };
    let addr = (u64::from(hi) << 32) | u64::from(lo & !0xF);
    (addr != 0).then_some(addr)
}

/// Points MSI-X table entry 0 at (`msg_addr`, `msg_data`), masks the other
/// entries, enables MSI-X, and makes virtqueues `queues` and configuration
/// changes (link state) signal through entry 0.
/// Returns false (leaving MSI-X off) if the device lacks what is needed.
///
/// Call after the virtio driver finished its initialisation.
pub fn enable_virtio_msix<H: Hal>(
    root: &mut PciRoot<PortIoCam>,
    df: DeviceFunction,
    msg_addr: u64,
    msg_data: u32,
    queues: &[u16],
) -> bool {
    let caps: Vec<_> = root.capabilities(df).collect();
    let Some(msix) = caps.iter().find(|c| c.id == CAP_MSIX) else {
        return false;
    };
    let Some(common) = caps
        .iter()
        .find(|c| c.id == CAP_VENDOR && (c.private_header >> 8) as u8 == VIRTIO_PCI_CAP_COMMON_CFG)
    else {
        return false;
    };
    let ctrl = msix.private_header;
    let entries = usize::from(ctrl & 0x7FF) + 1;
    let table = raw().read_word(df, msix.offset + 4);
    let Some(bar_addr) = bar_address(df, (table & 7) as u8) else {
        return false;
    };
    let table_off = u64::from(table & !7);
    let cbar = raw().read_word(df, common.offset + 4) as u8;
    let coff = raw().read_word(df, common.offset + 8);
    let Some(common_addr) = bar_address(df, cbar) else {
        return false;
    };

    // SAFETY: the capabilities place both ranges inside memory BARs of this
    // device; the HAL maps device memory for us.
    let (tbl, cfg) = unsafe {
        (
            H::mmio_phys_to_virt(bar_addr + table_off, entries * 16).as_ptr() as *mut u32,
            H::mmio_phys_to_virt(common_addr + u64::from(coff), 0x20).as_ptr(),
        )
    };
    for i in 0..entries {
        // SAFETY: entry i of the MSI-X table: address lo, address hi, data, vector control.
        unsafe {
            let e = tbl.add(i * 4);
            e.write_volatile(msg_addr as u32);
            e.add(1).write_volatile((msg_addr >> 32) as u32);
            e.add(2).write_volatile(msg_data);
            e.add(3).write_volatile(if i == 0 { 0 } else { 1 });
        }
    }
    // Enable (bit 15), function mask off (bit 14); the low half is the read-only header.
    let header = raw().read_word(df, msix.offset) & 0xFFFF;
    let ctrl = (ctrl | 0x8000) & !0x4000;
    raw().write_word(df, msix.offset, header | (u32::from(ctrl) << 16));

    // SAFETY: msix_config is a u16 field of the common configuration structure.
    unsafe { (cfg.add(COMMON_MSIX_CONFIG) as *mut u16).write_volatile(0) };
    for &q in queues {
        // SAFETY: queue_select and queue_msix_vector are u16 fields of the
        // virtio common configuration structure inside the BAR.
        let ok = unsafe {
            (cfg.add(COMMON_QUEUE_SELECT) as *mut u16).write_volatile(q);
            let v = cfg.add(COMMON_QUEUE_MSIX_VECTOR) as *mut u16;
            v.write_volatile(0);
            v.read_volatile() != VIRTIO_NO_VECTOR
        };
        if !ok {
            return false;
        }
    }
    true
}
