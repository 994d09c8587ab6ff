//! The set of NICs (eth0, eth1, ...) and the frame path between them.
//!
//! [`NicSet::poll`] is the receive path, run by the kernel's main loop
//! NAPI-style: per pass it takes at most a budget of frames from each NIC,
//! runs the [`FrameHook`] on each, and then
//! * forwards the frames the hook redirects **in the buffer they arrived
//!   in** (the receive buffer moves to the egress NIC's transmit ring; the
//!   receive ring is refilled from the shared [`BufPool`]), with their
//!   checksum/segmentation offload metadata when the egress NIC can finish
//!   the job, else segmented and checksummed in software
//!   ([`lb_core::frame::offload`]);
//! * queues the frames for the IP stack (bounded; whole frames with whole
//!   checksums, as a stack expects);
//! * returns finished transmit buffers to the pool, refills receive rings,
//!   and makes each NIC's whole burst visible with one doorbell.
//!
//! Then the main loop runs the other tasks (health checks, ARP, console,
//! housekeeping) before the next pass, so a receive flood delays them by at
//! most one budget of frames. Interrupts are asked for only before the CPU
//! halts ([`NicSet::arm`]).

use crate::device::{Features, NicDevice};
use crate::dma::{BufPool, BufSize, HEADROOM, Packet};
use crate::hook::{FrameHook, Verdict};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::task::Waker;
use lb_core::frame::offload::{SegmentChecksum, Segmenter, complete_checksum};
use lb_core::frame::{L4Checksum, Offload};
use lb_core::time::Instant;
use virtio_drivers::transport::pci::bus::DeviceFunction;

/// Frames taken from one NIC per [`NicSet::poll`] pass.
pub const RX_BUDGET: usize = 64;
/// Frames waiting for a NIC's IP stack at most; more are dropped.
const STACK_QUEUE: usize = 32;
/// Receive buffers posted at boot; [`NicSet::top_up`] adds the rest once the
/// appliance is ready. Every fresh page costs a fault on the host (expensive
/// under nested virtualisation), so boot touches as little memory as it can.
const BOOT_RX_BUFFERS: usize = 8;
/// The same for 64 KiB buffers (each one is 16 pages to touch).
const BOOT_RX_LARGE: usize = 2;
/// Receive buffers added per NIC per top-up.
const TOP_UP_STEP: usize = 8;

/// Counters per NIC.
#[derive(Debug, Default, Clone, Copy)]
pub struct NicStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Received TCP super-frames (guest TSO).
    pub rx_super_frames: u64,
    /// Super-frames sent whole (the device segments them).
    pub tx_super_frames: u64,
    /// Super-frames this NIC had to send, cut into segments in software.
    pub tx_segmented: u64,
    /// Partial checksums completed in software (for this NIC or its stack).
    pub sw_checksums: u64,
    /// Frames the hook consumed.
    pub rx_consumed: u64,
    /// Frames the hook redirected out of a NIC.
    pub rx_redirected: u64,
    /// Frames for the stack dropped: its queue was full.
    pub stack_full: u64,
    /// Frames for a stack on a NIC that has none.
    pub no_stack: u64,
    /// Frames not sent: transmit ring full (or no buffer to copy into).
    pub tx_full: u64,
    /// Frames not sent: the hook named a NIC that does not exist, or the
    /// frame could not be made fit for the egress NIC.
    pub tx_invalid: u64,
    /// Device errors (bad completions, unusable headers).
    pub errors: u64,
}

impl NicStats {
    /// Every frame this NIC lost, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.stack_full + self.no_stack + self.tx_full + self.tx_invalid
    }
}

/// One NIC with its driver.
pub struct Nic {
    name: [u8; 8],
    name_len: usize,
    pub pci: DeviceFunction,
    pub mac: [u8; 6],
    dev: Box<dyn NicDevice>,
    /// Received frames for this NIC's IP stack, oldest first.
    to_stack: VecDeque<Packet>,
    /// Receive buffers the device holds, and how many it should.
    rx_posted: usize,
    rx_goal: usize,
    rx_target: usize,
    link_up: bool,
    rx_waker: Option<Waker>,
    tx_waker: Option<Waker>,
    pub stats: NicStats,
}

