//! The appliance kernel: a `no_std` binary for `x86_64-unknown-none`.
//!
//! Boot flow: `boot` (Multiboot1 header, 32-to-64-bit trampoline) calls
//! [`kernel_main`] in long mode on a 256 KiB boot stack with the first 4 GiB
//! identity-mapped. It brings up the console, GDT/TSS, IDT, LAPIC, heap and
//! clock, reads the command line, finds the NICs, prints the banner, and runs
//! the embassy executor; the `ready` line follows once eth0's stack has its
//! address. Memory layout: see [`memory`]. Idle: see [`idle_loop`].
#![no_std]
#![no_main]

extern crate alloc;

mod apic;
mod apply;
mod config_load;
mod console;
mod cpu;
mod datapath;
mod disk;
mod gdt;
mod hal;
mod health;
mod interrupts;
mod ioapic;
mod keyboard;
mod memory;
mod mgmt;
mod netif;
mod nics;
mod ping;
mod power;
mod rng;
mod rtc;
mod running;
mod screen;
mod serial;
mod services;
mod shell;
mod stack_ports;
mod storage;
mod time;
mod trace;

use alloc::boxed::Box;
use boot::multiboot::BootInfo;
use core::sync::atomic::{AtomicBool, Ordering};
use embassy_executor::raw::Executor;
use embassy_net::{Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};
use lb_core::cmdline::Ipv4Setting;
use net::NicSet;
use net::driver::NicDriver;
use net::pci::{self, PortIoCam};
use virtio_drivers::transport::pci::bus::PciRoot;

const PRODUCT: &str = "Medical Load Balancer appliance";
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Longest HLT when nothing is scheduled and NIC interrupts work.
const IDLE_MAX_US: u64 = 1_000_000;
/// Longest HLT when a NIC has no interrupt: it is polled at this period.
const IDLE_POLL_US: u64 = 1_000;

type Nics = NicSet;

/// Prints `fatal: <why>` and halts.
pub fn fatal(why: &str) -> ! {
    println!("fatal: {why}");
    cpu::halt_forever()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    cpu::disable_interrupts();
    match info.location() {
        Some(l) => println!(
            "panic at {}:{}:{}: {}",
            l.file(),
            l.line(),
            l.column(),
            info.message()
        ),
        None => println!("panic: {}", info.message()),
    }
    cpu::halt_forever()
}

/// Critical sections without masking interrupts.
///
/// The kernel runs on one CPU, and interrupt handlers only store to atomics
/// and acknowledge the LAPIC (see `interrupts`); exception handlers print
/// without entering a critical section (the console writes the UART and the
/// VGA buffer directly in ring 0, see `serial::emergency_vga`) and halt. So
/// no critical section can be entered concurrently or re-entered, and masking
/// interrupts would buy nothing but cost: under KVM-PVM every CLI/STI traps to
/// the hypervisor, and the allocator, the timer queue and the executor take a
/// critical section on every call. Shared state behind `critical_section::Mutex`
/// is `RefCell`, so an accidental re-entry panics instead of corrupting.
struct CriticalSection;
critical_section::set_impl!(CriticalSection);

// SAFETY: see above: one CPU, and no interrupt handler enters a critical section.
unsafe impl critical_section::Impl for CriticalSection {
    unsafe fn acquire() -> critical_section::RawRestoreState {
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
        false
    }

    unsafe fn release(_: critical_section::RawRestoreState) {
        core::sync::atomic::compiler_fence(Ordering::SeqCst);
    }
}

/// Set once the `ready` line is out.
static READY: AtomicBool = AtomicBool::new(false);

/// Set when a task was woken; the idle loop polls the executor then.
static PENDING: AtomicBool = AtomicBool::new(true);

#[unsafe(export_name = "__pender")]
fn pender(_context: *mut ()) {
    PENDING.store(true, Ordering::Release);
}

