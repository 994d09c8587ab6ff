//! Frame buffers that NICs read and write by DMA, and the pool they come
//! from.
//!
//! Every NIC of the appliance takes its receive buffers from one
//! [`BufPool`] and gives transmitted buffers back to it, so a received
//! frame can leave through any NIC *in the buffer it arrived in*: the
//! forwarding path moves buffers between rings and never copies payload.
//!
//! A buffer holds [`HEADROOM`] bytes before the frame, where a driver puts
//! the header its device expects in front of a frame (virtio-net's), so
//! that header and frame go out as one contiguous piece.
//!
//! Ownership while a device holds a buffer: a [`DmaBuf`] is a raw pointer
//! with a size, not a `Box`, and it hands out slices only through `&self` /
//! `&mut self`. A driver keeps the buffers its device owns in its own
//! table and creates no slice of them until the device has given them
//! back, so no Rust reference ever claims memory the device is writing.

use alloc::vec::Vec;
use core::alloc::Layout;
use core::ptr::NonNull;
use lb_core::frame::Offload;

/// Bytes before the frame in every buffer, for a device's header.
pub const HEADROOM: usize = 64;
/// Alignment of buffers (a cache line).
const ALIGN: usize = 64;

/// The two buffer sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufSize {
    /// An Ethernet frame of up to 1514 bytes (plus a VLAN tag) with headroom:
    /// 2048 bytes after the headroom, a receive buffer size every NIC has.
    Small,
    /// A TCP super-frame of up to 64 KiB with headroom: what a virtio-net
    /// device with guest TSO needs per receive buffer when the driver does
    /// not merge buffers (virtio 1.1, 5.1.6.3.1: at least 65562 bytes
    /// including its 12-byte header).
    Large,
}

impl BufSize {
    pub const fn bytes(self) -> usize {
        match self {
            BufSize::Small => HEADROOM + 2048,
            // 14 (Ethernet) + 65535 (IPv4) + headroom, rounded up to ALIGN.
            BufSize::Large => (HEADROOM + 14 + 65535).next_multiple_of(ALIGN),
        }
    }

    fn layout(self) -> Layout {
        // Both sizes are non-zero multiples of a power-of-two alignment.
        Layout::from_size_align(self.bytes(), ALIGN).unwrap_or(Layout::new::<[u8; ALIGN]>())
    }
}

/// One DMA-able buffer from the heap (identity-mapped: its address is
/// what the device uses, through the HAL's `share`).
#[derive(Debug)]
pub struct DmaBuf {
    ptr: NonNull<u8>,
    size: BufSize,
}

impl DmaBuf {
    /// A zeroed buffer (zeroed once, so that reading it is never reading
    /// uninitialised memory), or `None` when the heap is out. Drivers that
    /// need one before the pool exists (a setup frame) take it here; it
    /// joins the pool when they hand it back.
    pub fn new(size: BufSize) -> Option<DmaBuf> {
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(size.layout()) };
        Some(DmaBuf {
            ptr: NonNull::new(p)?,
            size,
        })
    }

    pub fn size(&self) -> BufSize {
        self.size
    }

    pub fn capacity(&self) -> usize {
        self.size.bytes()
    }

    /// The whole buffer, headroom included.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points to `capacity()` initialised bytes this value
        // owns; no device writes them while a reference exists (module docs).
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.capacity()) }
    }

    /// The whole buffer, headroom included, for writing.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `bytes`, and `&mut self` makes this the only reference.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity()) }
    }

    /// The buffer as a raw slice, for handing to a device (no reference made).
    pub fn raw(&self) -> NonNull<[u8]> {
        NonNull::slice_from_raw_parts(self.ptr, self.capacity())
    }

    /// The raw range `[from, from + len)` of the buffer (clamped to it).
    pub fn raw_range(&self, from: usize, len: usize) -> NonNull<[u8]> {
        let from = from.min(self.capacity());
        let len = len.min(self.capacity() - from);
        // SAFETY: `from` is within the allocation.
        let p = unsafe { self.ptr.add(from) };
        NonNull::slice_from_raw_parts(p, len)
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; dropped only when no
        // device holds it (drivers keep posted buffers until reclaimed).
        unsafe { alloc::alloc::dealloc(self.ptr.as_ptr(), self.size.layout()) }
    }
}

/// A frame in a buffer: `len` bytes at [`HEADROOM`], with what the NIC
/// said about its checksum and segmentation.
#[derive(Debug)]
pub struct Packet {
    pub buf: DmaBuf,
    pub len: usize,
    pub offload: Offload,
}