impl Nic {
    /// NIC `index` (named eth`index`) driven by `dev`, which should be given
    /// up to `rx_target` receive buffers once the appliance serves.
    pub fn new(
        index: usize,
        pci: DeviceFunction,
        mut dev: Box<dyn NicDevice>,
        rx_target: usize,
    ) -> Nic {
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
        let rx_target = rx_target.min(dev.rx_room()).max(1);
        let boot = match dev.rx_buf_size() {
            BufSize::Small => BOOT_RX_BUFFERS,
            BufSize::Large => BOOT_RX_LARGE,
        };
        Nic {
            name,
            name_len,
            pci,
            mac: dev.mac(),
            link_up: dev.link_up(),
            dev,
            to_stack: VecDeque::with_capacity(STACK_QUEUE),
            rx_posted: 0,
            rx_goal: boot.min(rx_target),
            rx_target,
            rx_waker: None,
            tx_waker: None,
            stats: NicStats::default(),
        }
    }

    /// "eth0", "eth1", ...
    pub fn name(&self) -> &str {
        core::str::from_utf8(&self.name[..self.name_len]).unwrap_or("eth?")
    }

    pub fn model(&self) -> &'static str {
        self.dev.model()
    }

    pub fn features(&self) -> Features {
        self.dev.features()
    }

    pub fn device_stats(&self) -> crate::device::DeviceStats {
        self.dev.stats()
    }

    /// Whether the link was up at the last [`NicSet::check_links`].
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    /// Receive buffers posted now, and the most this NIC gets.
    pub fn rx_buffers(&self) -> (usize, usize) {
        (self.rx_posted, self.rx_target)
    }

    /// Posts receive buffers from `pool` up to the current goal.
    fn refill(&mut self, pool: &mut BufPool) {
        let size = self.dev.rx_buf_size();
        while self.rx_posted < self.rx_goal && self.dev.rx_room() > 0 {
            let Some(buf) = pool.get(size) else {
                return;
            };
            match self.dev.post_rx(buf) {
                Ok(()) => self.rx_posted += 1,
                Err(b) => {
                    pool.put(b);
                    return;
                }
            }
        }
    }

    fn reclaim(&mut self, pool: &mut BufPool) -> bool {
        let mut any = false;
        self.dev.reclaim_tx(&mut |b| {
            pool.put(b);
            any = true;
        });
        any
    }

    fn receive(&mut self) -> Option<Packet> {
        let p = self.dev.receive()?;
        self.rx_posted = self.rx_posted.saturating_sub(1);
        self.stats.rx_frames += 1;
        if p.offload.gso.is_some() {
            self.stats.rx_super_frames += 1;
        }
        Some(p)
    }
}

/// All NICs, the buffer pool and the frame hook. Single-threaded (one CPU,
/// nothing touched from interrupt context): interior mutability through
/// `RefCell`, and no borrow is held while the hook runs (it may send).
pub struct NicSet {
    nics: Vec<RefCell<Nic>>,
    pool: RefCell<BufPool>,
    /// Which NICs have a stack (a [`crate::driver::NicDriver`]) reading them.
    has_stack: Vec<Cell<bool>>,
    hook: RefCell<Box<dyn FrameHook>>,
    now: fn() -> Instant,
}

