//! The set of NICs (eth0, eth1, ...) and the receive path with its hook.
//!
//! Each NIC is a virtio-net device driven through `VirtIONetRaw` with our own
//! buffers: [`QUEUE_SIZE`] receive buffers are always posted to the device;
//! transmit buffers come from a free list and return to it when the device
//! has used them. Nothing blocks: a full transmit queue makes
//! [`NicSet::can_transmit`] false until completions are reaped.
//!
//! Receive: [`NicSet::receive_for_stack`] takes used buffers in order, runs
//! the [`FrameHook`] on each frame and returns the first one the hook passes
//! to the stack; frames it consumes or redirects are handled here.

use crate::hook::{FrameHook, Verdict};
use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::task::Waker;
use lb_core::time::Instant;
use virtio_drivers::Hal;
use virtio_drivers::device::net::VirtIONetRaw;
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::pci::bus::DeviceFunction;

/// Descriptors per virtqueue (and most buffers per direction).
pub const QUEUE_SIZE: usize = 64;
/// Receive buffers posted at boot; [`NicSet::top_up`] adds the rest once the
/// appliance is ready. Every fresh page costs a fault on the host (expensive
/// under nested virtualisation), so boot touches as little memory as it can.
const BOOT_RX_BUFFERS: usize = 8;
/// One buffer holds the 12-byte virtio-net header and a 1514-byte frame.
const BUF_LEN: usize = 2048;

/// Counters per NIC.
#[derive(Debug, Default, Clone, Copy)]
pub struct NicStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames the hook consumed.
    pub rx_consumed: u64,
    /// Frames the hook redirected out of a NIC.
    pub rx_redirected: u64,
    /// Frames dropped: passed to a stack on a NIC that has none, or a
    /// redirect to a NIC whose transmit queue was full.
    pub dropped: u64,
    /// Device errors while completing a buffer.
    pub errors: u64,
}

pub struct Nic<H: Hal> {
    name: [u8; 8],
    name_len: usize,
    pub pci: DeviceFunction,
    pub mac: [u8; 6],
    dev: VirtIONetRaw<H, PciTransport, QUEUE_SIZE>,
    /// Posted receive buffers, indexed by the descriptor token.
    rx_posted: Vec<Option<Box<[u8]>>>,
    /// Transmit buffers the device holds, indexed by token.
    tx_posted: Vec<Option<Box<[u8]>>>,
    tx_free: Vec<Box<[u8]>>,
    /// Receive buffers currently owned by the device.
    rx_count: usize,
    /// Transmit buffers allocated so far (at most QUEUE_SIZE, made on demand).
    tx_allocated: usize,
    rx_waker: Option<Waker>,
    tx_waker: Option<Waker>,
    pub stats: NicStats,
}

impl<H: Hal> Nic<H> {
    /// Initialises the device and posts the first receive buffers.
    pub fn new(
        index: usize,
        pci: DeviceFunction,
        transport: PciTransport,
    ) -> Result<Self, virtio_drivers::Error> {
        let dev = VirtIONetRaw::<H, PciTransport, QUEUE_SIZE>::new(transport)?;
        let mut name = *b"eth\0\0\0\0\0";
        let mut name_len = 3;
        let mut digits = [0u8; 5];
        let mut n = index;
        let mut k = 0;
        loop {
            digits[k] = b'0' + (n % 10) as u8;
            k += 1;
            n /= 10;
            if n == 0 || k == digits.len() {
                break;
            }
        }
        while k > 0 {
            k -= 1;
            name[name_len] = digits[k];
            name_len += 1;
        }
        let mut nic = Nic {
            name,
            name_len,
            pci,
            mac: dev.mac_address(),
            dev,
            rx_posted: (0..QUEUE_SIZE).map(|_| None).collect(),
            tx_posted: (0..QUEUE_SIZE).map(|_| None).collect(),
            tx_free: Vec::with_capacity(QUEUE_SIZE),
            rx_count: 0,
            tx_allocated: 0,
            rx_waker: None,
            tx_waker: None,
            stats: NicStats::default(),
        };
        for _ in 0..BOOT_RX_BUFFERS {
            nic.post_rx(vec![0u8; BUF_LEN].into_boxed_slice())?;
        }
        Ok(nic)
    }

