//! A split virtqueue (virtio 1.1, section 2.6) driven in bursts.
//!
//! `virtio-drivers` has a `VirtQueue`, but it publishes the available
//! index on every buffer, decides notifications with a test that is not
//! wrap-safe (a burst that carries the available index past 65535 may
//! never notify the device, which then stalls), allocates an indirect table
//! per buffer when indirect descriptors are on, and has no way to delay or
//! suppress used-buffer interrupts. Here:
//! * [`Ring::push`] fills a descriptor and an available slot; nothing is
//!   visible to the device until [`Ring::publish`] writes the index once
//!   for the whole burst;
//! * [`Ring::needs_kick`] applies the event-index rule (`vring_need_event`)
//!   over everything published since the last kick, wrap-safe;
//! * [`Ring::arm`] / [`Ring::disarm`] / [`Ring::arm_after`] set
//!   `used_event` (or the no-interrupt flag without event index) so the
//!   device interrupts only when the driver is about to sleep.
//!
//! Every buffer is one descriptor (the device header sits in the buffer's
//! headroom, see [`crate::dma`]); the descriptor index is the token.

use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{Ordering, fence};
use virtio_drivers::transport::Transport;
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

const DESC_F_WRITE: u16 = 2;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
const USED_F_NO_NOTIFY: u16 = 1;

/// Why a ring could not be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// The device's queue is smaller than a power of two ≥ 2 we can use.
    BadSize,
    /// The queue is already in use.
    InUse,
}

/// One virtqueue in DMA memory, with the driver's shadow state.
pub struct Ring<H: Hal> {
    size: u16,
    /// Base of the DMA allocation: descriptors, then available ring, then used ring.
    base: NonNull<u8>,
    paddr: PhysAddr,
    pages: usize,
    avail_off: usize,
    used_off: usize,
    free: Vec<u16>,
    /// Which descriptors the device holds (a completion naming another is refused).
    busy: Vec<bool>,
    /// Next available index to fill (driver's copy).
    avail_idx: u16,
    /// Available index at the last notification decision.
    kicked_idx: u16,
    /// Next used index to read.
    last_used: u16,
    event_idx: bool,
    _hal: core::marker::PhantomData<H>,
}

fn align_up(x: usize, a: usize) -> usize {
    x.div_ceil(a) * a
}

