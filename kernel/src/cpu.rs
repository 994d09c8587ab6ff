//! Thin wrappers over x86 instructions the kernel needs, and the ring-3
//! execution model.
//!
//! After CPU setup the kernel drops to ring 3 ([`enter_user_mode`]) and stays
//! there. Why: on KVM-PVM (a paravirtual nested KVM) guest ring-0 code is
//! emulated instruction by instruction (~2 µs each), while ring-3 code runs
//! natively, four orders of magnitude faster. On other hypervisors and bare
//! metal the only cost is a trap per privileged operation, which the kernel
//! rarely needs. The page tables allow ring 3 everywhere (one address space,
//! one program: the privilege split protects nothing here).
//!
//! Privileged instructions (port I/O, MSRs, INVLPG, CLI/STI/HLT) go through a
//! service call when running in ring 3: `ud2` followed by the tag bytes "SV",
//! with the service number in RAX and arguments in RDI/RSI/RDX. The #UD
//! handler ([`service_entry`], a few assembler instructions so that little
//! ring-0 code is emulated) performs it and returns past the tag. Each wrapper
//! checks the current privilege level, so exception handlers (ring 0) use the
//! instructions directly.

use core::arch::{asm, global_asm};

/// Service numbers (index into `service_table`).
const SVC_OUTB: u64 = 0;
const SVC_INB: u64 = 1;
const SVC_OUTL: u64 = 2;
const SVC_INL: u64 = 3;
const SVC_RDMSR: u64 = 4;
const SVC_WRMSR: u64 = 5;
const SVC_INVLPG: u64 = 6;
const SVC_CLI: u64 = 7;
const SVC_STI: u64 = 8;
const SVC_STI_HLT: u64 = 9;
const SVC_HALT_FOREVER: u64 = 10;
const SVC_PCI_READ: u64 = 11;
const SVC_PCI_WRITE: u64 = 12;
const SVC_OUTSB: u64 = 13;
const SVC_OUTW: u64 = 14;
const SVC_INSW: u64 = 15;
const SVC_OUTSW: u64 = 16;
const SVC_COUNT: u64 = 17;

global_asm!(
    r#"
    .text
    .global service_entry
/* #UD handler. Not a service call (from ring 0, other bytes, bad number):
   continue in the ordinary vector-6 stub, which reports and halts. RCX, RDX,
   R11 and RAX are the caller's scratch registers (declared clobbered). */
service_entry:
    test byte ptr [rsp + 8], 3
    jz 8f
    mov r11, [rsp]
    cmp dword ptr [r11], 0x56530B0F
    jne 8f
    cmp rax, {count}
    jae 8f
    add qword ptr [rsp], 4
    lea r11, [rip + service_table]
    jmp qword ptr [r11 + rax * 8]
8:
    jmp [rip + service_ud_stub]

svc_outb:
    mov eax, esi
    mov edx, edi
    out dx, al
    iretq
svc_inb:
    mov edx, edi
    xor eax, eax
    in al, dx
    iretq
svc_outl:
    mov eax, esi
    mov edx, edi
    out dx, eax
    iretq
svc_inl:
    mov edx, edi
    in eax, dx
    iretq
svc_rdmsr:
    mov ecx, edi
    rdmsr
    shl rdx, 32
    or rax, rdx
    iretq
svc_wrmsr:
    mov ecx, edi
    mov eax, esi
    mov rdx, rsi
    shr rdx, 32
    wrmsr
    iretq
svc_invlpg:
    invlpg [rdi]
    iretq
svc_cli:
    and qword ptr [rsp + 16], -0x201
    iretq
svc_sti:
    or qword ptr [rsp + 16], 0x200
    iretq
/* STI takes effect after HLT starts, so a pending interrupt wakes the HLT
   instead of slipping in before it. The wake-up interrupt nests here. */
svc_sti_hlt:
    or qword ptr [rsp + 16], 0x200
    sti
    hlt
    iretq
svc_halt_forever:
    cli
    hlt
    jmp svc_halt_forever
svc_pci_read:
    mov eax, edi
    mov dx, 0xCF8
    out dx, eax
    mov dx, 0xCFC
    in eax, dx
    iretq
svc_pci_write:
    mov eax, edi
    mov dx, 0xCF8
    out dx, eax
    mov eax, esi
    mov dx, 0xCFC
    out dx, eax
    iretq
/* RSI = bytes, RCX = count, RDX = port (ring 0 may read ring-3 pages: no SMAP). */
svc_outsb:
    mov rcx, rdx
    mov edx, edi
    rep outsb
    iretq
svc_outw:
    mov eax, esi
    mov edx, edi
    out dx, ax
    iretq
/* RDI = port, RSI = words, RDX = count: one trap for a whole ATA sector. */
svc_insw:
    mov rcx, rdx
    mov edx, edi
    mov rdi, rsi
    rep insw
    iretq
svc_outsw:
    mov rcx, rdx
    mov edx, edi
    rep outsw
    iretq

    .section .rodata
    .balign 8
service_table:
    .quad svc_outb, svc_inb, svc_outl, svc_inl, svc_rdmsr, svc_wrmsr, svc_invlpg
    .quad svc_cli, svc_sti, svc_sti_hlt, svc_halt_forever, svc_pci_read, svc_pci_write
    .quad svc_outsb, svc_outw, svc_insw, svc_outsw
    .section .data
    .balign 8
    .global service_ud_stub
service_ud_stub:
    .quad 0
    .text
"#,
    count = const SVC_COUNT,
);

