//! Wall-clock time from the CMOS real-time clock, read once at boot.
//!
//! Only HTTPS checks with `check_tls_verify = "ca"` need it (certificate
//! validity); everything else runs on the monotonic clock. QEMU, VMware,
//! Hyper-V and PCs keep the RTC in UTC (Windows hosts can keep local time:
//! then validity is off by the time zone, harmless next to certificates'
//! validity of months).

use crate::cpu::Port;
use core::sync::atomic::{AtomicU64, Ordering};
use lb_core::time::CivilTime;

/// The CMOS index (0x70) or data (0x71) port.
const fn cmos(port: u16) -> Port {
    // SAFETY: the kernel owns the CMOS/RTC, reads it only here at boot, and
    // it does no DMA; callers pass only its two ports.
    unsafe { Port::new(port) }
}
const INDEX: Port = cmos(0x70);
const DATA: Port = cmos(0x71);

/// Seconds since 1970 at kernel entry (0: unknown).
static EPOCH_AT_ENTRY: AtomicU64 = AtomicU64::new(0);

fn read(reg: u8) -> u8 {
    // Bit 7 of the index keeps NMIs enabled as they were (0).
    INDEX.write8(reg & 0x7F);
    DATA.read8()
}

fn updating() -> bool {
    read(0x0A) & 0x80 != 0
}

fn snapshot() -> [u8; 7] {
    [
        read(0x00),
        read(0x02),
        read(0x04),
        read(0x07),
        read(0x08),
        read(0x09),
        read(0x32),
    ]
}

/// Reads the RTC (twice until two reads agree, outside an update) and
/// remembers the wall clock. Returns it, or `None` when the RTC makes no sense.
pub fn init() -> Option<CivilTime> {
    let mut last = None;
    for _ in 0..8 {
        let mut spins = 0;
        while updating() && spins < 100_000 {
            spins += 1;
        }
        let s = snapshot();
        if last == Some(s) {
            break;
        }
        last = Some(s);
    }
    let [sec, min, hour, day, month, year, century] = last?;
    let status_b = read(0x0B);
    let bcd = status_b & 0x04 == 0;
    let h24 = status_b & 0x02 != 0;
    let conv = |v: u8| {
        if bcd {
            u32::from(v & 0x0F) + u32::from(v >> 4) * 10
        } else {
            u32::from(v)
        }
    };
    let mut h = conv(hour & 0x7F);
    if !h24 {
        // 12-hour mode: bit 7 is PM; 12 AM is 0.
        h %= 12;
        if hour & 0x80 != 0 {
            h += 12;
        }
    }
    let century = match conv(century) {
        19..=21 => conv(century),
        _ => 20,
    };
    let t = CivilTime {
        year: century * 100 + conv(year),
        month: conv(month),
        day: conv(day),
        hour: h,
        minute: conv(min),
        second: conv(sec),
    };
    let secs = t.unix_secs()?;
    let since_entry = crate::time::now_us() / 1_000_000;
    EPOCH_AT_ENTRY.store(secs.saturating_sub(since_entry), Ordering::Relaxed);
    Some(t)
}

/// Seconds since 1970 now (0 when the RTC gave nothing usable).
pub fn unix_secs() -> u64 {
    match EPOCH_AT_ENTRY.load(Ordering::Relaxed) {
        0 => 0,
        e => e + crate::time::now_us() / 1_000_000,
    }
}
