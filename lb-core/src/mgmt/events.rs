//! The event log: health changes, configuration applied or rejected,
//! drain/halt, full tables, ARP conflicts, link changes. Kept in a bounded
//! ring (the console's `log` command shows it) and sent as syslog by
//! whoever reads past its cursor ([`EventRing::since`]).

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

/// Events kept; older ones are dropped (and counted).
pub const CAPACITY: usize = 512;

/// RFC 5424 severities used by the appliance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    Error = 3,
    Warning = 4,
    Notice = 5,
    Info = 6,
}

impl Severity {
    pub fn name(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Notice => "notice",
            Severity::Info => "info",
        }
    }
}

/// What an event is about (the syslog MSGID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Category {
    Health,
    Config,
    Admin,
    Table,
    Arp,
    Link,
    System,
    /// The clustered pair: role changes, faults, config sync.
    Pair,
}

impl Category {
    pub fn name(self) -> &'static str {
        match self {
            Category::Health => "health",
            Category::Config => "config",
            Category::Admin => "admin",
            Category::Table => "table",
            Category::Arp => "arp",
            Category::Link => "link",
            Category::System => "system",
            Category::Pair => "pair",
        }
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// 1, 2, 3... in the order logged.
    pub seq: u64,
    /// Milliseconds since boot.
    pub at_ms: u64,
    pub severity: Severity,
    pub category: Category,
    pub text: String,
}

/// The bounded event log.
#[derive(Clone, Debug, Default)]
pub struct EventRing {
    events: VecDeque<Event>,
    last_seq: u64,
    /// Events pushed out by newer ones.
    pub dropped: u64,
}

impl EventRing {
    /// An empty log (usable in a `static`).
    pub const fn new() -> EventRing {
        EventRing {
            events: VecDeque::new(),
            last_seq: 0,
            dropped: 0,
        }
    }

    /// Logs an event; returns its sequence number.
    pub fn push(
        &mut self,
        at_ms: u64,
        severity: Severity,
        category: Category,
        text: String,
    ) -> u64 {
        if self.events.len() >= CAPACITY {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.last_seq += 1;
        self.events.push_back(Event {
            seq: self.last_seq,
            at_ms,
            severity,
            category,
            text,
        });
        self.last_seq
    }

    /// Events with a sequence number above `seq`, oldest first (those
    /// already dropped are skipped).
    pub fn since(&self, seq: u64) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(move |e| e.seq > seq)
    }

    /// The newest `n` events, oldest first.
    pub fn recent(&self, n: usize) -> Vec<&Event> {
        let skip = self.events.len().saturating_sub(n);
        self.events.iter().skip(skip).collect()
    }

    /// Sequence number of the newest event (0: none yet).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

/// Events that sans-IO code (the frame path) reports, waiting for the
/// caller to put them in its [`EventRing`] with the time they are taken.
/// Bounded like the ring: the oldest go first, counted.
#[derive(Clone, Debug, Default)]
pub struct Outbox {
    pending: VecDeque<(Severity, Category, String)>,
    /// Events dropped because nobody took them in time.
    pub dropped: u64,
}

impl Outbox {
    pub fn push(&mut self, severity: Severity, category: Category, text: String) {
        if self.pending.len() >= CAPACITY {
            self.pending.pop_front();
            self.dropped += 1;
        }
        self.pending.push_back((severity, category, text));
    }

    /// The oldest event not taken yet.
    pub fn pop(&mut self) -> Option<(Severity, Category, String)> {
        self.pending.pop_front()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

/// `  12.345 s  notice  health  DICOM/PACS1 down (connection refused)`
pub fn console_line(e: &Event) -> String {
    alloc::format!(
        "{:>8}.{:03} s  {:<7} {:<6} {}",
        e.at_ms / 1000,
        e.at_ms % 1000,
        e.severity.name(),
        e.category.name(),
        e.text
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_ordered_and_readable_from_a_cursor() {
        let mut r = EventRing::default();
        for i in 0..CAPACITY + 5 {
            r.push(
                i as u64,
                Severity::Info,
                Category::System,
                alloc::format!("e{i}"),
            );
        }
        assert_eq!(r.len(), CAPACITY);
        assert_eq!(r.dropped, 5);
        let after: Vec<_> = r.since(r.last_seq() - 2).map(|e| e.text.clone()).collect();
        assert_eq!(after, ["e515", "e516"]);
        // A cursor behind the oldest kept event gets everything kept.
        assert_eq!(r.since(0).count(), CAPACITY);
        assert_eq!(r.recent(1)[0].seq, r.last_seq());
        let line = console_line(r.recent(1)[0]);
        assert!(line.ends_with("info    system e516"), "{line}");
    }
}