impl NicSet {
    /// `now` gives milliseconds since kernel entry for the hook. The pool
    /// gets room for every NIC's receive ring twice over (one ring's worth
    /// in flight on the transmit side), and small buffers for the stacks
    /// and for copies.
    pub fn new(nics: Vec<Nic>, hook: Box<dyn FrameHook>, now: fn() -> Instant) -> Self {
        let mut pool = BufPool::new(0, 0);
        for n in &nics {
            pool.reserve(n.dev.rx_buf_size(), 2 * n.rx_target);
            pool.reserve(BufSize::Small, n.dev.tx_room());
        }
        let set = NicSet {
            has_stack: nics.iter().map(|_| Cell::new(false)).collect(),
            nics: nics.into_iter().map(RefCell::new).collect(),
            pool: RefCell::new(pool),
            hook: RefCell::new(hook),
            now,
        };
        for n in &set.nics {
            let mut n = n.borrow_mut();
            n.refill(&mut set.pool.borrow_mut());
            n.dev.flush();
        }
        set
    }

    pub fn len(&self) -> usize {
        self.nics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nics.is_empty()
    }

    /// Raises each NIC's receive buffers a step towards its target (called
    /// when idle after boot).
    pub fn top_up(&self) {
        for nic in &self.nics {
            let mut n = nic.borrow_mut();
            if n.rx_goal < n.rx_target {
                n.rx_goal = (n.rx_goal + TOP_UP_STEP).min(n.rx_target);
                n.refill(&mut self.pool.borrow_mut());
                n.dev.flush();
            }
        }
    }

    /// Replaces the frame hook (e.g. when the L4 data path starts).
    pub fn set_hook(&self, hook: Box<dyn FrameHook>) {
        *self.hook.borrow_mut() = hook;
    }

    /// Runs `f` on NIC `i`.
    pub fn with<R>(&self, i: usize, f: impl FnOnce(&mut Nic) -> R) -> R {
        f(&mut self.nics[i].borrow_mut())
    }

    pub fn pool_stats(&self) -> crate::dma::PoolStats {
        self.pool.borrow().stats
    }

    /// One pass of the frame path (see the module documentation): at most
    /// `budget` received frames per NIC. Returns true if frames are still
    /// waiting (the caller should run its other work and call again soon
    /// rather than sleep).
    pub fn poll(&self, budget: usize) -> bool {
        let mut more = false;
        for i in 0..self.nics.len() {
            self.nics[i].borrow_mut().dev.disarm();
            let mut taken = 0;
            while taken < budget {
                let Some(pkt) = self.nics[i].borrow_mut().receive() else {
                    break;
                };
                taken += 1;
                self.dispatch(i, pkt);
            }
            more |= taken == budget;
        }
        self.finish_burst();
        more
    }

    /// Runs the hook on one received frame and acts on its verdict.
    fn dispatch(&self, i: usize, mut pkt: Packet) {
        let now = (self.now)();
        let offload = pkt.offload;
        let verdict = self
            .hook
            .borrow_mut()
            .on_frame(i, pkt.frame_mut(), &offload, now);
        match verdict {
            Verdict::PassToStack => self.to_stack(i, pkt),
            Verdict::Consumed => {
                self.nics[i].borrow_mut().stats.rx_consumed += 1;
                self.pool.borrow_mut().put(pkt.buf);
            }
            Verdict::Transmit(out) => {
                self.nics[i].borrow_mut().stats.rx_redirected += 1;
                self.send(out, pkt);
            }
        }
    }

