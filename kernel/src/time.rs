//! Monotonic clock and the `embassy-time` driver.
//!
//! The clock is the TSC, counted from kernel entry (the TSC the boot
//! trampoline recorded), so an `embassy_time::Instant` is "time since kernel
//! entry". Its rate comes from KVM's pvclock when running under KVM (exact,
//! and the LAPIC timer is then measured against the TSC over 200 µs);
//! otherwise both are calibrated against PIT channel 2 (the shortest of three
//! 1 ms windows, polled through the speaker gate, no interrupts). Under TCG QEMU derives the TSC from the
//! host clock, which is close enough for timeouts.
//!
//! Alarms: `schedule_wake` puts (deadline, waker) into a small list; the idle
//! loop calls [`wake_expired`], which wakes what is due and returns the next
//! deadline, then arms the LAPIC one-shot timer for it before HLT.

use crate::cpu::Port;
use crate::{apic, cpu};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};
use core::task::Waker;
use critical_section::Mutex;

const PIT_HZ: u64 = 1_193_182;
/// Calibration window: 1 ms of PIT counts.
const PIT_COUNT: u16 = 1193;
/// One of the PIT's ports (0x42, 0x43) or port B (0x61).
const fn pit(port: u16) -> Port {
    // SAFETY: the kernel owns the PIT and the speaker gate, uses them only to
    // calibrate the TSC at boot, and they do no DMA; callers here pass only
    // those three ports.
    unsafe { Port::new(port) }
}
/// Port B: channel 2 gate (bit 0) and output (bit 5).
const PIT_GATE: Port = pit(0x61);
const PIT_MODE: Port = pit(0x43);
const PIT_CHANNEL2: Port = pit(0x42);

static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// TSC ticks -> microseconds: `(delta * MULT) >> 32`.
static US_MULT: AtomicU64 = AtomicU64::new(0);
static LAPIC_HZ: AtomicU64 = AtomicU64::new(0);

/// Measures the TSC and LAPIC timer rates: from KVM's pvclock when present
/// (exact, and no PIT polling, whose every port read is a VM exit), else
/// against PIT channel 2.
pub fn calibrate() {
    let (tsc_hz, lapic_hz) = match kvmclock_tsc_hz() {
        Some(hz) => (hz, lapic_against_tsc(hz)),
        None => against_pit(),
    };
    TSC_HZ.store(tsc_hz, Ordering::Relaxed);
    LAPIC_HZ.store(lapic_hz, Ordering::Relaxed);
    US_MULT.store(
        ((1_000_000u128 << 32) / u128::from(tsc_hz)) as u64,
        Ordering::Relaxed,
    );
}

/// LAPIC timer ticks per second, counted over 200 µs of a known TSC.
fn lapic_against_tsc(tsc_hz: u64) -> u64 {
    let window = tsc_hz / 5_000;
    apic::timer_start_calibration();
    let l0 = apic::timer_calibration_elapsed();
    let t0 = cpu::rdtsc();
    while cpu::rdtsc() - t0 < window {
        core::hint::spin_loop();
    }
    let l1 = apic::timer_calibration_elapsed();
    let t1 = cpu::rdtsc();
    let hz = u128::from(l1 - l0) * u128::from(tsc_hz) / u128::from((t1 - t0).max(1));
    if hz < 1_000 { 1_000_000_000 } else { hz as u64 }
}

/// (TSC Hz, LAPIC timer Hz) against PIT channel 2: the shortest of three
/// 1 ms windows, since a window can only look longer than it is (the vCPU
/// may be descheduled inside it on a busy host), never shorter.
fn against_pit() -> (u64, u64) {
    let mut best: Option<(u64, u32)> = None;
    for _ in 0..3 {
        if let Some((tsc, lapic)) = pit_window()
            && best.is_none_or(|(t, _)| tsc < t)
        {
            best = Some((tsc, lapic));
        }
    }
    let (tsc, lapic) = best.unwrap_or((0, 0));
    let mut tsc_hz = tsc * PIT_HZ / u64::from(PIT_COUNT);
    let mut lapic_hz = u64::from(lapic) * PIT_HZ / u64::from(PIT_COUNT);
    // No PIT: assume common rates rather than divide by zero.
    if tsc_hz < 1_000_000 {
        tsc_hz = 2_000_000_000;
    }
    if lapic_hz < 1_000 {
        lapic_hz = 1_000_000_000;
    }
    (tsc_hz, lapic_hz)
}

/// TSC and LAPIC ticks over one PIT window of `PIT_COUNT` counts.
fn pit_window() -> Option<(u64, u32)> {
    // Speaker off, gate low; channel 2, lobyte/hibyte, mode 0 (OUT rises at terminal count).
    let gate = PIT_GATE.read8() & 0xFC;
    PIT_GATE.write8(gate);
    PIT_MODE.write8(0b1011_0000);
    PIT_CHANNEL2.write8(PIT_COUNT as u8);
    PIT_CHANNEL2.write8((PIT_COUNT >> 8) as u8);
    apic::timer_start_calibration();
    let lapic0 = apic::timer_calibration_elapsed();
    let t0 = cpu::rdtsc();
    PIT_GATE.write8(gate | 1); // gate high: counting starts
    let mut spins = 0u32;
    while PIT_GATE.read8() & 0x20 == 0 {
        spins += 1;
        if spins > 10_000_000 {
            PIT_GATE.write8(gate);
            return None;
        }
    }
    let t1 = cpu::rdtsc();
    let lapic1 = apic::timer_calibration_elapsed();
    PIT_GATE.write8(gate);
    Some((t1 - t0, lapic1 - lapic0))
}

