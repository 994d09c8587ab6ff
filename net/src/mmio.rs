//! Register windows of devices (memory-mapped or I/O ports) and DMA rings
//! of fixed-size descriptors, shared by the drivers.

use core::ptr::NonNull;
use virtio_drivers::{BufferDirection, Hal, PAGE_SIZE, PhysAddr};

/// A device's memory-mapped register window.
#[derive(Clone, Copy, Debug)]
pub struct Mmio {
    base: NonNull<u8>,
    len: usize,
}

impl Mmio {
    /// # Safety
    /// `base` must map `len` bytes of one device's registers (uncached),
    /// used by nothing else, for as long as this value is used.
    pub unsafe fn new(base: NonNull<u8>, len: usize) -> Mmio {
        Mmio { base, len }
    }

    /// Maps BAR memory at `phys` (`len` bytes) through the HAL.
    ///
    /// # Safety
    /// `phys` must be a memory BAR of a device this driver alone drives.
    pub unsafe fn map<H: Hal>(phys: u64, len: usize) -> Mmio {
        // SAFETY: the caller vouches for the range; the HAL maps it.
        let base = unsafe { H::mmio_phys_to_virt(phys, len) };
        Mmio { base, len }
    }

    pub fn read32(&self, off: usize) -> u32 {
        assert!(
            off + 4 <= self.len && off.is_multiple_of(4),
            "register {off:#x}"
        );
        // SAFETY: inside the window (checked), aligned; device registers
        // are read with one volatile access.
        unsafe { self.base.as_ptr().add(off).cast::<u32>().read_volatile() }
    }

    pub fn write32(&self, off: usize, v: u32) {
        assert!(
            off + 4 <= self.len && off.is_multiple_of(4),
            "register {off:#x}"
        );
        // SAFETY: as for `read32`.
        unsafe { self.base.as_ptr().add(off).cast::<u32>().write_volatile(v) }
    }
}

/// DMA memory for a ring of `count` descriptors of `size` bytes, zeroed.
pub struct DescRing<H: Hal> {
    base: NonNull<u8>,
    paddr: PhysAddr,
    pages: usize,
    size: usize,
    count: usize,
    _hal: core::marker::PhantomData<H>,
}