/// Entered from the boot trampoline in long mode.
#[unsafe(no_mangle)]
extern "C" fn kernel_main(magic: u32, info: u32) -> ! {
    trace::mark("rust entry");
    serial::init();
    gdt::init();
    interrupts::init();
    apic::init();
    // From here on ring 3: native speed under KVM-PVM (see `cpu`).
    cpu::enter_user_mode();

    let boot_info = if magic == boot::MULTIBOOT_BOOTLOADER_MAGIC {
        // SAFETY: a Multiboot loader passed `info`; low memory is identity-mapped.
        unsafe { BootInfo::read(info) }
    } else {
        println!("warning: not started by a Multiboot loader (magic {magic:#x}); no memory map");
        BootInfo::empty()
    };
    // The VGA text buffer exists when the firmware did not hand that range out as RAM
    // (BIOS); under UEFI there is no text mode and the mirror stays off.
    let bios_text = !boot_info
        .regions()
        .iter()
        .any(|r| r.is_ram() && r.base <= 0xB8000 && r.end() > 0xB8000)
        && boot_info
            .regions()
            .iter()
            .any(|r| r.is_ram() && r.base == 0);
    trace::mark("cpu tables, boot info");
    let (heap_start, heap_size) = memory::init_heap(&boot_info);
    if heap_size == 0 {
        fatal("no usable RAM for the heap in the memory map");
    }
    let screen = screen::init(boot_info.display, bios_text);
    memory::guard_boot_stack();
    trace::mark("heap");
    time::calibrate();
    trace::mark("clock calibrated");
    let entropy = rng::init();
    trace::mark("rng seeded");

    println!("{PRODUCT} {VERSION}");
    println!(
        "memory: {} MiB RAM, heap {} KiB at {:#x}; TSC {} MHz",
        boot_info.ram_bytes() >> 20,
        heap_size >> 10,
        heap_start,
        time::tsc_hz() / 1_000_000
    );
    println!("rng: seeded from {entropy}");
    match rtc::init() {
        Some(t) => println!(
            "clock: {:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC from the RTC",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        ),
        None => println!(
            "warning: clock: the RTC gave no valid date; HTTPS checks with check_tls_verify = \"ca\" will fail"
        ),
    }
    let keyboard = keyboard::init();
    match (&screen, keyboard) {
        (Some(s), true) => println!("screen: {s}; keyboard: PS/2"),
        (Some(s), false) => println!("screen: {s}; no keyboard"),
        (None, true) => println!("screen: none; keyboard: PS/2"),
        (None, false) => println!("screen: none"),
    }

    crash_test(boot_info.cmdline());

    trace::mark("banner");
    // SAFETY: the kernel is the only user of the PCI configuration ports.
    let cam = unsafe { PortIoCam::new() };
    let functions = pci::enumerate(&cam);
    let mut root = PciRoot::new(cam);
    trace::mark("pci enumerated");
    let (nics, irqs) = nics::probe(&mut root, &functions, memory::heap_free());
    trace::mark("nics probed");
    let stored = storage::open(disk::probe(&mut root, &functions));
    trace::mark("store opened");
    let cmdline_ip = boot_info
        .cmdline()
        .split_ascii_whitespace()
        .any(|w| w.starts_with("ip="));
    // Nothing stored, no boot module and no address given: the appliance
    // runs on its factory default and the console starts the wizard.
    let first_boot = stored.config.is_none() && !cmdline_ip && boot_info.first_module().is_none();
    let loaded = config_load::load(&boot_info, stored.config);
    let setting = config_load::eth0_setting(boot_info.cmdline(), loaded.config.as_ref());
    running::set(
        loaded
            .config
            .clone()
            .unwrap_or_else(lb_core::config::Config::empty),
    );
    let nics: &'static Nics = Box::leak(Box::new(nics));
    for (i, irq) in irqs.iter().enumerate() {
        nics.with(i, |n| {
            let m = n.mac;
            print!(
                "{} {} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x} (pci {}, {irq}",
                n.name(),
                n.model(),
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                m[5],
                n.pci,
            );
            let f = n.features();
            let mut any = false;
            for name in f.names() {
                print!("{}{name}", if any { " " } else { ", offloads: " });
                any = true;
            }
            println!(
                "{}, link {})",
                if any { "" } else { ", no offloads" },
                if n.link_up() { "up" } else { "down" }
            );
        });
    }
    if nics.is_empty() {
        println!("error: no supported NIC found; nothing to serve");
        idle_loop(None, nics, false);
    }
    // Where each setting came from: `ip=` > store > boot module > default.
    let from_cmdline = cmdline_ip && config_load::cmdline_valid(boot_info.cmdline());
    let eth0_source = if from_cmdline {
        "the kernel command line"
    } else if loaded
        .config
        .as_ref()
        .is_some_and(|c| !c.network.interfaces.is_empty())
    {
        loaded.source
    } else {
        "the factory default"
    };
    match setting {
        Ipv4Setting::Dhcp => println!("eth0 address: dhcp (waiting for a lease)"),
        s => println!("eth0 address: {s} (from {eth0_source})"),
    }
    if let Some(c) = &loaded.config {
        println!(
            "hostname: {} (from {}); DNS servers: {}",
            c.network.hostname,
            loaded.source,
            if c.network.dns.is_empty() {
                alloc::string::String::from("none")
            } else {
                c.network
                    .dns
                    .iter()
                    .map(|d| alloc::format!("{d}"))
                    .collect::<alloc::vec::Vec<_>>()
                    .join(", ")
            }
        );
    }

    trace::mark("nics and address printed");
    let config = match setting {
        Ipv4Setting::Static {
            address,
            prefix_len,
            gateway,
        } => embassy_net::Config::ipv4_static(StaticConfigV4 {
            address: Ipv4Cidr::new(address, prefix_len),
            gateway,
            dns_servers: Default::default(),
        }),
        Ipv4Setting::Dhcp => embassy_net::Config::dhcpv4(Default::default()),
    };
    let resources = Box::leak(Box::new(StackResources::<{ services::SOCKETS }>::new()));
    trace::mark("stack resources");
    let (stack, runner) = embassy_net::new(NicDriver::new(nics, 0), config, resources, rng::u64());

    trace::mark("stack created");
    let executor: &'static Executor = Box::leak(Box::new(Executor::new(core::ptr::null_mut())));
    let spawner = executor.spawner();
    let trace = boot_info
        .cmdline()
        .split_ascii_whitespace()
        .any(|w| w == "boottrace");
    match (
        net_task(runner),
        announce_task(stack, trace),
        nics::link_task(nics),
    ) {
        (Ok(a), Ok(b), Ok(c)) => {
            spawner.spawn(a);
            spawner.spawn(b);
            spawner.spawn(c);
        }
        _ => fatal("cannot spawn the network tasks"),
    }
    netif::register(0, Some(stack), Some(setting));
    netif::set_cmdline_override(from_cmdline);
    services::start(
        spawner,
        nics,
        stack,
        setting,
        loaded.config,
        rng::u64(),
        services::Console {
            first_boot,
            keyboard,
        },
    );
    let all_irqs = irqs.iter().all(|i| *i != nics::Irq::Polled);
    idle_loop(Some(executor), nics, all_irqs)
}