    /// Queues a received frame for NIC `i`'s stack, whole and checksummed.
    fn to_stack(&self, i: usize, mut pkt: Packet) {
        let mut n = self.nics[i].borrow_mut();
        if !self.has_stack[i].get() {
            n.stats.no_stack += 1;
            self.pool.borrow_mut().put(pkt.buf);
            return;
        }
        if let Some(gso) = pkt.offload.gso {
            // A stack takes MTU-sized frames: cut the super-frame here.
            let mut pool = self.pool.borrow_mut();
            match Segmenter::new(pkt.frame(), gso) {
                Ok(seg) => {
                    for s in 0..seg.count() {
                        if n.to_stack.len() >= STACK_QUEUE {
                            n.stats.stack_full += 1;
                            continue;
                        }
                        let Some(mut buf) = pool.get(BufSize::Small) else {
                            n.stats.stack_full += 1;
                            continue;
                        };
                        let out = &mut buf.bytes_mut()[HEADROOM..];
                        match seg.write(pkt.frame(), s, out, SegmentChecksum::Complete) {
                            Some(len) => n.to_stack.push_back(Packet {
                                buf,
                                len,
                                offload: Offload::NONE,
                            }),
                            None => {
                                n.stats.errors += 1;
                                pool.put(buf);
                            }
                        }
                    }
                    n.stats.sw_checksums += seg.count() as u64;
                }
                Err(_) => n.stats.errors += 1,
            }
            pool.put(pkt.buf);
        } else {
            if let L4Checksum::Partial { start, offset } = pkt.offload.checksum {
                if complete_checksum(pkt.frame_mut(), start, offset).is_err() {
                    n.stats.errors += 1;
                    self.pool.borrow_mut().put(pkt.buf);
                    return;
                }
                pkt.offload = Offload::NONE;
                n.stats.sw_checksums += 1;
            }
            if n.to_stack.len() >= STACK_QUEUE {
                n.stats.stack_full += 1;
                self.pool.borrow_mut().put(pkt.buf);
                return;
            }
            n.to_stack.push_back(pkt);
        }
        if let Some(w) = n.rx_waker.take() {
            w.wake();
        }
    }

    /// Sends a received (possibly rewritten) frame out of NIC `out`, whole
    /// when it can take the frame's offloads, else segmented and/or
    /// checksummed in software first.
    fn send(&self, out: usize, mut pkt: Packet) {
        let Some(nic) = self.nics.get(out) else {
            if let Some(n) = self.nics.first() {
                n.borrow_mut().stats.tx_invalid += 1;
            }
            self.pool.borrow_mut().put(pkt.buf);
            return;
        };
        let mut n = nic.borrow_mut();
        let f = n.dev.features();
        if let Some(gso) = pkt.offload.gso.filter(|_| !f.tx_tso4) {
            drop(n);
            self.send_segments(out, pkt, gso, f.tx_checksum);
            return;
        }
        if let L4Checksum::Partial { start, offset } = pkt.offload.checksum
            && !f.tx_checksum
        {
            if complete_checksum(pkt.frame_mut(), start, offset).is_err() {
                n.stats.tx_invalid += 1;
                self.pool.borrow_mut().put(pkt.buf);
                return;
            }
            pkt.offload = Offload::NONE;
            n.stats.sw_checksums += 1;
        }
        let whole = pkt.offload.gso.is_some();
        match n.dev.transmit(pkt) {
            Ok(()) => {
                n.stats.tx_frames += 1;
                if whole {
                    n.stats.tx_super_frames += 1;
                }
            }
            Err(p) => {
                n.stats.tx_full += 1;
                self.pool.borrow_mut().put(p.buf);
            }
        }
    }

    /// Cuts a super-frame into segments, each in a fresh small buffer, for
    /// NIC `out`, which cannot segment (with partial checksums if it can at
    /// least checksum).
    fn send_segments(&self, out: usize, pkt: Packet, gso: lb_core::frame::Gso, partial: bool) {
        let mut n = self.nics[out].borrow_mut();
        let mut pool = self.pool.borrow_mut();
        let Ok(seg) = Segmenter::new(pkt.frame(), gso) else {
            n.stats.tx_invalid += 1;
            pool.put(pkt.buf);
            return;
        };
        n.stats.tx_segmented += 1;
        let (mode, offload) = if partial {
            (
                SegmentChecksum::Partial,
                Offload {
                    checksum: seg.partial(),
                    gso: None,
                },
            )
        } else {
            n.stats.sw_checksums += seg.count() as u64;
            (SegmentChecksum::Complete, Offload::NONE)
        };
        for s in 0..seg.count() {
            let Some(mut buf) = pool.get(BufSize::Small) else {
                n.stats.tx_full += 1;
                continue;
            };
            let Some(len) = seg.write(pkt.frame(), s, &mut buf.bytes_mut()[HEADROOM..], mode)
            else {
                n.stats.tx_invalid += 1;
                pool.put(buf);
                continue;
            };
            match n.dev.transmit(Packet { buf, len, offload }) {
                Ok(()) => n.stats.tx_frames += 1,
                Err(p) => {
                    n.stats.tx_full += 1;
                    pool.put(p.buf);
                }
            }
        }
        pool.put(pkt.buf);
    }