    /// "eth0", "eth1", ...
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("eth?")
    }

    fn post_rx(&mut self, mut buf: Box<[u8]>) -> Result<(), virtio_drivers::Error> {
        // SAFETY: the buffer is parked in `rx_posted` and not touched until the
        // device returns its token.
        let token = unsafe { self.dev.receive_begin(&mut buf)? };
        self.rx_posted[usize::from(token)] = Some(buf);
        self.rx_count += 1;
        Ok(())
    }

    /// Posts up to `max` new receive buffers until the ring is full.
    fn top_up(&mut self, max: usize) {
        for _ in 0..max.min(QUEUE_SIZE - self.rx_count) {
            if self.post_rx(vec![0u8; BUF_LEN].into_boxed_slice()).is_err() {
                self.stats.errors += 1;
                return;
            }
        }
    }

    /// A free transmit buffer, allocating one if fewer than QUEUE_SIZE exist.
    fn tx_buffer(&mut self) -> Option<Box<[u8]>> {
        self.reap_tx();
        if let Some(b) = self.tx_free.pop() {
            return Some(b);
        }
        if self.tx_allocated < QUEUE_SIZE {
            self.tx_allocated += 1;
            return Some(vec![0u8; BUF_LEN].into_boxed_slice());
        }
        None
    }

    /// Returns completed transmit buffers to the free list.
    fn reap_tx(&mut self) {
        while let Some(token) = self.dev.poll_transmit() {
            let Some(buf) = self.take_tx_posted(token) else {
                self.stats.errors += 1;
                break;
            };
            // SAFETY: `buf` is the buffer posted with this token.
            if unsafe { self.dev.transmit_complete(token, &buf) }.is_err() {
                self.stats.errors += 1;
            }
            self.tx_free.push(buf);
        }
    }

    fn take_tx_posted(&mut self, token: u16) -> Option<Box<[u8]>> {
        self.tx_posted.get_mut(usize::from(token))?.take()
    }

    fn can_transmit(&mut self) -> bool {
        self.reap_tx();
        (!self.tx_free.is_empty() || self.tx_allocated < QUEUE_SIZE) && self.dev.can_send()
    }

    /// Sends `len` bytes that `fill` writes into a frame buffer. Gives `fill`
    /// back (frame not sent) if no buffer is free.
    fn transmit_with<R, F: FnOnce(&mut [u8]) -> R>(&mut self, len: usize, fill: F) -> Result<R, F> {
        let Some(mut buf) = self.tx_buffer() else {
            return Err(fill);
        };
        let Ok(hdr) = self.dev.fill_buffer_header(&mut buf) else {
            self.tx_free.push(buf);
            return Err(fill);
        };
        let len = len.min(buf.len() - hdr);
        let r = fill(&mut buf[hdr..hdr + len]);
        // SAFETY: the buffer is parked in `tx_posted` until the device returns its token.
        match unsafe { self.dev.transmit_begin(&buf[..hdr + len]) } {
            Ok(token) => {
                self.tx_posted[usize::from(token)] = Some(buf);
                self.stats.tx_frames += 1;
            }
            Err(_) => {
                self.stats.errors += 1;
                self.tx_free.push(buf);
            }
        }
        Ok(r)
    }

    /// Takes the next received frame: (buffer, header length, frame length).
    fn take_rx(&mut self) -> Option<(Box<[u8]>, usize, usize)> {
        loop {
            let token = self.dev.poll_receive()?;
            let Some(mut buf) = self
                .rx_posted
                .get_mut(usize::from(token))
                .and_then(Option::take)
            else {
                self.stats.errors += 1;
                return None;
            };
            self.rx_count -= 1;
            // SAFETY: `buf` is the buffer posted with this token.
            match unsafe { self.dev.receive_complete(token, &mut buf) } {
                Ok((hdr, len)) if hdr + len <= buf.len() => {
                    self.stats.rx_frames += 1;
                    return Some((buf, hdr, len));
                }
                _ => {
                    self.stats.errors += 1;
                    let _ = self.post_rx(buf);
                }
            }
        }
    }
}

/// A received frame the stack is about to read.
pub struct RxFrame {
    pub(crate) buf: Box<[u8]>,
    pub(crate) hdr: usize,
    pub(crate) len: usize,
}

impl RxFrame {
    pub fn frame_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.hdr..self.hdr + self.len]
    }
}

/// All NICs plus the frame hook. Single-threaded (one CPU, no interrupt-time
/// access): interior mutability through `RefCell`.
pub struct NicSet<H: Hal> {
    nics: Vec<RefCell<Nic<H>>>,
    /// Which NICs have a stack (a [`crate::driver::NicDriver`]) reading them.
    has_stack: Vec<Cell<bool>>,
    hook: RefCell<Box<dyn FrameHook>>,
    now: fn() -> Instant,
}

impl<H: Hal> NicSet<H> {
    /// `now` gives milliseconds since kernel entry for the hook.
    pub fn new(nics: Vec<Nic<H>>, hook: Box<dyn FrameHook>, now: fn() -> Instant) -> Self {
        NicSet {
            has_stack: nics.iter().map(|_| Cell::new(false)).collect(),
            nics: nics.into_iter().map(RefCell::new).collect(),
            hook: RefCell::new(hook),
            now,
        }
    }