impl<H: Hal> DescRing<H> {
    pub fn new(count: usize, size: usize) -> DescRing<H> {
        let pages = (count * size).div_ceil(PAGE_SIZE).max(1);
        // Page-aligned and zeroed by the HAL (the 8254x wants 128-byte
        // alignment, vmxnet3 512).
        let (paddr, base) = H::dma_alloc(pages, BufferDirection::Both);
        DescRing {
            base,
            paddr,
            pages,
            size,
            count,
            _hal: core::marker::PhantomData,
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    /// Device address of the ring.
    pub fn paddr(&self) -> u64 {
        self.paddr
    }

    /// Bytes of the ring.
    pub fn bytes(&self) -> usize {
        self.count * self.size
    }

    fn ptr(&self, i: usize, off: usize, width: usize) -> *mut u8 {
        assert!(i < self.count && off + width <= self.size);
        // SAFETY: inside the allocation (checked above).
        unsafe { self.base.as_ptr().add(i * self.size + off) }
    }

    /// Reads a little-endian field of descriptor `i` (the device may write
    /// it concurrently, hence volatile).
    pub fn read32(&self, i: usize, off: usize) -> u32 {
        // SAFETY: in bounds (`ptr`), 4-aligned since descriptors are.
        unsafe { self.ptr(i, off, 4).cast::<u32>().read_volatile() }
    }

    pub fn write32(&self, i: usize, off: usize, v: u32) {
        // SAFETY: as for `read32`.
        unsafe { self.ptr(i, off, 4).cast::<u32>().write_volatile(v) }
    }

    pub fn write64(&self, i: usize, off: usize, v: u64) {
        // SAFETY: as for `read32`, 8-aligned.
        unsafe { self.ptr(i, off, 8).cast::<u64>().write_volatile(v) }
    }

    pub fn write16(&self, i: usize, off: usize, v: u16) {
        // SAFETY: as for `read32`, 2-aligned.
        unsafe { self.ptr(i, off, 2).cast::<u16>().write_volatile(v) }
    }

    pub fn write8(&self, i: usize, off: usize, v: u8) {
        // SAFETY: in bounds (`ptr`).
        unsafe { self.ptr(i, off, 1).write_volatile(v) }
    }

    /// Copies `bytes` into descriptor `i` at `off`.
    pub fn write_bytes(&self, i: usize, off: usize, bytes: &[u8]) {
        for (k, b) in bytes.iter().enumerate() {
            self.write8(i, off + k, *b);
        }
    }

    pub fn read64(&self, i: usize, off: usize) -> u64 {
        // SAFETY: as for `read32`, 8-aligned.
        unsafe { self.ptr(i, off, 8).cast::<u64>().read_volatile() }
    }
}

impl<H: Hal> Drop for DescRing<H> {
    fn drop(&mut self) {
        // SAFETY: allocated in `new`; the owning driver resets its device
        // before its rings go.
        unsafe {
            H::dma_dealloc(self.paddr, self.base, self.pages);
        }
    }
}

/// Device address of the frame area of a buffer (after its headroom) for
/// a device that reads or writes it.
pub fn frame_addr<H: Hal>(buf: &crate::dma::DmaBuf, dir: BufferDirection) -> u64 {
    let region = buf.raw_range(crate::dma::HEADROOM, buf.capacity());
    // SAFETY: the caller keeps the buffer away from Rust references until the
    // device gives it back (see `crate::dma`).
    unsafe { H::share(region, dir) }
}

/// The buffers a device holds in one descriptor ring, oldest first, and
/// the ring's tail as last told to the device: the bookkeeping every
/// driver with a fixed ring of single-buffer descriptors shares.
pub struct Slots<H: Hal> {
    bufs: alloc::vec::Vec<Option<crate::dma::DmaBuf>>,
    /// Oldest descriptor the device holds, next one to fill, how many it holds.
    head: usize,
    tail: usize,
    held: usize,
    /// Tail last written to the device's doorbell.
    published: usize,
    dir: BufferDirection,
    _hal: core::marker::PhantomData<H>,
}

impl<H: Hal> Slots<H> {
    /// `count` descriptors whose buffers the device reads (`DriverToDevice`)
    /// or writes (`DeviceToDriver`).
    pub fn new(count: usize, dir: BufferDirection) -> Slots<H> {
        Slots {
            bufs: (0..count).map(|_| None).collect(),
            head: 0,
            tail: 0,
            held: 0,
            published: 0,
            dir,
            _hal: core::marker::PhantomData,
        }
    }

    pub fn held(&self) -> usize {
        self.held
    }

    /// The oldest descriptor the device holds (next to complete).
    pub fn head(&self) -> usize {
        self.head
    }

    /// The next descriptor to fill.
    pub fn tail(&self) -> usize {
        self.tail
    }

    /// Free descriptors, keeping `reserve` unused (rings whose head and
    /// tail registers cannot tell full from empty keep one).
    pub fn room(&self, reserve: usize) -> usize {
        self.bufs.len().saturating_sub(reserve + self.held)
    }

    /// Takes `buf` into the tail descriptor and returns (its index, the
    /// device address of its frame area) for the caller to write the
    /// descriptor with; `None` (buffer back) if that descriptor is still held.
    pub fn push(&mut self, buf: crate::dma::DmaBuf) -> Result<(usize, u64), crate::dma::DmaBuf> {
        let i = self.tail;
        if self.held == self.bufs.len() || self.bufs[i].is_some() {
            return Err(buf);
        }
        let addr = frame_addr::<H>(&buf, self.dir);
        self.bufs[i] = Some(buf);
        self.tail = (i + 1) % self.bufs.len();
        self.held += 1;
        Ok((i, addr))
    }

    /// Gives back the oldest buffer (the device completed its descriptor):
    /// (index, buffer), or `None` if the device holds none.
    pub fn pop(&mut self) -> Option<(usize, Option<crate::dma::DmaBuf>)> {
        if self.held == 0 {
            return None;
        }
        let i = self.head;
        self.head = (i + 1) % self.bufs.len();
        self.held -= 1;
        let buf = self.bufs[i].take();
        if let Some(b) = &buf {
            // SAFETY: shared by `push`; the device has completed the
            // descriptor, so it no longer touches the buffer.
            unsafe { H::unshare(0, b.raw(), self.dir) };
        }
        Some((i, buf))
    }

    /// The tail to write to the doorbell if it moved since the last call.
    pub fn publish(&mut self) -> Option<usize> {
        (self.tail != self.published).then(|| {
            // Descriptors before the doorbell (x86 keeps stores in order;
            // this keeps the compiler from reordering them).
            core::sync::atomic::fence(core::sync::atomic::Ordering::Release);
            self.published = self.tail;
            self.tail
        })
    }

    /// Whether descriptor `i` has been handed to the device (published).
    pub fn published_past(&self, i: usize) -> bool {
        i != self.published
    }
}
