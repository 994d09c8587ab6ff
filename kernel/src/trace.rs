//! Boot-time trace: cheap timestamps at each boot stage, printed after the
//! `ready` line when the command line contains `boottrace` (for finding where
//! boot time goes without the cost of printing while booting).

use core::cell::RefCell;
use critical_section::Mutex;

const MAX_MARKS: usize = 32;

struct Marks {
    at: [(&'static str, u64); MAX_MARKS],
    len: usize,
}

static MARKS: Mutex<RefCell<Marks>> = Mutex::new(RefCell::new(Marks {
    at: [("", 0); MAX_MARKS],
    len: 0,
}));

/// Records that boot reached `stage` (TSC value; converted when printed).
pub fn mark(stage: &'static str) {
    let tsc = crate::cpu::rdtsc();
    critical_section::with(|cs| {
        let mut m = MARKS.borrow_ref_mut(cs);
        if m.len < MAX_MARKS {
            let i = m.len;
            m.at[i] = (stage, tsc);
            m.len += 1;
        }
    });
}

/// Prints every mark as microseconds since kernel entry.
pub fn print() {
    let hz = crate::time::tsc_hz().max(1);
    let entry = boot::entry_tsc();
    critical_section::with(|cs| {
        let m = MARKS.borrow_ref(cs);
        for &(stage, tsc) in &m.at[..m.len] {
            let us = u128::from(tsc.wrapping_sub(entry)) * 1_000_000 / u128::from(hz);
            crate::println!("boottrace {us:>8} us  {stage}");
        }
    });
    crate::println!(
        "boottrace heap free {} KiB",
        crate::memory::heap_free() >> 10
    );
}
