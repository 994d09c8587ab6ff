//! The kernel's GDT with a TSS whose IST1 stack catches double faults (so a
//! kernel stack overflow is reported instead of triple-faulting), and the
//! user-mode (ring 3) segments the kernel runs in after setup (see
//! [`crate::cpu::enter_user_mode`]): interrupts and exceptions from ring 3
//! switch to the TSS's ring-0 stack.

use core::arch::asm;
use core::cell::UnsafeCell;

pub const KERNEL_CODE: u16 = 0x08;
pub const KERNEL_DATA: u16 = 0x10;
const TSS_SELECTOR: u16 = 0x18;
/// Ring-3 data and code selectors (RPL 3).
pub const USER_DATA: u16 = 0x28 | 3;
pub const USER_CODE: u16 = 0x30 | 3;
/// IST index (1-based, as the IDT encodes it) of the double-fault stack.
pub const DOUBLE_FAULT_IST: u8 = 1;

#[repr(C, packed(4))]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

#[repr(C, align(16))]
struct Stack([u8; 16 * 1024]);

struct Tables {
    gdt: [u64; 7],
    tss: Tss,
    df_stack: Stack,
    /// Ring-0 stack for interrupts, exceptions and service calls from ring 3.
    ring0_stack: Stack,
}

struct Cell(UnsafeCell<Tables>);
// SAFETY: written once by `init` on the boot CPU before interrupts are enabled.
unsafe impl Sync for Cell {}

static TABLES: Cell = Cell(UnsafeCell::new(Tables {
    gdt: [0; 7],
    tss: Tss {
        reserved0: 0,
        rsp: [0; 3],
        reserved1: 0,
        ist: [0; 7],
        reserved2: 0,
        reserved3: 0,
        iomap_base: size_of::<Tss>() as u16,
    },
    df_stack: Stack([0; 16 * 1024]),
    ring0_stack: Stack([0; 16 * 1024]),
}));

#[repr(C, packed(2))]
struct Pointer {
    limit: u16,
    base: u64,
}

pub fn init() {
    // SAFETY: single-threaded early boot; nothing else references TABLES yet.
    let t = unsafe { &mut *TABLES.0.get() };
    let stack_top = (&raw const t.df_stack) as u64 + size_of::<Stack>() as u64;
    t.tss.ist[0] = stack_top;
    let tss = (&raw const t.tss) as u64;
    let limit = (size_of::<Tss>() - 1) as u64;
    t.gdt[1] = 0x00AF_9A00_0000_FFFF; // 64-bit code
    t.gdt[2] = 0x00CF_9200_0000_FFFF; // data
    t.gdt[3] = (limit & 0xFFFF)
        | ((tss & 0xFF_FFFF) << 16)
        | (0x89 << 40) // present, 64-bit TSS (available)
        | (((limit >> 16) & 0xF) << 48)
        | (((tss >> 24) & 0xFF) << 56);
    t.gdt[4] = tss >> 32;
    t.gdt[5] = 0x00CF_F200_0000_FFFF; // ring-3 data
    t.gdt[6] = 0x00AF_FA00_0000_FFFF; // ring-3 64-bit code
    t.tss.rsp[0] = (&raw const t.ring0_stack) as u64 + size_of::<Stack>() as u64;
    let ptr = Pointer {
        limit: (size_of::<[u64; 7]>() - 1) as u16,
        base: (&raw const t.gdt) as u64,
    };
    // SAFETY: the GDT lives in a static and has valid code/data/TSS descriptors;
    // the far return reloads CS with the same 64-bit code selector.
    unsafe {
        asm!(
            "lgdt [{ptr}]",
            "push {code}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ds, {data:x}",
            "mov es, {data:x}",
            "mov ss, {data:x}",
            "ltr {tss:x}",
            ptr = in(reg) &ptr,
            code = in(reg) u64::from(KERNEL_CODE),
            data = in(reg) KERNEL_DATA,
            tss = in(reg) TSS_SELECTOR,
            tmp = out(reg) _,
        );
    }
}