unsafe extern "C" {
    static service_entry: u8;
    static mut service_ud_stub: u64;
}

/// Address of the #UD handler that serves ring 3; `ud_stub` is where other
/// #UDs continue (the ordinary exception stub).
pub fn service_handler(ud_stub: u64) -> u64 {
    // SAFETY: written once during single-threaded setup, before any #UD can use it.
    unsafe { (&raw mut service_ud_stub).write_volatile(ud_stub) };
    (&raw const service_entry) as u64
}

/// Whether the CPU runs in ring 3 (after [`enter_user_mode`]).
#[inline(always)]
pub fn in_user_mode() -> bool {
    let cs: u16;
    // SAFETY: reading CS has no side effects.
    unsafe { asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    cs & 3 == 3
}

/// Service call from ring 3 (see the module docs).
#[inline(always)]
fn service(n: u64, a: u64, b: u64) -> u64 {
    let r: u64;
    // SAFETY: the #UD handler performs service `n` and resumes after the tag;
    // it clobbers only the registers declared here.
    unsafe {
        asm!("ud2", ".byte 0x53, 0x56", inout("rax") n => r, in("rdi") a, in("rsi") b,
             out("rcx") _, out("rdx") _, out("r11") _, options(nostack))
    }
    r
}

/// Drops from ring 0 to ring 3, continuing at the caller with the same stack
/// and interrupt flag. Call once, after the GDT, IDT and TSS are loaded.
pub fn enter_user_mode() {
    // SAFETY: the functions do mechanism #1 accesses through ports the
    // kernel owns (PCI_ADDRESS, PCI_DATA).
    unsafe { net::pci::set_config_io(&PCI_CONFIG_IO) };
    // SAFETY: the GDT has the ring-3 selectors and the TSS a ring-0 stack for
    // interrupts; every page is user-accessible, so code, stack and data stay
    // reachable. IRETQ pops RIP, CS, RFLAGS, RSP, SS.
    unsafe {
        asm!(
            "mov {tmp}, rsp",
            "push {ss}",
            "push {tmp}",
            "pushfq",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "iretq",
            "2:",
            ss = in(reg) u64::from(crate::gdt::USER_DATA),
            cs = in(reg) u64::from(crate::gdt::USER_CODE),
            tmp = out(reg) _,
        )
    }
    crate::interrupts::fill_gates();
}

/// # Safety
/// The kernel must own the device at `port` and the write must not break
/// memory safety (e.g. make a device DMA into memory Rust owns). Prefer
/// [`Port`], which carries that promise from its constructor.
pub unsafe fn outb(port: u16, value: u8) {
    if in_user_mode() {
        service(SVC_OUTB, u64::from(port), u64::from(value));
        return;
    }
    // SAFETY: port I/O has no memory effects; callers own the device at `port`.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    }
}

/// # Safety
/// As for [`outb`] (a read can have device side effects too).
pub unsafe fn inb(port: u16) -> u8 {
    if in_user_mode() {
        return service(SVC_INB, u64::from(port), 0) as u8;
    }
    let v: u8;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    v
}

/// A 16-bit write (registers that take no byte access, e.g. ACPI PM1
/// control).
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outw(port: u16, value: u16) {
    if in_user_mode() {
        service(SVC_OUTW, u64::from(port), u64::from(value));
        return;
    }
    // SAFETY: the caller's promise (see `outb`).
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    }
}

