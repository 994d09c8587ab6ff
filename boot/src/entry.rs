//! Multiboot1 header and the 32-to-64-bit trampoline (see the crate docs).

use core::arch::global_asm;

/// Size of the stack `kernel_main` starts on.
const BOOT_STACK_SIZE: usize = 256 * 1024;

global_asm!(
    r#"
    .section .multiboot, "a"
    .balign 4
multiboot_header:
    .long 0x1BADB002
    /* Page-aligned modules, memory map, a.out fields. No video-mode bit:
       QEMU's -kernel loader warns about it, and GRUB hands its framebuffer
       over anyway where there is no text mode (UEFI; see image.rs). */
    .long 0x00010003
    .long -(0x1BADB002 + 0x00010003)
    .long multiboot_header
    .long __image_start
    .long __load_end
    .long __bss_end
    .long _start

    .section .data.boot, "aw"
    .balign 8
    .global boot_entry_tsc
boot_entry_tsc:
    .quad 0
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
boot_gdt_end:
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt

    /* Page tables, filled in by the assembler: code running before paging
       is on is emulated instruction by instruction on some hypervisors
       (KVM-PVM), where building them at run time took 20 ms. Every entry
       allows ring 3 (bit 2): the kernel runs there after CPU setup. */
    .section .data.boot.tables, "aw"
    .balign 4096
    .global boot_pml4
boot_pml4:
    .quad boot_pdpt + 0x7
    .fill 511, 8, 0
boot_pdpt:
    .quad boot_pd + 0x7
    .quad boot_pd + 0x1000 + 0x7
    .quad boot_pd + 0x2000 + 0x7
    .quad boot_pd + 0x3000 + 0x7
    .fill 508, 8, 0
boot_pd:
    .set page, 0
    .rept 2048
    .quad (page << 21) | 0x87
    .set page, page + 1
    .endr

    .section .bss.boot, "aw", @nobits
    .balign 4096
    /* Guard page: the kernel unmaps it so a stack overflow faults. */
    .skip 4096
    .global boot_stack_limit
boot_stack_limit:
    .skip {stack_size}
boot_stack_top:

    .section .text.boot, "ax"
    .code32
    .global _start
_start:
    mov %eax, %edi
    rdtsc
    mov %eax, boot_entry_tsc
    mov %edx, boot_entry_tsc + 4
    mov %ebx, %esi
    mov $boot_stack_top, %esp
    cld

    /* Long mode available? (CPUID clobbers EBX; the info pointer is in ESI.) */
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb 9f
    mov $0x80000001, %eax
    cpuid
    bt $29, %edx
    jnc 9f

    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov %cr4, %eax
    or $0x20, %eax
    mov %eax, %cr4
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000001, %eax
    mov %eax, %cr0
    lgdt boot_gdt_ptr
    ljmp $0x08, $2f

    /* No long mode: say so on COM1 and stop. */
9:
    mov $boot_no_lm_msg, %esi
3:
    lodsb
    test %al, %al
    jz 4f
    mov %al, %bl
    mov $0x3FD, %dx
5:
    inb %dx, %al
    test $0x20, %al
    jz 5b
    mov $0x3F8, %dx
    mov %bl, %al
    outb %al, %dx
    jmp 3b
4:
    cli
    hlt
    jmp 4b

    .code64
2:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    xor %ax, %ax
    mov %ax, %fs
    mov %ax, %gs
    mov $boot_stack_top, %esp
    xor %ebp, %ebp
    call kernel_main
6:
    cli
    hlt
    jmp 6b

    .section .rodata.boot, "a"
boot_no_lm_msg:
    .asciz "error: this CPU has no 64-bit long mode\r\n"
    .text
"#,
    stack_size = const BOOT_STACK_SIZE,
    options(att_syntax)
);

unsafe extern "C" {
    static boot_stack_limit: u8;
    static boot_entry_tsc: u64;
    static boot_pml4: u8;
}

pub(crate) fn entry_tsc() -> u64 {
    // SAFETY: written once by `_start` before any Rust code runs; read-only afterwards.
    unsafe { core::ptr::read_volatile(&raw const boot_entry_tsc) }
}

/// Physical (= virtual, identity-mapped) address of the boot PML4.
pub fn boot_pml4_phys() -> u64 {
    (&raw const boot_pml4) as u64
}

/// Lowest address of the boot stack (page-aligned; the stack grows down to
/// it). The 4 KiB page below it is reserved as a guard page.
pub fn boot_stack_bottom() -> u64 {
    (&raw const boot_stack_limit) as u64
}