/// `crash=pagefault|stack|panic` on the command line provokes that failure,
/// so tests can see the exception report (or panic message) instead of a reset.
fn crash_test(cmdline: &str) {
    for word in cmdline.split_ascii_whitespace() {
        match word {
            "crash=pagefault" => {
                // SAFETY: deliberately faults: nothing is mapped at 1 TiB.
                unsafe { core::ptr::read_volatile(0x100_0000_0000 as *const u64) };
            }
            "crash=stack" => {
                overflow_stack(0);
            }
            "crash=panic" => panic!("crash test requested on the command line"),
            _ => {}
        }
    }
}

/// Recurses until the stack runs into its guard page.
fn overflow_stack(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 64]);
    if core::hint::black_box(depth) == u64::MAX {
        return frame[0];
    }
    overflow_stack(depth + 1).wrapping_add(frame[1])
}

#[embassy_executor::task]
async fn net_task(mut runner: Runner<'static, NicDriver>) -> ! {
    runner.run().await
}

/// Prints the `ready` line once eth0 is up (with DHCP: once leased; the
/// lease itself is printed by `datapath::lease_task`).
#[embassy_executor::task]
async fn announce_task(stack: Stack<'static>, trace: bool) {
    trace::mark("tasks running");
    stack.wait_config_up().await;
    trace::mark("config up");
    let ns = time::now_ns();
    println!(
        "ready in {}.{:03} ms since kernel entry",
        ns / 1_000_000,
        (ns / 1_000) % 1_000
    );
    READY.store(true, Ordering::Relaxed);
    if trace {
        trace::print();
    }
}

/// Runs tasks while there is work; otherwise arms the LAPIC timer for the
/// next alarm (capped) and halts until an interrupt (timer or NIC MSI-X).
/// Interrupt handlers only set a flag: all waking happens here, so tasks and
/// driver state are never touched from interrupt context.
///
/// Each pass takes at most [`net::nic::RX_BUDGET`] frames from each NIC,
/// then runs the tasks that are ready and the expired timers: under any
/// receive load, health checks, ARP, the console and housekeeping keep
/// their schedule (NAPI-style).
fn idle_loop(executor: Option<&'static Executor>, nics: &'static Nics, irqs: bool) -> ! {
    let cap = if irqs { IDLE_MAX_US } else { IDLE_POLL_US };
    loop {
        // Cleared before looking for work, so an interrupt that arrives while
        // we look (after the NIC check, say) keeps us from halting below.
        interrupts::WOKEN.store(false, Ordering::SeqCst);
        if PENDING.swap(false, Ordering::AcqRel)
            && let Some(ex) = executor
        {
            // SAFETY: polled only from this loop, never re-entrantly.
            unsafe { ex.poll() };
        }
        let next = time::wake_expired();
        // Frames the tasks queued go out with this pass's burst.
        let busy = nics.poll(net::nic::RX_BUDGET);
        // Console output waits in RAM until here (sets WOKEN while more is queued).
        serial::drain();
        if READY.load(Ordering::Relaxed) {
            // Deferred until the appliance serves: both cost VM exits and page faults.
            nics.top_up();
            if screen::flush() {
                interrupts::WOKEN.store(true, Ordering::SeqCst);
            }
        }
        if busy {
            continue;
        }
        cpu::disable_interrupts();
        if PENDING.load(Ordering::Acquire) || interrupts::WOKEN.load(Ordering::SeqCst) || nics.arm()
        {
            cpu::enable_interrupts();
            continue;
        }
        // Every NIC will interrupt again: legacy lines may be unmasked.
        ioapic::unmask();
        time::arm_timer(next, cap);
        cpu::enable_interrupts_and_halt();
    }
}