    /// End of a burst: reclaim sent buffers, refill receive rings, ring
    /// each NIC's doorbell once, wake tasks waiting for transmit room.
    fn finish_burst(&self) {
        let mut pool = self.pool.borrow_mut();
        for nic in &self.nics {
            let mut n = nic.borrow_mut();
            let freed = n.reclaim(&mut pool);
            n.refill(&mut pool);
            n.dev.flush();
            if freed && let Some(w) = n.tx_waker.take() {
                w.wake();
            }
        }
    }

    /// Makes frames queued since the last pass (by the stacks, the data
    /// path's own sends) visible to the devices.
    pub fn flush(&self) {
        self.finish_burst();
    }

    /// Asks every NIC for an interrupt when work arrives; false means the
    /// CPU may halt, true that work arrived meanwhile (poll again instead).
    pub fn arm(&self) -> bool {
        let mut pending = false;
        for nic in &self.nics {
            pending |= nic.borrow_mut().dev.arm();
        }
        pending
    }

    /// Reads each NIC's link state; returns the NICs whose state changed,
    /// with the new state (for the log).
    pub fn check_links(&self) -> Vec<(usize, bool)> {
        let mut changed = Vec::new();
        for (i, nic) in self.nics.iter().enumerate() {
            let mut n = nic.borrow_mut();
            let up = n.dev.link_up();
            if up != n.link_up {
                n.link_up = up;
                changed.push((i, up));
                // The stack reads the link state when polled.
                if let Some(w) = n.rx_waker.take() {
                    w.wake();
                }
            }
        }
        changed
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

    /// Whether a frame can be queued for sending on NIC `i` now.
    pub fn can_transmit(&self, i: usize) -> bool {
        self.nics[i].borrow().dev.tx_room() > 0 && self.pool.borrow().available(BufSize::Small) > 0
    }

    /// Sends a frame of `len` bytes written by `fill` on NIC `i` (copied
    /// into a small buffer; visible to the device at the end of the pass).
    /// Gives `fill` back (frame not sent) if there is no room.
    pub fn transmit_with<R, F: FnOnce(&mut [u8]) -> R>(
        &self,
        i: usize,
        len: usize,
        fill: F,
    ) -> Result<R, F> {
        let Some(nic) = self.nics.get(i) else {
            return Err(fill);
        };
        let mut n = nic.borrow_mut();
        if n.dev.tx_room() == 0 {
            n.stats.tx_full += 1;
            return Err(fill);
        }
        let Some(mut buf) = self.pool.borrow_mut().get(BufSize::Small) else {
            n.stats.tx_full += 1;
            return Err(fill);
        };
        let len = len.min(buf.capacity() - HEADROOM);
        let r = fill(&mut buf.bytes_mut()[HEADROOM..HEADROOM + len]);
        match n.dev.transmit(Packet {
            buf,
            len,
            offload: Offload::NONE,
        }) {
            Ok(()) => n.stats.tx_frames += 1,
            Err(p) => {
                n.stats.tx_full += 1;
                self.pool.borrow_mut().put(p.buf);
            }
        }
        Ok(r)
    }

    /// The next frame for NIC `i`'s stack.
    pub(crate) fn take_for_stack(&self, i: usize) -> Option<Packet> {
        self.nics[i].borrow_mut().to_stack.pop_front()
    }

    /// Gives a buffer back to the pool.
    pub(crate) fn recycle(&self, pkt: Packet) {
        self.pool.borrow_mut().put(pkt.buf);
    }

    /// Records that a stack reads NIC `i` (frames for the stack of a NIC
    /// without one are dropped and counted).
    pub(crate) fn attach_stack(&self, i: usize) {
        self.has_stack[i].set(true);
    }
}