    pub fn len(&self) -> usize {
        self.nics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nics.is_empty()
    }

    /// Fills the receive rings a few buffers at a time (called when idle after boot).
    pub fn top_up(&self) {
        for nic in &self.nics {
            nic.borrow_mut().top_up(8);
        }
    }

    /// Replaces the frame hook (e.g. when the L4 data path starts).
    pub fn set_hook(&self, hook: Box<dyn FrameHook>) {
        *self.hook.borrow_mut() = hook;
    }

    /// Runs `f` on NIC `i`.
    pub fn with<R>(&self, i: usize, f: impl FnOnce(&mut Nic<H>) -> R) -> R {
        f(&mut self.nics[i].borrow_mut())
    }

    /// Whether any NIC has received frames or finished transmissions waiting,
    /// waking the tasks registered for them. Called by the idle loop.
    pub fn poll_events(&self) -> bool {
        let mut any = false;
        for nic in &self.nics {
            let mut n = nic.borrow_mut();
            if n.dev.poll_receive().is_some() {
                any = true;
                if let Some(w) = n.rx_waker.take() {
                    w.wake();
                }
            }
            if n.dev.poll_transmit().is_some() {
                n.reap_tx();
                if let Some(w) = n.tx_waker.take() {
                    w.wake();
                }
            }
        }
        any
    }

    pub(crate) fn register_rx_waker(&self, i: usize, w: &Waker) {
        let mut n = self.nics[i].borrow_mut();
        if !n.rx_waker.as_ref().is_some_and(|x| x.will_wake(w)) {
            n.rx_waker = Some(w.clone());
        }
    }

    pub(crate) fn register_tx_waker(&self, i: usize, w: &Waker) {
        let mut n = self.nics[i].borrow_mut();
        if !n.tx_waker.as_ref().is_some_and(|x| x.will_wake(w)) {
            n.tx_waker = Some(w.clone());
        }
    }

    pub fn can_transmit(&self, i: usize) -> bool {
        self.nics[i].borrow_mut().can_transmit()
    }

    /// Sends a frame of `len` bytes written by `fill` on NIC `i`.
    pub fn transmit_with<R, F: FnOnce(&mut [u8]) -> R>(
        &self,
        i: usize,
        len: usize,
        fill: F,
    ) -> Result<R, F> {
        self.nics[i].borrow_mut().transmit_with(len, fill)
    }

    /// Gives a receive buffer back to NIC `i`.
    pub(crate) fn recycle(&self, i: usize, frame: RxFrame) {
        let mut n = self.nics[i].borrow_mut();
        if n.post_rx(frame.buf).is_err() {
            n.stats.errors += 1;
        }
    }

    /// Runs received frames of NIC `i` through the hook until one is for the
    /// stack (returned) or none is left.
    pub fn receive_for_stack(&self, i: usize) -> Option<RxFrame> {
        loop {
            let (buf, hdr, len) = self.nics[i].borrow_mut().take_rx()?;
            let mut frame = RxFrame { buf, hdr, len };
            let verdict = self
                .hook
                .borrow_mut()
                .on_frame(i, frame.frame_mut(), (self.now)());
            match verdict {
                Verdict::PassToStack => return Some(frame),
                Verdict::Consumed => {
                    self.nics[i].borrow_mut().stats.rx_consumed += 1;
                    self.recycle(i, frame);
                }
                Verdict::Transmit(out) => {
                    let sent = out < self.nics.len() && {
                        let data = &frame.buf[frame.hdr..frame.hdr + frame.len];
                        self.transmit_with(out, data.len(), |b| b.copy_from_slice(data))
                            .is_ok()
                    };
                    let mut n = self.nics[i].borrow_mut();
                    if sent {
                        n.stats.rx_redirected += 1;
                    } else {
                        n.stats.dropped += 1;
                    }
                    drop(n);
                    self.recycle(i, frame);
                }
            }
        }
    }

    /// Records that a stack reads NIC `i` (so [`Self::drain_without_stack`] leaves it alone).
    pub(crate) fn attach_stack(&self, i: usize) {
        self.has_stack[i].set(true);
    }

    /// Drains NIC `i` if no stack reads it: frames not taken by the hook are
    /// dropped and counted. Returns how many frames were drained.
    pub fn drain_without_stack(&self, i: usize) -> usize {
        if self.has_stack[i].get() {
            return 0;
        }
        let mut count = 0;
        while let Some(frame) = self.receive_for_stack(i) {
            self.nics[i].borrow_mut().stats.dropped += 1;
            self.recycle(i, frame);
            count += 1;
        }
        count
    }
}
