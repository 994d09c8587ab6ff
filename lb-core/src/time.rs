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