pub fn tsc_hz() -> u64 {
    TSC_HZ.load(Ordering::Relaxed)
}

/// Microseconds since kernel entry.
pub fn now_us() -> u64 {
    let delta = cpu::rdtsc().wrapping_sub(boot::entry_tsc());
    ((u128::from(delta) * u128::from(US_MULT.load(Ordering::Relaxed))) >> 32) as u64
}

/// Nanoseconds since kernel entry (for the `ready` line).
pub fn now_ns() -> u64 {
    let delta = cpu::rdtsc().wrapping_sub(boot::entry_tsc());
    (u128::from(delta) * 1_000_000_000 / u128::from(tsc_hz().max(1))) as u64
}

struct Alarm {
    at: u64,
    waker: Waker,
}

static ALARMS: Mutex<RefCell<Vec<Alarm>>> = Mutex::new(RefCell::new(Vec::new()));

struct TscDriver;

impl embassy_time_driver::Driver for TscDriver {
    fn now(&self) -> u64 {
        now_us()
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut alarms = ALARMS.borrow_ref_mut(cs);
            if let Some(a) = alarms.iter_mut().find(|a| a.waker.will_wake(waker)) {
                a.at = a.at.min(at);
            } else {
                alarms.push(Alarm {
                    at,
                    waker: waker.clone(),
                });
            }
        });
    }
}

embassy_time_driver::time_driver_impl!(static DRIVER: TscDriver = TscDriver);

/// Wakes every alarm that is due; returns the earliest remaining deadline (µs).
pub fn wake_expired() -> Option<u64> {
    let now = now_us();
    let mut due: Vec<Waker> = Vec::new();
    let next = critical_section::with(|cs| {
        let mut alarms = ALARMS.borrow_ref_mut(cs);
        let mut i = 0;
        while i < alarms.len() {
            if alarms[i].at <= now {
                due.push(alarms.swap_remove(i).waker);
            } else {
                i += 1;
            }
        }
        alarms.iter().map(|a| a.at).min()
    });
    // Wake outside the lock: a woken task may schedule a new alarm right away.
    due.into_iter().for_each(Waker::wake);
    next
}

/// Arms the LAPIC timer to fire at `deadline_us`, but no later than `max_us` from now.
pub fn arm_timer(deadline_us: Option<u64>, max_us: u64) {
    let now = now_us();
    let wait = deadline_us.map_or(max_us, |d| d.saturating_sub(now).min(max_us));
    let ticks = wait.saturating_mul(LAPIC_HZ.load(Ordering::Relaxed)) / 1_000_000;
    apic::timer_oneshot(ticks.clamp(1, u64::from(u32::MAX)) as u32);
}

/// The TSC rate from KVM's paravirtual clock, when running under KVM.
///
/// pvclock publishes `ns = (tsc_delta << shift) * mul >> 32`, hence
/// `tsc_hz = 10^9 * 2^32 / (mul * 2^shift)`. This is exact, where PIT polling
/// is skewed by the cost of VM exits.
fn kvmclock_tsc_hz() -> Option<u64> {
    let sig = cpu::cpuid(0x4000_0000, 0);
    if sig[0] < 0x4000_0001 || [sig[1], sig[2], sig[3]] != [0x4b4d_564b, 0x564b_4d56, 0x4d] {
        return None;
    }
    const CLOCKSOURCE2: u32 = 1 << 3;
    const MSR_KVM_SYSTEM_TIME_NEW: u32 = 0x4b56_4d01;
    if cpu::cpuid(0x4000_0001, 0)[0] & CLOCKSOURCE2 == 0 {
        return None;
    }
    #[repr(C, align(64))]
    struct PvClock([u32; 8]);
    let mut area = PvClock([0; 8]);
    let phys = (&raw mut area) as u64;
    cpu::wrmsr(MSR_KVM_SYSTEM_TIME_NEW, phys | 1);
    // SAFETY: KVM wrote the structure synchronously on the MSR write; read it
    // with volatile loads, then turn the updates off before `area` goes away.
    let (mul, shift) = unsafe {
        let p = &raw const area.0;
        (
            (*p).as_ptr().add(6).read_volatile(),
            (*p).as_ptr().add(7).read_volatile() as u8 as i8,
        )
    };
    cpu::wrmsr(MSR_KVM_SYSTEM_TIME_NEW, 0);
    if mul == 0 {
        return None;
    }
    let denom = u128::from(mul);
    let num = 1_000_000_000u128 << 32;
    let hz = if shift >= 0 {
        num / (denom << shift)
    } else {
        (num << (-shift)) / denom
    };
    u64::try_from(hz).ok()
}
