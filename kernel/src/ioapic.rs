//! I/O APIC routing for NICs without MSI (the 82540EM, the DEC 21140),
//! whose interrupt is the PCI INTx line: level-triggered and shared.
//!
//! The pin stays asserted until the driver reads the device's cause
//! register, which happens in the main loop, not in the interrupt handler
//! (handlers only set a flag; see `interrupts`). So the handler masks every
//! NIC pin; the main loop polls the NICs and unmasks them just before it
//! halts, with interrupts off, once every device has been told to interrupt
//! again ([`unmask`]).
//!
//! The I/O APIC sits at its default address 0xFEC0_0000 on every PC-class
//! machine this runs on (QEMU pc and q35, VMware, Hyper-V); its input for a
//! PCI function is the interrupt line the firmware wrote into the function's
//! configuration space (ISA IRQs are I/O APIC inputs 0-15 one to one).

use core::sync::atomic::{AtomicU32, Ordering};

const BASE: usize = 0xFEC0_0000;
const IOREGSEL: usize = BASE;
const IOWIN: usize = BASE + 0x10;
const REG_VERSION: u32 = 0x01;
const REDIRECTION: u32 = 0x10;
const LEVEL: u32 = 1 << 15;
const MASKED: u32 = 1 << 16;

/// Pins routed to NICs (bit n = input n, inputs 0-31).
static PINS: AtomicU32 = AtomicU32::new(0);

fn read(reg: u32) -> u32 {
    // SAFETY: the I/O APIC's two registers, identity-mapped below 4 GiB; the
    // select-then-access pair is never interleaved: the handler touches
    // them only while the main loop runs with interrupts on and not here,
    // and the main loop calls in with interrupts off.
    unsafe {
        (IOREGSEL as *mut u32).write_volatile(reg);
        (IOWIN as *const u32).read_volatile()
    }
}

fn write(reg: u32, v: u32) {
    // SAFETY: as for `read`.
    unsafe {
        (IOREGSEL as *mut u32).write_volatile(reg);
        (IOWIN as *mut u32).write_volatile(v);
    }
}

/// Routes input `pin` (level-triggered, active high as QEMU models PCI
/// lines) to `vector` on the CPU with LAPIC id `apic_id`, masked until
/// [`unmask`]. False if the I/O APIC has no such input.
pub fn route(pin: u8, vector: u8, apic_id: u32) -> bool {
    let inputs = ((read(REG_VERSION) >> 16) & 0xFF) + 1;
    if u32::from(pin) >= inputs.min(32) {
        return false;
    }
    let reg = REDIRECTION + 2 * u32::from(pin);
    write(reg + 1, (apic_id & 0xFF) << 24);
    write(reg, u32::from(vector) | LEVEL | MASKED);
    PINS.fetch_or(1 << pin, Ordering::Relaxed);
    true
}

fn set_masks(masked: bool) {
    let mut pins = PINS.load(Ordering::Relaxed);
    while pins != 0 {
        let pin = pins.trailing_zeros();
        pins &= pins - 1;
        let reg = REDIRECTION + 2 * pin;
        let v = read(reg);
        write(reg, if masked { v | MASKED } else { v & !MASKED });
    }
}

/// Masks every NIC pin (from the interrupt handler).
pub fn mask() {
    set_masks(true);
}

/// Unmasks every NIC pin (from the main loop, interrupts off).
pub fn unmask() {
    set_masks(false);
}
