//! The PS/2 keyboard behind the i8042 controller (QEMU, VMware, Hyper-V
//! generation 1 and VirtualBox all emulate it), polled by the console task.
//! The controller is set to translate to scancode set 1 with its interrupts
//! off; lb-core's `Ps2Decoder` turns the bytes into keys.

use crate::cpu::Port;

// SAFETY: the i8042 keyboard controller; only this module uses it (the
// reboot path pulses its reset line last), and it does no DMA.
const DATA: Port = unsafe { Port::new(0x60) };
// SAFETY: as for DATA.
const STATUS: Port = unsafe { Port::new(0x64) };
// SAFETY: as for DATA (the command register shares the status port).
const COMMAND: Port = unsafe { Port::new(0x64) };
/// Status: output buffer full (a byte to read), input buffer full (the
/// controller has not taken our last byte), the byte is from the mouse.
const OUTPUT_FULL: u8 = 0x01;
const INPUT_FULL: u8 = 0x02;
const FROM_MOUSE: u8 = 0x20;
/// Configuration byte: first port interrupt, second port interrupt, first
/// port clock disabled, translation to set 1.
const CFG_IRQ1: u8 = 0x01;
const CFG_IRQ12: u8 = 0x02;
const CFG_KBD_OFF: u8 = 0x10;
const CFG_TRANSLATE: u8 = 0x40;

/// Bytes read per poll at most (a stuck controller must not hold the task).
const POLL_MAX: usize = 64;

fn wait_input_empty() -> bool {
    (0..10_000).any(|_| STATUS.read8() & INPUT_FULL == 0)
}

fn wait_output_full() -> bool {
    (0..10_000).any(|_| STATUS.read8() & OUTPUT_FULL != 0)
}

/// Sets the controller up for polling; false when there is none.
pub fn init() -> bool {
    if STATUS.read8() == 0xFF {
        return false;
    }
    // Drop whatever the firmware left unread.
    for _ in 0..32 {
        if STATUS.read8() & OUTPUT_FULL == 0 {
            break;
        }
        DATA.read8();
    }
    if !wait_input_empty() {
        return false;
    }
    COMMAND.write8(0x20);
    if !wait_output_full() {
        return false;
    }
    let cfg = DATA.read8();
    let cfg = (cfg | CFG_TRANSLATE) & !(CFG_IRQ1 | CFG_IRQ12 | CFG_KBD_OFF);
    if !wait_input_empty() {
        return false;
    }
    COMMAND.write8(0x60);
    if !wait_input_empty() {
        return false;
    }
    DATA.write8(cfg);
    if !wait_input_empty() {
        return false;
    }
    // Enable the keyboard port.
    COMMAND.write8(0xAE);
    true
}

/// Hands every waiting keyboard byte to `each`.
pub fn poll(mut each: impl FnMut(u8)) {
    for _ in 0..POLL_MAX {
        let status = STATUS.read8();
        if status & OUTPUT_FULL == 0 {
            return;
        }
        let b = DATA.read8();
        if status & FROM_MOUSE == 0 {
            each(b);
        }
    }
}
