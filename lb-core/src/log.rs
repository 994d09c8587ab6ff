//! Console lines the sans-IO code wants printed.
//!
//! lb-core has no console: code that has something to say (a health change,
//! a config error, a table limited by memory) appends a line here and the
//! kernel prints what it takes out. Bounded: when the kernel does not drain
//! it, the oldest lines go and are counted.

use alloc::collections::VecDeque;
use alloc::string::String;

/// Lines kept before the oldest is dropped.
pub const CAPACITY: usize = 256;

/// A bounded queue of console lines.
#[derive(Debug, Default)]
pub struct Log {
    lines: VecDeque<String>,
    /// Lines dropped because nobody drained the queue in time.
    pub dropped: u64,
}

impl Log {
    /// Appends a line (without its newline).
    pub fn push(&mut self, line: String) {
        if self.lines.len() >= CAPACITY {
            self.lines.pop_front();
            self.dropped += 1;
        }
        self.lines.push_back(line);
    }

    /// Takes the oldest line.
    pub fn pop(&mut self) -> Option<String> {
        self.lines.pop_front()
    }

    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;

    #[test]
    fn keeps_order_and_drops_the_oldest_when_full() {
        let mut log = Log::default();
        for i in 0..CAPACITY + 3 {
            log.push(format!("line {i}"));
        }
        assert_eq!(log.len(), CAPACITY);
        assert_eq!(log.dropped, 3);
        assert_eq!(log.pop().as_deref(), Some("line 3"));
    }
}
