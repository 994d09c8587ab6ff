//! The console: 16550 UART on COM1 at 115200 8N1, mirrored to the VGA text
//! buffer when the machine was booted in text mode (BIOS, not UEFI).
//!
//! Output from thread context (ring 3) goes into a RAM ring buffer that the
//! idle loop drains to the UART ([`drain`]) when there is nothing else to do:
//! every UART access is a VM exit (a trap to ring 0 and one to the
//! hypervisor), so printing never sits on the boot path. Order is kept, and
//! nothing is lost: a full buffer is drained on the spot. Exception handlers
//! (ring 0) flush the buffer and then print directly, and [`flush`] runs
//! before the CPU halts for good, so crash reports always come out.

use crate::cpu::{self, Port};
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

const COM1: u16 = 0x3F8;
/// Register `offset` (0..=7) of COM1.
const fn com1(offset: u16) -> Port {
    // SAFETY: COM1 is the console UART; only this module and the console's
    // reader (through `DATA` and `LINE_STATUS`) use it, and a UART does no
    // DMA. Callers here pass only its register offsets.
    unsafe { Port::new(COM1 + offset) }
}
/// Receive/transmit holding register (divisor low byte with DLAB).
pub const DATA: Port = com1(0);
/// Interrupt enable (divisor high byte with DLAB).
const IER: Port = com1(1);
/// Interrupt identification (read) / FIFO control (write).
const IIR_FCR: Port = com1(2);
const LCR: Port = com1(3);
const MCR: Port = com1(4);
/// Line status: bit 0 data ready, bit 5 transmit holding register empty.
pub const LINE_STATUS: Port = com1(5);
static SERIAL_PRESENT: AtomicBool = AtomicBool::new(false);
/// Bytes the transmit FIFO can still take without checking the line status
/// (each register access is a VM exit, so poll once per FIFO-full).
static TX_BUDGET: AtomicUsize = AtomicUsize::new(0);
static FIFO_DEPTH: AtomicUsize = AtomicUsize::new(1);

/// Programs COM1 for 115200 8N1, FIFOs on, no interrupts.
pub fn init() {
    IER.write8(0x00); // no interrupts
    LCR.write8(0x80); // DLAB on
    DATA.write8(0x01); // divisor 1 = 115200 baud
    IER.write8(0x00);
    LCR.write8(0x03); // 8N1, DLAB off
    IIR_FCR.write8(0xC7); // FIFO on, cleared, 14-byte threshold
    MCR.write8(0x03); // DTR + RTS
    // A 16550A reports working FIFOs in IIR bits 6-7; a missing UART reads 0xFF.
    let iir = IIR_FCR.read8();
    SERIAL_PRESENT.store(iir != 0xFF, Ordering::Relaxed);
    FIFO_DEPTH.store(if iir & 0xC0 == 0xC0 { 16 } else { 1 }, Ordering::Relaxed);
}

/// Sends up to one FIFO-full (`chunk.len() <= FIFO_DEPTH`) with one trap.
fn serial_chunk(chunk: &[u8]) {
    let mut budget = TX_BUDGET.load(Ordering::Relaxed);
    if budget < chunk.len() {
        // Bounded wait for an empty FIFO: a wedged UART must not hang the kernel.
        for _ in 0..100_000 {
            if LINE_STATUS.read8() & 0x20 != 0 {
                break;
            }
        }
        budget = FIFO_DEPTH.load(Ordering::Relaxed);
    }
    DATA.write_bytes(chunk);
    TX_BUDGET.store(budget.saturating_sub(chunk.len()), Ordering::Relaxed);
}

/// Output waiting for the UART. One writer (thread context); readers are
/// thread context ([`drain`], [`flush`]) and halting exception handlers, which
/// at worst repeat a few bytes of a chunk they interrupted.
const BUF_SIZE: usize = 16 * 1024;
struct Pending(UnsafeCell<[u8; BUF_SIZE]>);
// SAFETY: one CPU; bytes between TAIL and HEAD are written before HEAD moves
// past them and only read afterwards.
unsafe impl Sync for Pending {}
static PENDING: Pending = Pending(UnsafeCell::new([0; BUF_SIZE]));
/// Bytes ever queued / ever sent (positions modulo BUF_SIZE).
static HEAD: AtomicUsize = AtomicUsize::new(0);
static TAIL: AtomicUsize = AtomicUsize::new(0);

fn queue_byte(b: u8) {
    let head = HEAD.load(Ordering::Relaxed);
    if head - TAIL.load(Ordering::Relaxed) >= BUF_SIZE {
        flush();
    }
    // SAFETY: slot `head` is free (not between TAIL and HEAD); see `Pending`.
    unsafe { (*PENDING.0.get())[head % BUF_SIZE] = b };
    HEAD.store(head + 1, Ordering::Release);
}

/// Sends up to `max` queued bytes; returns whether more are waiting.
fn send_queued(max: usize) -> bool {
    let head = HEAD.load(Ordering::Acquire);
    let mut tail = TAIL.load(Ordering::Relaxed);
    let end = head.min(tail.saturating_add(max));
    if !SERIAL_PRESENT.load(Ordering::Relaxed) {
        TAIL.store(head, Ordering::Relaxed);
        return false;
    }
    let depth = FIFO_DEPTH.load(Ordering::Relaxed).max(1);
    while tail < end {
        let at = tail % BUF_SIZE;
        let n = (end - tail).min(depth).min(BUF_SIZE - at);
        // SAFETY: bytes between TAIL and HEAD are written and stay put until TAIL passes them.
        let chunk = unsafe { &(&*PENDING.0.get())[at..at + n] };
        serial_chunk(chunk);
        tail += n;
        TAIL.store(tail, Ordering::Relaxed);
    }
    tail < head
}

