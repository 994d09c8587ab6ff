//! How the machine gets into the kernel.
//!
//! Boot flow (both QEMU `-kernel` and GRUB's `multiboot` command):
//! 1. The loader reads the Multiboot1 header in the first 8 KiB of the ELF.
//!    Flags bit 16 (the "a.out kludge") makes it load the file image flat from
//!    `load_addr` (1 MiB) to `load_end_addr`, zero up to `bss_end_addr`, and
//!    jump to `entry_addr`; this is why QEMU 7.2 accepts a 64-bit ELF at all.
//!    The linker script (kernel/link.ld) keeps the whole image in one PT_LOAD
//!    segment so file offsets and addresses stay in step.
//! 2. `_start` runs in 32-bit protected mode, paging off, EAX = magic,
//!    EBX = physical address of the Multiboot information. Its second
//!    instruction records the TSC ([`entry_tsc`]): the kernel-entry timestamp
//!    that the `ready` line is measured from.
//! 3. It loads page tables that identity-map the first 4 GiB with 2 MiB
//!    pages (RAM, the 32-bit PCI hole, IOAPIC and LAPIC; higher device memory
//!    is mapped on demand by the kernel). They are built by the assembler, not
//!    at run time: before paging is on, KVM-PVM emulates every instruction.
//!    It then enables PAE, long mode and paging, loads a temporary GDT and
//!    far-jumps to 64-bit code.
//! 4. 64-bit code loads the data segments, switches to the boot stack and calls
//!    `kernel_main(magic: u32, info: u32)`, which the kernel defines.
//!
//! Nothing here relies on BIOS state (no real-mode calls, no VGA), so the
//! same path works when GRUB started under UEFI.
//!
//! Hypervisors: on the development hosts `/dev/kvm` is KVM-PVM (nested,
//! paravirtual; no vmx/svm in the CPU flags). The appliance boots there with
//! `-accel kvm -cpu host,-arch-capabilities` (plain `-cpu host`/`-cpu max`
//! make QEMU 7.2 abort on MSR 0x10a) or with the default CPU model. PVM
//! emulates all guest ring-0 code instruction by instruction (~2 µs each;
//! ring-3 code runs natively), which is why the trampoline is a handful of
//! instructions with assembler-built page tables (every entry allows ring 3)
//! and why the kernel drops to ring 3 right after CPU setup (see the
//! kernel's `cpu` module). VM exits (port I/O, MMIO) cost 10-30 µs there.
#![no_std]

pub mod multiboot;

#[cfg(all(target_arch = "x86_64", target_os = "none"))]
mod entry;

/// The value of EAX when a Multiboot1 loader enters the kernel.
pub const MULTIBOOT_BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// TSC value recorded by the entry trampoline at kernel entry.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub fn entry_tsc() -> u64 {
    entry::entry_tsc()
}

/// Page-table pages the trampoline built; the kernel extends them on demand.
#[cfg(all(target_arch = "x86_64", target_os = "none"))]
pub use entry::{boot_pml4_phys, boot_stack_bottom};
