//! Time as the engine sees it: a monotonic instant handed in by the caller.

/// Milliseconds since an arbitrary epoch (the appliance uses kernel entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(pub u64);

impl Instant {
    pub const fn from_millis(ms: u64) -> Self {
        Instant(ms)
    }
    pub const fn from_secs(s: u64) -> Self {
        Instant(s * 1000)
    }
    pub const fn millis(self) -> u64 {
        self.0
    }
    /// `self + d`, saturating.
    pub const fn add(self, d: Duration) -> Self {
        Instant(self.0.saturating_add(d.0))
    }
    /// Time elapsed since `earlier` (zero if `earlier` is later).
    pub const fn since(self, earlier: Instant) -> Duration {
        Duration(self.0.saturating_sub(earlier.0))
    }
}

/// A span of time in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub u64);

impl Duration {
    pub const fn from_millis(ms: u64) -> Self {
        Duration(ms)
    }
    pub const fn from_secs(s: u64) -> Self {
        Duration(s * 1000)
    }
    pub const fn millis(self) -> u64 {
        self.0
    }
}

/// A calendar date and time (UTC), as a real-time clock reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CivilTime {
    pub year: u32,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
}

impl CivilTime {
    /// Seconds since 1970-01-01 00:00 UTC; `None` for a date that does not
    /// exist or lies before 1970 (a real-time clock that was never set).
    pub fn unix_secs(&self) -> Option<u64> {
        let leap =
            |y: u32| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        let month_days = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        if self.year < 1970
            || !(1..=12).contains(&self.month)
            || self.day == 0
            || self.hour > 23
            || self.minute > 59
            || self.second > 60
        {
            return None;
        }
        let max_day =
            month_days[self.month as usize - 1] + u32::from(self.month == 2 && leap(self.year));
        if self.day > max_day {
            return None;
        }
        let mut days: u64 = (1970..self.year).map(|y| 365 + u64::from(leap(y))).sum();
        for m in 1..self.month {
            days += u64::from(month_days[m as usize - 1] + u32::from(m == 2 && leap(self.year)));
        }
        days += u64::from(self.day - 1);
        Some(
            days * 86_400
                + u64::from(self.hour) * 3600
                + u64::from(self.minute) * 60
                + u64::from(self.second),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(year: u32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> CivilTime {
        CivilTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        }
    }

    #[test]
    fn civil_to_unix() {
        assert_eq!(t(1970, 1, 1, 0, 0, 0).unix_secs(), Some(0));
        assert_eq!(t(2000, 3, 1, 0, 0, 0).unix_secs(), Some(951_868_800));
        assert_eq!(t(2026, 12, 1, 15, 30, 5).unix_secs(), Some(1_796_139_005));
        assert_eq!(t(2024, 2, 29, 12, 0, 0).unix_secs(), Some(1_709_208_000));
        assert_eq!(t(2023, 2, 29, 0, 0, 0).unix_secs(), None);
        assert_eq!(t(1969, 12, 31, 0, 0, 0).unix_secs(), None);
        assert_eq!(t(2026, 13, 1, 0, 0, 0).unix_secs(), None);
        assert_eq!(t(2026, 4, 31, 0, 0, 0).unix_secs(), None);
    }
}
