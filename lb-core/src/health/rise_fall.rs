//! Up/down with hysteresis, and the check schedule of one real server.

use super::verdict::Verdict;
use crate::time::{Duration, Instant};

/// Whether a real server may receive new flows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    Up,
    Down,
}

/// A change of health, reported once when it happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transition {
    pub from: Health,
    pub to: Health,
}

/// Rise/fall counter: `fall` consecutive failures take an up server down,
/// `rise` consecutive passes bring a down server up. A result that agrees
/// with the current health resets the streak.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RiseFall {
    rise: u32,
    fall: u32,
    health: Health,
    /// Consecutive results that disagree with `health`.
    streak: u32,
}

impl RiseFall {
    /// `rise` and `fall` of 0 are treated as 1 (config validation rejects them).
    pub fn new(rise: u32, fall: u32, initial: Health) -> Self {
        RiseFall {
            rise: rise.max(1),
            fall: fall.max(1),
            health: initial,
            streak: 0,
        }
    }

    /// Up, but `fall - 1` failures into its streak: a new server takes
    /// traffic at once and the first failed check takes it down (one pass
    /// clears the streak as usual).
    pub fn provisional_up(rise: u32, fall: u32) -> Self {
        let mut c = RiseFall::new(rise, fall, Health::Up);
        c.streak = c.fall - 1;
        c
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Results so far towards a flip.
    pub fn streak(&self) -> u32 {
        self.streak
    }

    pub fn record(&mut self, pass: bool) -> Option<Transition> {
        let (agrees, needed, other) = match self.health {
            Health::Up => (pass, self.fall, Health::Down),
            Health::Down => (!pass, self.rise, Health::Up),
        };
        if agrees {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        if self.streak < needed {
            return None;
        }
        let t = Transition {
            from: self.health,
            to: other,
        };
        self.health = other;
        self.streak = 0;
        Some(t)
    }
}

/// A stateless mix of the seed and the check number (splitmix64 finalizer),
/// so jitter is deterministic and differs between servers.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Health checking of one real server: when the next check is due, the
/// check sequence number, the rise/fall state and the last verdict.
///
/// Checks of one server never overlap: a check is due `interval` (plus up
/// to a tenth of it in deterministic jitter, so servers drift apart) after
/// the previous one started, and no earlier than the previous one ended.
#[derive(Clone, Debug)]
pub struct ServerHealth {
    counter: RiseFall,
    interval: Duration,
    seed: u64,
    seq: u32,
    next_due: Instant,
    started: Option<Instant>,
    last: Option<Verdict>,
    checks: u64,
    failures: u64,
}

impl ServerHealth {
    /// The first check is due within a tenth of `interval` from `now`.
    /// `seed` (e.g. the real server's address) decorrelates servers.
    pub fn new(
        interval: Duration,
        rise: u32,
        fall: u32,
        initial: Health,
        now: Instant,
        seed: u64,
    ) -> Self {
        Self::with_counter(interval, RiseFall::new(rise, fall, initial), now, seed)
    }

    /// As [`ServerHealth::new`] with a prepared counter.
    pub fn with_counter(interval: Duration, counter: RiseFall, now: Instant, seed: u64) -> Self {
        let interval = Duration(interval.millis().max(1));
        let mut s = ServerHealth {
            counter,
            interval,
            seed,
            seq: 0,
            next_due: now,
            started: None,
            last: None,
            checks: 0,
            failures: 0,
        };
        s.next_due = now.add(s.jitter());
        s
    }

    fn jitter(&self) -> Duration {
        Duration(mix(self.seed, u64::from(self.seq)) % (self.interval.millis() / 10 + 1))
    }

    pub fn health(&self) -> Health {
        self.counter.health()
    }

    pub fn next_due(&self) -> Instant {
        self.next_due
    }

    pub fn last_verdict(&self) -> Option<&Verdict> {
        self.last.as_ref()
    }

    pub fn in_flight(&self) -> bool {
        self.started.is_some()
    }

    /// Checks run and checks failed since creation.
    pub fn counts(&self) -> (u64, u64) {
        (self.checks, self.failures)
    }

    /// If a check is due and none is running, marks it started and returns
    /// its sequence number (for [`super::Dialog::new`]).
    pub fn begin(&mut self, now: Instant) -> Option<u32> {
        if self.started.is_some() || now < self.next_due {
            return None;
        }
        self.started = Some(now);
        Some(self.seq)
    }

    /// Records the verdict of the running check and schedules the next one.
    /// Returns the health change it caused, if any. Ignored if no check runs.
    pub fn finish(&mut self, now: Instant, verdict: Verdict) -> Option<Transition> {
        let started = self.started.take()?;
        self.checks += 1;
        if !verdict.is_pass() {
            self.failures += 1;
        }
        let t = self.counter.record(verdict.is_pass());
        self.last = Some(verdict);
        self.seq = self.seq.wrapping_add(1);
        self.next_due = started.add(self.interval).add(self.jitter()).max(now);
        t
    }
}

#[cfg(test)]
mod tests {
    use super::super::verdict::{FailReason, Phase};
    use super::*;

    fn fail() -> Verdict {
        Verdict::Fail(FailReason::Timeout(Phase::Connect))
    }

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_passes() {
        let mut c = RiseFall::new(2, 3, Health::Up);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert_eq!(
            c.record(false),
            Some(Transition {
                from: Health::Up,
                to: Health::Down
            })
        );
        assert_eq!(c.health(), Health::Down);
        assert_eq!(c.record(true), None);
        assert_eq!(
            c.record(true),
            Some(Transition {
                from: Health::Down,
                to: Health::Up
            })
        );
    }

    #[test]
    fn an_agreeing_result_resets_the_streak() {
        let mut c = RiseFall::new(2, 3, Health::Up);
        c.record(false);
        c.record(false);
        assert_eq!(c.streak(), 2);
        assert_eq!(c.record(true), None);
        assert_eq!(c.streak(), 0);
        c.record(false);
        c.record(false);
        assert_eq!(c.health(), Health::Up);
        let mut c = RiseFall::new(3, 1, Health::Down);
        c.record(true);
        c.record(true);
        c.record(false);
        assert_eq!(c.record(true), None);
        assert_eq!(c.health(), Health::Down);
    }

    #[test]
    fn provisional_up_falls_at_the_first_failure_only_while_fresh() {
        let mut c = RiseFall::provisional_up(2, 3);
        assert_eq!(c.health(), Health::Up);
        assert!(c.record(false).is_some());
        let mut c = RiseFall::provisional_up(2, 3);
        assert_eq!(c.record(true), None);
        assert_eq!(c.record(false), None);
        assert_eq!(c.record(false), None);
        assert!(c.record(false).is_some());
    }

    #[test]
    fn zero_counts_act_as_one() {
        let mut c = RiseFall::new(0, 0, Health::Up);
        assert!(c.record(false).is_some());
        assert!(c.record(true).is_some());
    }

    #[test]
    fn schedule_follows_interval_with_bounded_jitter() {
        let interval = Duration::from_secs(10);
        let mut s = ServerHealth::new(interval, 2, 3, Health::Down, Instant(0), 0xC0A8_0A0B);
        let first = s.next_due();
        assert!(
            first <= Instant(1000),
            "first check within a tenth of the interval"
        );
        if first > Instant(0) {
            assert_eq!(s.begin(Instant(0)), None, "not due yet");
        }
        let mut now = first;
        let mut starts = alloc::vec::Vec::new();
        for seq in 0..20u32 {
            assert_eq!(s.begin(now), Some(seq));
            assert_eq!(s.begin(now), None, "one check at a time");
            starts.push(now);
            now = now.add(Duration(250));
            s.finish(now, Verdict::Pass);
            now = s.next_due();
        }
        for w in starts.windows(2) {
            let gap = w[1].since(w[0]).millis();
            assert!((10_000..=11_000).contains(&gap), "gap {gap}");
        }
        // Deterministic: the same seed gives the same schedule.
        let t = ServerHealth::new(interval, 2, 3, Health::Down, Instant(0), 0xC0A8_0A0B);
        assert_eq!(t.next_due(), first);
        assert_eq!(s.health(), Health::Up);
        assert_eq!(s.counts(), (20, 0));
    }

    #[test]
    fn slow_check_delays_the_next_one() {
        let mut s = ServerHealth::new(Duration(1000), 1, 1, Health::Up, Instant(0), 1);
        let due = s.next_due();
        s.begin(due).unwrap();
        // The check took 5 s (a long timeout): the next one is due at once.
        let end = due.add(Duration(5000));
        assert_eq!(
            s.finish(end, fail()),
            Some(Transition {
                from: Health::Up,
                to: Health::Down
            })
        );
        assert_eq!(s.next_due(), end);
        assert_eq!(s.last_verdict(), Some(&fail()));
        assert_eq!(s.counts(), (1, 1));
    }

    #[test]
    fn finish_without_begin_is_ignored() {
        let mut s = ServerHealth::new(Duration(1000), 1, 1, Health::Up, Instant(0), 1);
        assert_eq!(s.finish(Instant(5), fail()), None);
        assert_eq!(s.counts(), (0, 0));
        assert_eq!(s.health(), Health::Up);
    }
}
