//! COM1: a 16550 UART at 115200 8N1, the serial half of the console.
//!
//! Output from thread context (ring 3) goes into a RAM ring buffer that the
//! idle loop drains to the UART ([`drain`]) when there is nothing else to do:
//! every UART access is a VM exit (a trap to ring 0 and one to the
//! hypervisor), so printing never sits on the boot path or the data path.
//! Order is kept. When the buffer is full (a slow or absent reader), new
//! output is dropped and counted ([`dropped`]), never waited for: console
//! output must not stall packet forwarding. Exception handlers (ring 0)
//! flush the buffer and then print directly, and [`flush`] runs before the
//! CPU halts for good, so crash reports always come out.

use crate::cpu::{self, Port};
use core::cell::UnsafeCell;
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

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
const BUF_SIZE: usize = 64 * 1024;
struct Pending(UnsafeCell<[u8; BUF_SIZE]>);
// SAFETY: one CPU; bytes between TAIL and HEAD are written before HEAD moves
// past them and only read afterwards.
unsafe impl Sync for Pending {}
static PENDING: Pending = Pending(UnsafeCell::new([0; BUF_SIZE]));
/// Bytes ever queued / ever sent (positions modulo BUF_SIZE).
static HEAD: AtomicUsize = AtomicUsize::new(0);
static TAIL: AtomicUsize = AtomicUsize::new(0);

/// Bytes dropped because the buffer was full.
static DROPPED: AtomicU64 = AtomicU64::new(0);

fn queue_byte(b: u8) {
    let head = HEAD.load(Ordering::Relaxed);
    if head - TAIL.load(Ordering::Relaxed) >= BUF_SIZE {
        if cpu::in_user_mode() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // An exception handler: it halts next, so waiting costs nothing.
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

fn put(b: u8) {
    if b == b'\n' {
        queue_byte(b'\r');
    }
    queue_byte(b);
}

/// Output bytes dropped so far because the buffer was full.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// Bytes waiting for the UART.
pub fn backlog() -> usize {
    HEAD.load(Ordering::Relaxed) - TAIL.load(Ordering::Relaxed)
}

/// Size of the output buffer.
pub const CAPACITY: usize = BUF_SIZE;

/// Queues `bytes` for the UART (`\n` becomes `\r\n`).
pub fn write(bytes: &[u8]) {
    bytes.iter().copied().for_each(put);
    if !cpu::in_user_mode() {
        // Exception handlers (ring 0) halt next: print synchronously.
        flush();
    }
}

/// Exception handlers' writer: the UART synchronously and the screen's
/// emergency path; no critical section (they may have interrupted one).
struct Direct;

impl fmt::Write for Direct {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write(s.as_bytes());
        crate::screen::emergency(s);
        Ok(())
    }
}

/// Writes to the console. Thread context goes through [`crate::console`]
/// (which keeps a prompt being typed intact); exception handlers write
/// directly and synchronously.
pub fn print(args: fmt::Arguments) {
    if cpu::in_user_mode() {
        crate::console::print(args);
    } else {
        let _ = fmt::Write::write_fmt(&mut Direct, args);
    }
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