impl<H: Hal> Ring<H> {
    /// Sets up queue `index` of `transport` with `size` entries (a power of
    /// two not above the device's maximum).
    pub fn new<T: Transport>(
        transport: &mut T,
        index: u16,
        size: u16,
        event_idx: bool,
    ) -> Result<Self, RingError> {
        if !size.is_power_of_two() || size < 2 || transport.max_queue_size(index) < u32::from(size)
        {
            return Err(RingError::BadSize);
        }
        if transport.queue_used(index) {
            return Err(RingError::InUse);
        }
        let n = usize::from(size);
        let avail_off = 16 * n;
        let used_off = align_up(avail_off + 6 + 2 * n, 64);
        let bytes = used_off + 6 + 8 * n;
        let pages = bytes.div_ceil(PAGE_SIZE);
        // Zeroed by the HAL: flags, indices and events start at 0.
        let (paddr, base) = H::dma_alloc(pages, BufferDirection::Both);
        transport.queue_set(
            index,
            u32::from(size),
            paddr,
            paddr + avail_off as PhysAddr,
            paddr + used_off as PhysAddr,
        );
        Ok(Ring {
            size,
            base,
            paddr,
            pages,
            avail_off,
            used_off,
            free: (0..size).rev().collect(),
            busy: alloc::vec![false; n],
            avail_idx: 0,
            kicked_idx: 0,
            last_used: 0,
            event_idx,
            _hal: core::marker::PhantomData,
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Free descriptors.
    pub fn room(&self) -> usize {
        self.free.len()
    }

    /// Descriptors the device holds.
    pub fn in_flight(&self) -> usize {
        usize::from(self.size) - self.free.len()
    }

    fn ptr16(&self, off: usize) -> *mut u16 {
        // SAFETY: every offset passed is inside the ring's allocation and
        // 2-aligned (see `new`'s layout).
        unsafe { self.base.as_ptr().add(off).cast::<u16>() }
    }

    fn read16(&self, off: usize) -> u16 {
        // SAFETY: inside the allocation, aligned; the device may write it
        // concurrently, hence volatile.
        unsafe { self.ptr16(off).read_volatile() }
    }

    fn write16(&self, off: usize, v: u16) {
        // SAFETY: inside the allocation, aligned; volatile because the
        // device reads it.
        unsafe { self.ptr16(off).write_volatile(v) }
    }

    /// Queues the buffer at `addr` of `len` bytes (`device_writes` for
    /// receive buffers); returns its token, or `None` if the ring is full.
    /// The device sees it after [`Ring::publish`].
    pub fn push(&mut self, addr: PhysAddr, len: u32, device_writes: bool) -> Option<u16> {
        let id = self.free.pop()?;
        let d = usize::from(id) * 16;
        let flags = if device_writes { DESC_F_WRITE } else { 0 };
        // SAFETY: descriptor `id` lies inside the allocation (id < size) and
        // is not the device's (it was on the free list).
        unsafe {
            let p = self.base.as_ptr().add(d);
            p.cast::<u64>().write_volatile(addr);
            p.add(8).cast::<u32>().write_volatile(len);
            p.add(12).cast::<u16>().write_volatile(flags);
            p.add(14).cast::<u16>().write_volatile(0);
        }
        let slot = usize::from(self.avail_idx & (self.size - 1));
        self.write16(self.avail_off + 4 + 2 * slot, id);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.busy[usize::from(id)] = true;
        Some(id)
    }

    /// Makes every pushed buffer visible to the device.
    pub fn publish(&mut self) {
        // Descriptors and ring slots before the index (x86 keeps stores in
        // order; the fence keeps the compiler from reordering them).
        fence(Ordering::Release);
        self.write16(self.avail_off + 2, self.avail_idx);
    }

    /// Whether the device must be notified of what was published since the
    /// last call (which this call then accounts as notified).
    pub fn needs_kick(&mut self) -> bool {
        let old = self.kicked_idx;
        let new = self.avail_idx;
        if old == new {
            return false;
        }
        self.kicked_idx = new;
        // The index store must be visible before the device's event is read.
        fence(Ordering::SeqCst);
        if self.event_idx {
            let event = self.read16(self.used_off + 4 + 8 * usize::from(self.size));
            // vring_need_event: the device asked to hear when the index passes `event`.
            new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
        } else {
            self.read16(self.used_off) & USED_F_NO_NOTIFY == 0
        }
    }

    /// Whether the device has returned buffers not yet taken.
    pub fn has_used(&self) -> bool {
        self.read16(self.used_off + 2) != self.last_used
    }

    /// The next buffer the device returned: (token, bytes it wrote).
    /// `Err(())` for a completion naming a descriptor the device did not
    /// hold (a broken device): it is skipped.
    #[allow(clippy::result_unit_err)]
    pub fn pop_used(&mut self) -> Option<Result<(u16, u32), ()>> {
        if !self.has_used() {
            return None;
        }
        // The entry is read after the index that announced it.
        fence(Ordering::Acquire);
        let slot = usize::from(self.last_used & (self.size - 1));
        let at = self.used_off + 4 + 8 * slot;
        // SAFETY: the used element `slot` lies inside the allocation, 4-aligned.
        let (id, len) = unsafe {
            let p = self.base.as_ptr().add(at).cast::<u32>();
            (p.read_volatile(), p.add(1).read_volatile())
        };
        self.last_used = self.last_used.wrapping_add(1);
        let Ok(id) = u16::try_from(id) else {
            return Some(Err(()));
        };
        match self.busy.get_mut(usize::from(id)) {
            Some(b) if *b => {
                *b = false;
                self.free.push(id);
                Some(Ok((id, len)))
            }
            _ => Some(Err(())),
        }
    }

    fn set_used_event(&self, v: u16) {
        self.write16(self.avail_off + 4 + 2 * usize::from(self.size), v);
    }

    /// Asks for an interrupt at the next returned buffer. Returns true if
    /// one is already waiting (then no interrupt may come for it).
    pub fn arm(&mut self) -> bool {
        self.arm_after(0)
    }

    /// Asks for an interrupt once `n` more buffers have been returned
    /// (without event index: at the next one).
    pub fn arm_after(&mut self, n: u16) -> bool {
        if self.event_idx {
            self.set_used_event(self.last_used.wrapping_add(n));
        } else {
            self.write16(self.avail_off, 0);
        }
        fence(Ordering::SeqCst);
        self.has_used()
    }

    /// No interrupts for returned buffers until the next `arm`.
    pub fn disarm(&mut self) {
        if self.event_idx {
            // An event the device has already passed: it fires again only
            // after 64 Ki more completions, long after the next `arm`.
            self.set_used_event(self.last_used.wrapping_sub(1));
        } else {
            self.write16(self.avail_off, AVAIL_F_NO_INTERRUPT);
        }
    }
}

impl<H: Hal> Drop for Ring<H> {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this many pages; the owner resets
        // the device before dropping its rings, so the device no longer
        // reads or writes this memory.
        unsafe {
            H::dma_dealloc(self.paddr, self.base, self.pages);
        }
    }
}