impl Packet {
    pub fn frame(&self) -> &[u8] {
        &self.buf.bytes()[HEADROOM..HEADROOM + self.len]
    }

    pub fn frame_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.buf.bytes_mut()[HEADROOM..HEADROOM + len]
    }
}

/// Counters of the pool.
#[derive(Clone, Copy, Debug, Default)]
pub struct PoolStats {
    /// Buffers made so far, by size.
    pub small_made: usize,
    pub large_made: usize,
    /// Requests refused because the size's limit was reached and none was free.
    pub small_exhausted: u64,
    pub large_exhausted: u64,
}

/// Free buffers of both sizes, made on demand up to a limit per size.
#[derive(Debug)]
pub struct BufPool {
    small: Vec<DmaBuf>,
    large: Vec<DmaBuf>,
    small_max: usize,
    large_max: usize,
    pub stats: PoolStats,
}

impl BufPool {
    /// A pool that makes at most `small_max` small and `large_max` large buffers.
    pub fn new(small_max: usize, large_max: usize) -> BufPool {
        BufPool {
            small: Vec::with_capacity(small_max),
            large: Vec::with_capacity(large_max),
            small_max,
            large_max,
            stats: PoolStats::default(),
        }
    }

    /// Raises the limit for `size` by `n` buffers (a NIC joined).
    pub fn reserve(&mut self, size: BufSize, n: usize) {
        match size {
            BufSize::Small => {
                self.small_max += n;
                self.small.reserve(n);
            }
            BufSize::Large => {
                self.large_max += n;
                self.large.reserve(n);
            }
        }
    }

    /// A free buffer of `size`, made if the limit allows.
    pub fn get(&mut self, size: BufSize) -> Option<DmaBuf> {
        let (free, made, max, exhausted) = match size {
            BufSize::Small => (
                &mut self.small,
                &mut self.stats.small_made,
                self.small_max,
                &mut self.stats.small_exhausted,
            ),
            BufSize::Large => (
                &mut self.large,
                &mut self.stats.large_made,
                self.large_max,
                &mut self.stats.large_exhausted,
            ),
        };
        if let Some(b) = free.pop() {
            return Some(b);
        }
        if *made < max
            && let Some(b) = DmaBuf::new(size)
        {
            *made += 1;
            return Some(b);
        }
        *exhausted += 1;
        None
    }

    /// Gives a buffer back.
    pub fn put(&mut self, buf: DmaBuf) {
        match buf.size {
            BufSize::Small => self.small.push(buf),
            BufSize::Large => self.large.push(buf),
        }
    }

    /// Free buffers of `size` right now (made or makeable).
    pub fn available(&self, size: BufSize) -> usize {
        match size {
            BufSize::Small => self.small.len() + (self.small_max - self.stats.small_made),
            BufSize::Large => self.large.len() + (self.large_max - self.stats.large_made),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_hold_their_frames() {
        assert!(BufSize::Small.bytes() >= HEADROOM + 1518);
        // virtio's minimum for a merge-less guest-TSO receive buffer, header included,
        // posted at HEADROOM - 12.
        assert!(BufSize::Large.bytes() - (HEADROOM - 12) >= 65562);
    }

    #[test]
    fn pool_makes_up_to_its_limit_and_reuses() {
        let mut p = BufPool::new(2, 1);
        let a = p.get(BufSize::Small).unwrap();
        let b = p.get(BufSize::Small).unwrap();
        assert!(p.get(BufSize::Small).is_none());
        assert_eq!(p.stats.small_exhausted, 1);
        p.put(a);
        assert_eq!(p.available(BufSize::Small), 1);
        let c = p.get(BufSize::Small).unwrap();
        assert_eq!(p.stats.small_made, 2);
        let l = p.get(BufSize::Large).unwrap();
        assert_eq!(l.capacity(), BufSize::Large.bytes());
        assert!(p.get(BufSize::Large).is_none());
        p.reserve(BufSize::Large, 1);
        assert!(p.get(BufSize::Large).is_some());
        drop((b, c));
    }

    #[test]
    fn packet_frame_is_after_the_headroom() {
        let mut p = BufPool::new(1, 0);
        let mut buf = p.get(BufSize::Small).unwrap();
        buf.bytes_mut()[HEADROOM..HEADROOM + 3].copy_from_slice(b"abc");
        let mut pkt = Packet {
            buf,
            len: 3,
            offload: Offload::NONE,
        };
        assert_eq!(pkt.frame(), b"abc");
        pkt.frame_mut()[0] = b'x';
        assert_eq!(pkt.frame(), b"xbc");
        assert!(pkt.buf.bytes().iter().take(HEADROOM).all(|&b| b == 0));
    }
}