/// # Safety
/// As for [`outb`].
pub unsafe fn outl(port: u16, value: u32) {
    if in_user_mode() {
        service(SVC_OUTL, u64::from(port), u64::from(value));
        return;
    }
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    }
}

/// # Safety
/// As for [`outb`].
pub unsafe fn inl(port: u16) -> u32 {
    if in_user_mode() {
        return service(SVC_INL, u64::from(port), 0) as u32;
    }
    let v: u32;
    // SAFETY: as for `outb`.
    unsafe {
        asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags))
    }
    v
}

/// Writes `bytes` to `port` with one trap (REP OUTSB).
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outsb(port: u16, bytes: &[u8]) {
    if in_user_mode() {
        // SAFETY: the handler reads `bytes` (valid for its length) and clobbers
        // only the declared registers.
        unsafe {
            asm!("ud2", ".byte 0x53, 0x56", inout("rax") SVC_OUTSB => _, in("rdi") u64::from(port),
                 inout("rsi") bytes.as_ptr() => _, inout("rdx") bytes.len() => _,
                 out("rcx") _, out("r11") _, options(nostack, readonly))
        }
        return;
    }
    // SAFETY: as above; REP OUTSB reads `bytes.len()` bytes from `bytes`.
    unsafe {
        asm!("rep outsb", in("dx") port, inout("rsi") bytes.as_ptr() => _,
             inout("rcx") bytes.len() => _, options(nostack, readonly, preserves_flags))
    }
}

/// Reads `words.len()` words from `port` with one trap (REP INSW).
///
/// # Safety
/// As for [`outb`].
pub unsafe fn insw(port: u16, words: &mut [u16]) {
    if in_user_mode() {
        // SAFETY: the handler writes `words` (valid and exclusively borrowed
        // for its length) and clobbers only the declared registers.
        unsafe {
            asm!("ud2", ".byte 0x53, 0x56", inout("rax") SVC_INSW => _,
                 inout("rdi") u64::from(port) => _, inout("rsi") words.as_mut_ptr() => _,
                 inout("rdx") words.len() => _, out("rcx") _, out("r11") _, options(nostack))
        }
        return;
    }
    // SAFETY: as above; REP INSW writes `words.len()` words to `words`.
    unsafe {
        asm!("rep insw", in("dx") port, inout("rdi") words.as_mut_ptr() => _,
             inout("rcx") words.len() => _, options(nostack, preserves_flags))
    }
}

/// Writes `words` to `port` with one trap (REP OUTSW).
///
/// # Safety
/// As for [`outb`].
pub unsafe fn outsw(port: u16, words: &[u16]) {
    if in_user_mode() {
        // SAFETY: the handler reads `words` (valid for its length) and
        // clobbers only the declared registers.
        unsafe {
            asm!("ud2", ".byte 0x53, 0x56", inout("rax") SVC_OUTSW => _, in("rdi") u64::from(port),
                 inout("rsi") words.as_ptr() => _, inout("rdx") words.len() => _,
                 out("rcx") _, out("r11") _, options(nostack, readonly))
        }
        return;
    }
    // SAFETY: as above; REP OUTSW reads `words.len()` words from `words`.
    unsafe {
        asm!("rep outsw", in("dx") port, inout("rsi") words.as_ptr() => _,
             inout("rcx") words.len() => _, options(nostack, readonly, preserves_flags))
    }
}

pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC only reads the time-stamp counter (allowed in ring 3: CR4.TSD is clear).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) }
    (u64::from(hi) << 32) | u64::from(lo)
}

pub fn rdmsr(msr: u32) -> u64 {
    if in_user_mode() {
        return service(SVC_RDMSR, u64::from(msr), 0);
    }
    let (lo, hi): (u32, u32);
    // SAFETY: callers only pass architectural MSRs present on every x86-64 CPU with an APIC.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

pub fn wrmsr(msr: u32, value: u64) {
    if in_user_mode() {
        service(SVC_WRMSR, u64::from(msr), value);
        return;
    }
    // SAFETY: as for `rdmsr`; callers write values valid for that MSR.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") value as u32, in("edx") (value >> 32) as u32,
             options(nostack, preserves_flags))
    }
}

pub fn cpuid(leaf: u32, sub: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, sub);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// Only called from exception handlers (ring 0).
pub fn read_cr2() -> u64 {
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) }
    v
}

