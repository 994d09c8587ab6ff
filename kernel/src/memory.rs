//! Physical memory: the heap and device mappings.
//!
//! Layout (identity-mapped, virtual == physical):
//! - 0 .. 1 MiB: firmware, loader data (Multiboot info may live here).
//! - 1 MiB .. `__image_end`: the kernel image (text, rodata, data, bss with the
//!   boot page tables and the 256 KiB boot stack).
//! - the largest free RAM range above the image and below 4 GiB, minus what the
//!   loader still uses (Multiboot info, command line, modules): the heap. DMA
//!   buffers for the NICs come from the heap too (page-aligned).
//! - 0 .. 4 GiB is mapped by the trampoline with 2 MiB pages; device memory
//!   above 4 GiB (64-bit PCI BARs) is mapped uncached on demand by [`map_mmio`].

use boot::multiboot::BootInfo;
use core::alloc::{GlobalAlloc, Layout};
use core::cell::RefCell;
use core::ptr::NonNull;
use critical_section::Mutex;
use linked_list_allocator::Heap;

struct KernelHeap(Mutex<RefCell<Heap>>);

// SAFETY: every access goes through the critical section (interrupts off, one CPU).
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        critical_section::with(|cs| {
            self.0
                .borrow_ref_mut(cs)
                .allocate_first_fit(layout)
                .map_or(core::ptr::null_mut(), NonNull::as_ptr)
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        critical_section::with(|cs| {
            // SAFETY: `ptr` came from `alloc` with this `layout` (GlobalAlloc contract).
            unsafe {
                self.0
                    .borrow_ref_mut(cs)
                    .deallocate(NonNull::new_unchecked(ptr), layout)
            }
        })
    }
}

#[global_allocator]
static HEAP: KernelHeap = KernelHeap(Mutex::new(RefCell::new(Heap::empty())));

unsafe extern "C" {
    static __image_end: u8;
}

const FOUR_GIB: u64 = 1 << 32;

/// Picks the heap range and hands it to the allocator; returns (start, size).
pub fn init_heap(info: &BootInfo) -> (u64, u64) {
    // SAFETY: linker-script symbol; only its address is used.
    let image_end = (&raw const __image_end) as u64;
    let mut best = (0u64, 0u64);
    for r in info.regions().iter().filter(|r| r.is_ram()) {
        let mut lo = r.base.max(image_end);
        let mut hi = r.end().min(FOUR_GIB);
        for &(rlo, rhi) in &info.reserved {
            if rhi <= lo || rlo >= hi || rlo == rhi {
                continue;
            }
            // Keep the larger side of the reserved range.
            if rlo.saturating_sub(lo) >= hi.saturating_sub(rhi) {
                hi = rlo;
            } else {
                lo = rhi;
            }
        }
        lo = (lo + 0xFFF) & !0xFFF;
        hi &= !0xFFF;
        if hi > lo && hi - lo > best.1 {
            best = (lo, hi - lo);
        }
    }
    if best.1 > 0 {
        critical_section::with(|cs| {
            // SAFETY: the range is available RAM per the firmware map, above the
            // kernel image, clear of loader data, identity-mapped, and used only here.
            unsafe {
                HEAP.0
                    .borrow_ref_mut(cs)
                    .init(best.0 as *mut u8, best.1 as usize)
            }
        });
    }
    best
}

/// Bytes still free in the heap.
pub fn heap_free() -> usize {
    critical_section::with(|cs| HEAP.0.borrow_ref(cs).free())
}

/// Bytes of the heap in use.
pub fn heap_used() -> usize {
    critical_section::with(|cs| HEAP.0.borrow_ref(cs).used())
}

/// Present, writable, and reachable from ring 3, where the kernel runs.
const PRESENT_WRITABLE: u64 = 0x7;
const HUGE: u64 = 0x80;
const UNCACHED: u64 = 0x18; // PWT | PCD
const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Returns the next-level table behind `entry`, allocating a zeroed one if absent.
fn next_table(entry: &mut u64) -> *mut u64 {
    if *entry & 1 == 0 {
        let layout = Layout::from_size_align(4096, 4096).expect("page layout");
        // SAFETY: non-zero-sized layout.
        let page = unsafe { alloc::alloc::alloc_zeroed(layout) };
        if page.is_null() {
            crate::fatal("out of memory for page tables");
        }
        *entry = page as u64 | PRESENT_WRITABLE;
    }
    (*entry & ADDR_MASK) as *mut u64
}

/// Identity-maps `[phys, phys + size)` uncached with 2 MiB pages, if it lies above 4 GiB.
pub fn map_mmio(phys: u64, size: u64) {
    if phys.saturating_add(size) <= FOUR_GIB {
        return;
    }
    let pml4 = boot::boot_pml4_phys() as *mut u64;
    let mut page = phys & !0x1F_FFFF;
    let end = phys.saturating_add(size);
    critical_section::with(|_| {
        while page < end {
            // SAFETY: the page tables are identity-mapped kernel data; we only add entries
            // for addresses that had none (existing 2 MiB mappings are left alone).
            unsafe {
                let pdpt = next_table(&mut *pml4.add(((page >> 39) & 0x1FF) as usize));
                let pd = next_table(&mut *pdpt.add(((page >> 30) & 0x1FF) as usize));
                let e = pd.add(((page >> 21) & 0x1FF) as usize);
                if *e & 1 == 0 {
                    *e = page | PRESENT_WRITABLE | HUGE | UNCACHED;
                }
            }
            crate::cpu::invalidate_page(page);
            page += 0x20_0000;
        }
    });
}

/// Unmaps the 4 KiB guard page the boot crate reserves below the boot stack,
/// so that an overflow faults instead of overwriting the kernel data below it.
/// The kernel runs in ring 3, so the page fault is taken on the TSS's ring-0
/// stack and reported (the exception report names the guard page). Splits
/// the 2 MiB page that holds it into 4 KiB pages.
pub fn guard_boot_stack() {
    let guard = boot::boot_stack_bottom() - 0x1000;
    let pml4 = boot::boot_pml4_phys() as *mut u64;
    let layout = Layout::from_size_align(4096, 4096).expect("page layout");
    // SAFETY: non-zero-sized layout.
    let pt = unsafe { alloc::alloc::alloc_zeroed(layout) } as *mut u64;
    if pt.is_null() {
        return;
    }
    let big = guard & !0x1F_FFFF;
    // SAFETY: the boot page tables are identity-mapped kernel data; the 2 MiB
    // entry is replaced by a table mapping the same frames, minus the guard.
    unsafe {
        for i in 0..512u64 {
            let page = big + i * 0x1000;
            if page != guard {
                *pt.add(i as usize) = page | PRESENT_WRITABLE;
            }
        }
        let pdpt = (*pml4.add(((big >> 39) & 0x1FF) as usize) & ADDR_MASK) as *mut u64;
        let pd = (*pdpt.add(((big >> 30) & 0x1FF) as usize) & ADDR_MASK) as *mut u64;
        *pd.add(((big >> 21) & 0x1FF) as usize) = pt as u64 | PRESENT_WRITABLE;
    }
    // INVLPG on any address in a large page drops the whole large-page entry.
    crate::cpu::invalidate_page(guard);
}
