//! The kernel side of lb-core's connection [`Pool`]: one per endpoint, and
//! a way to tell a serving task that its connection was evicted or ran
//! past its deadline.

use core::sync::atomic::{AtomicBool, Ordering};
use embassy_time::Timer;
use lb_core::mgmt::pool::Pool;
use lb_core::time::Instant;

use crate::datapath;

/// Most slots of one endpoint.
pub const MAX: usize = 8;

/// One endpoint's slots.
pub struct Slots {
    pool: critical_section::Mutex<core::cell::RefCell<Option<Pool>>>,
    evict: [AtomicBool; MAX],
}

/// Why a connection was cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// A newer connection needed the slot.
    Evicted,
    /// The request did not complete in time.
    Deadline,
}

impl Slots {
    pub const fn new() -> Slots {
        Slots {
            pool: critical_section::Mutex::new(core::cell::RefCell::new(None)),
            evict: [const { AtomicBool::new(false) }; MAX],
        }
    }

    fn with<R>(&self, n: usize, f: impl FnOnce(&mut Pool) -> R) -> R {
        critical_section::with(|cs| {
            let mut p = self.pool.borrow_ref_mut(cs);
            f(p.get_or_insert_with(|| Pool::new(n)))
        })
    }

    /// Slot `i` of `n` took a connection; tells the oldest to go if it
    /// was the last one listening.
    pub fn accepted(&self, i: usize, n: usize) {
        self.evict[i].store(false, Ordering::Relaxed);
        if let Some(victim) = self.with(n, |p| p.accepted(i, datapath::now())) {
            super::count(|c| c.evicted += 1);
            if let Some(v) = self.evict.get(victim) {
                v.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Slot `i` listens again.
    pub fn released(&self, i: usize, n: usize) {
        self.with(n, |p| p.released(i));
    }

    /// Returns when slot `i` must cut its connection: evicted, or past
    /// `deadline`.
    pub async fn cut(&self, i: usize, deadline: Instant) -> Cut {
        loop {
            if self.evict[i].swap(false, Ordering::Relaxed) {
                return Cut::Evicted;
            }
            if datapath::now() >= deadline {
                return Cut::Deadline;
            }
            Timer::after_millis(100).await;
        }
    }
}