/// Drops the cached translation of the page holding `addr`. (Cheaper than
/// reloading CR3 under shadow paging, where that discards every shadow entry.)
pub fn invalidate_page(addr: u64) {
    if in_user_mode() {
        service(SVC_INVLPG, addr, 0);
        return;
    }
    // SAFETY: INVLPG only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) addr, options(nostack, preserves_flags)) }
}

pub fn disable_interrupts() {
    if in_user_mode() {
        service(SVC_CLI, 0, 0);
        return;
    }
    // SAFETY: CLI only masks maskable interrupts.
    unsafe { asm!("cli", options(nomem, nostack)) }
}

pub fn enable_interrupts() {
    if in_user_mode() {
        service(SVC_STI, 0, 0);
        return;
    }
    // SAFETY: the IDT is loaded before anything calls this.
    unsafe { asm!("sti", options(nomem, nostack)) }
}

/// Enables interrupts and halts until the next one, with no window between
/// the two (STI takes effect after the following instruction).
pub fn enable_interrupts_and_halt() {
    if in_user_mode() {
        service(SVC_STI_HLT, 0, 0);
        return;
    }
    // SAFETY: as for `enable_interrupts`.
    unsafe { asm!("sti; hlt", options(nomem, nostack)) }
}

/// Stops this CPU for good.
pub fn halt_forever() -> ! {
    crate::serial::flush();
    if in_user_mode() {
        service(SVC_HALT_FOREVER, 0, 0);
    }
    loop {
        // SAFETY: CLI+HLT parks the CPU; only NMIs get through.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) }
    }
}

/// Reads a PCI configuration dword (mechanism #1 address).
pub fn pci_config_read(address: u32) -> u32 {
    if in_user_mode() {
        return service(SVC_PCI_READ, u64::from(address), 0) as u32;
    }
    PCI_ADDRESS.write32(address);
    PCI_DATA.read32()
}

fn pci_config_write(address: u32, data: u32) {
    if in_user_mode() {
        service(SVC_PCI_WRITE, u64::from(address), u64::from(data));
        return;
    }
    PCI_ADDRESS.write32(address);
    PCI_DATA.write32(data);
}

// SAFETY: configuration mechanism #1; the kernel is the only user of PCI
// configuration space (net::pci reaches it through these functions).
const PCI_ADDRESS: Port = unsafe { Port::new(0xCF8) };
// SAFETY: as for PCI_ADDRESS.
const PCI_DATA: Port = unsafe { Port::new(0xCFC) };

/// An I/O port of a device the kernel owns. Only [`Port::new`], which is
/// unsafe, makes one, so safe code reaches port I/O only through ports some
/// `unsafe` block vouched for.
#[derive(Clone, Copy, Debug)]
pub struct Port(u16);

impl Port {
    /// # Safety
    /// The kernel must own the device at `port`, and no access through the
    /// port may break memory safety (no device set up to DMA into memory
    /// Rust owns, no interference with a driver that assumes it alone
    /// touches the device).
    pub const unsafe fn new(port: u16) -> Port {
        Port(port)
    }

    pub fn read8(self) -> u8 {
        // SAFETY: the constructor's promise.
        unsafe { inb(self.0) }
    }

    pub fn write8(self, value: u8) {
        // SAFETY: the constructor's promise.
        unsafe { outb(self.0, value) }
    }

    pub fn read32(self) -> u32 {
        // SAFETY: the constructor's promise.
        unsafe { inl(self.0) }
    }

    pub fn write32(self, value: u32) {
        // SAFETY: the constructor's promise.
        unsafe { outl(self.0, value) }
    }

    pub fn write16(self, value: u16) {
        // SAFETY: the constructor's promise.
        unsafe { outw(self.0, value) }
    }

    /// Reads `words.len()` 16-bit words from the port (one trap from ring 3).
    pub fn read_words(self, words: &mut [u16]) {
        // SAFETY: the constructor's promise.
        unsafe { insw(self.0, words) }
    }

    /// Writes every word of `words` to the port (one trap from ring 3).
    pub fn write_words(self, words: &[u16]) {
        // SAFETY: the constructor's promise.
        unsafe { outsw(self.0, words) }
    }

    /// Writes every byte of `bytes` to the port (one trap from ring 3).
    pub fn write_bytes(self, bytes: &[u8]) {
        // SAFETY: the constructor's promise.
        unsafe { outsb(self.0, bytes) }
    }
}

/// PCI configuration access with one trap per access from ring 3.
static PCI_CONFIG_IO: net::pci::ConfigIo = net::pci::ConfigIo {
    read: pci_config_read,
    write: pci_config_write,
};