/// Bytes the idle loop sends per pass, so a long backlog does not delay
/// network work by more than about a millisecond.
const DRAIN_PER_PASS: usize = 128;

/// Sends part of the queued output (called by the idle loop). If more is
/// waiting, the idle loop is kept from halting so it comes back for it.
pub fn drain() {
    if send_queued(DRAIN_PER_PASS) {
        crate::interrupts::WOKEN.store(true, Ordering::SeqCst);
    }
}

/// Sends all queued output now (before halting, from exception handlers,
/// and when the buffer is full).
pub fn flush() {
    send_queued(usize::MAX);
}

/// VGA text mirror, kept in a shadow buffer and copied to the screen by
/// [`flush_vga`] from the idle loop: every store to VGA memory is a VM exit,
/// so boot does not pay for the mirror.
const VGA: *mut u16 = 0xB8000 as *mut u16;
const VGA_COLS: usize = 80;
const VGA_ROWS: usize = 25;
const VGA_CELLS: usize = VGA_COLS * VGA_ROWS;

struct Vga {
    on: bool,
    cells: [u16; VGA_CELLS],
    pos: usize,
    /// Cells changed since the last flush: [lo, hi).
    dirty: (usize, usize),
}

static VGA_STATE: critical_section::Mutex<core::cell::RefCell<Vga>> =
    critical_section::Mutex::new(core::cell::RefCell::new(Vga {
        on: false,
        cells: [0x0720; VGA_CELLS],
        pos: 0,
        dirty: (0, 0),
    }));

/// Whether the VGA mirror is on, readable without a critical section.
static VGA_ON: AtomicBool = AtomicBool::new(false);
/// Where exception reports go on the VGA screen (see [`emergency_vga`]).
static EMERGENCY_POS: AtomicUsize = AtomicUsize::new(0);

/// Turns the VGA text mirror on (the screen is cleared on the first flush).
pub fn enable_vga() {
    VGA_ON.store(true, Ordering::Relaxed);
    critical_section::with(|cs| {
        let mut v = VGA_STATE.borrow_ref_mut(cs);
        v.on = true;
        v.dirty = (0, VGA_CELLS);
    });
}

impl Vga {
    fn put(&mut self, b: u8) {
        let mut pos = self.pos;
        match b {
            b'\n' => pos = (pos / VGA_COLS + 1) * VGA_COLS,
            b'\r' => pos -= pos % VGA_COLS,
            _ => {
                self.cells[pos] = 0x0700 | u16::from(b);
                self.dirty = (self.dirty.0.min(pos), self.dirty.1.max(pos + 1));
                pos += 1;
            }
        }
        if pos >= VGA_CELLS {
            self.cells.copy_within(VGA_COLS.., 0);
            self.cells[VGA_CELLS - VGA_COLS..].fill(0x0720);
            self.dirty = (0, VGA_CELLS);
            pos = VGA_CELLS - VGA_COLS;
        }
        self.pos = pos;
    }
}

/// Copies changed cells of the mirror to the VGA text buffer.
pub fn flush_vga() {
    critical_section::with(|cs| {
        let Ok(mut v) = VGA_STATE.borrow(cs).try_borrow_mut() else {
            return;
        };
        if !v.on || v.dirty.0 >= v.dirty.1 {
            return;
        }
        for i in v.dirty.0..v.dirty.1 {
            // SAFETY: 0xB8000 is the VGA text buffer (text mode, identity-mapped), i < 2000.
            unsafe { VGA.add(i).write_volatile(v.cells[i]) };
        }
        v.dirty = (VGA_CELLS, 0);
    });
}

/// Writes `s` straight to the VGA text buffer from the top of the screen,
/// white on red, with a cursor of its own: for exception handlers, which may
/// have interrupted code inside a critical section (one that does not mask
/// interrupts, see `CriticalSection` in main.rs) and so must not enter one
/// or touch the mirror's state. They halt afterwards; nothing else writes.
fn emergency_vga(s: &str) {
    if !VGA_ON.load(Ordering::Relaxed) {
        return;
    }
    let mut pos = EMERGENCY_POS.load(Ordering::Relaxed);
    for b in s.bytes() {
        match b {
            b'\n' => pos = (pos / VGA_COLS + 1) * VGA_COLS,
            b'\r' => pos -= pos % VGA_COLS,
            _ => {
                if pos < VGA_CELLS {
                    // SAFETY: 0xB8000 is the VGA text buffer (text mode,
                    // identity-mapped) and `pos` < 2000.
                    unsafe { VGA.add(pos).write_volatile(0x4F00 | u16::from(b)) };
                }
                pos += 1;
            }
        }
        pos = pos.min(VGA_CELLS);
    }
    EMERGENCY_POS.store(pos, Ordering::Relaxed);
}

fn put(b: u8) {
    if b == b'\n' {
        queue_byte(b'\r');
    }
    queue_byte(b);
}

pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        s.bytes().for_each(put);
        if !cpu::in_user_mode() {
            // Exception handlers (ring 0) halt next: print synchronously, and
            // enter no critical section (see `emergency_vga`).
            flush();
            emergency_vga(s);
            return Ok(());
        }
        critical_section::with(|cs| {
            // Busy only on re-entry (a panic while printing): skip the mirror then.
            if let Ok(mut v) = VGA_STATE.borrow(cs).try_borrow_mut()
                && v.on
            {
                s.bytes().for_each(|b| v.put(b));
            }
        });
        Ok(())
    }
}

/// Writes to the console. Only thread context and (halting) exception
/// handlers print, so lines cannot interleave.
pub fn print(args: fmt::Arguments) {
    let _ = fmt::Write::write_fmt(&mut Console, args);
}

#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::print(format_args!("{}\n", format_args!($($arg)*))) };
}
