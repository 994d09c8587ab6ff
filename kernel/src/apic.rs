//! Local APIC: timer and EOI. (NIC interrupts arrive as MSI-X messages, so
//! no I/O APIC routing, and no ACPI tables, are needed.)
//!
//! Works in xAPIC mode (MMIO at the base from IA32_APIC_BASE, inside the
//! identity-mapped first 4 GiB) and in x2APIC mode if the firmware left it on.

use crate::cpu;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const IA32_APIC_BASE: u32 = 0x1B;
const REG_ID: u32 = 0x20;
const REG_EOI: u32 = 0xB0;
const REG_SVR: u32 = 0xF0;
const REG_LVT_TIMER: u32 = 0x320;
const REG_TIMER_INIT: u32 = 0x380;
const REG_TIMER_CURRENT: u32 = 0x390;
const REG_TIMER_DIVIDE: u32 = 0x3E0;

static X2APIC: AtomicBool = AtomicBool::new(false);
static BASE: AtomicU64 = AtomicU64::new(0xFEE0_0000);

fn read(reg: u32) -> u32 {
    if X2APIC.load(Ordering::Relaxed) {
        cpu::rdmsr(0x800 + (reg >> 4)) as u32
    } else {
        let p = (BASE.load(Ordering::Relaxed) + u64::from(reg)) as *const u32;
        // SAFETY: the LAPIC page is identity-mapped (below 4 GiB) and `reg` is a valid register.
        unsafe { p.read_volatile() }
    }
}

fn write(reg: u32, v: u32) {
    if X2APIC.load(Ordering::Relaxed) {
        cpu::wrmsr(0x800 + (reg >> 4), u64::from(v));
    } else {
        let p = (BASE.load(Ordering::Relaxed) + u64::from(reg)) as *mut u32;
        // SAFETY: as for `read`.
        unsafe { p.write_volatile(v) }
    }
}

/// Enables the local APIC with the spurious vector and a masked timer.
pub fn init() {
    let base = cpu::rdmsr(IA32_APIC_BASE);
    X2APIC.store(base & (1 << 10) != 0, Ordering::Relaxed);
    BASE.store(base & 0x000F_FFFF_FFFF_F000, Ordering::Relaxed);
    // Global enable (bit 11) in case the firmware left it off.
    if base & (1 << 11) == 0 {
        cpu::wrmsr(IA32_APIC_BASE, base | (1 << 11));
    }
    write(
        REG_SVR,
        0x100 | u32::from(crate::interrupts::SPURIOUS_VECTOR),
    );
    write(REG_TIMER_DIVIDE, 0b1011); // divide by 1
    write(REG_LVT_TIMER, 1 << 16); // masked until armed
}

pub fn id() -> u32 {
    let id = read(REG_ID);
    if X2APIC.load(Ordering::Relaxed) {
        id
    } else {
        id >> 24
    }
}

pub fn eoi() {
    write(REG_EOI, 0);
}

/// Starts a free count-down from the maximum (masked), for calibration.
pub fn timer_start_calibration() {
    write(REG_LVT_TIMER, 1 << 16);
    write(REG_TIMER_INIT, u32::MAX);
}

/// Ticks elapsed since `timer_start_calibration`.
pub fn timer_calibration_elapsed() -> u32 {
    u32::MAX - read(REG_TIMER_CURRENT)
}

/// Arms the one-shot timer to fire after `ticks` LAPIC timer ticks.
pub fn timer_oneshot(ticks: u32) {
    write(REG_LVT_TIMER, u32::from(crate::interrupts::TIMER_VECTOR));
    write(REG_TIMER_INIT, ticks.max(1));
}
