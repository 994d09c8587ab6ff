//! Connection slots of a management endpoint, and who gives way when they
//! are all taken.
//!
//! Each endpoint serves a fixed number of connections at once, one per
//! slot; a free slot is a listening socket. A slot must always be left
//! listening, or a new client would be refused while slow or stalled ones
//! hold every slot. So when a connection takes the last listening slot,
//! the longest-running other connection is evicted (closed) and its slot
//! listens again. On top, every connection has a deadline: a request that
//! has not fully arrived by then is cut off. Fifty clients that open
//! connections and never finish therefore cannot keep an administrator
//! out: each new connection pushes the oldest stalled one out.

use alloc::vec;
use alloc::vec::Vec;

use crate::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Listening,
    Busy { since: Instant },
}

/// The slots of one endpoint.
#[derive(Clone, Debug)]
pub struct Pool {
    slots: Vec<Slot>,
    /// Connections evicted so far.
    pub evicted: u64,
}

impl Pool {
    /// `n` slots (at least 2: one to serve, one to listen), all listening.
    pub fn new(n: usize) -> Pool {
        Pool {
            slots: vec![Slot::Listening; n.max(2)],
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slot `i` took a connection at `now`. Returns the slot whose
    /// connection must be closed so that one slot keeps listening.
    pub fn accepted(&mut self, i: usize, now: Instant) -> Option<usize> {
        *self.slots.get_mut(i)? = Slot::Busy { since: now };
        if self.slots.contains(&Slot::Listening) {
            return None;
        }
        let victim = self
            .slots
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .filter_map(|(j, s)| match s {
                Slot::Busy { since } => Some((*since, j)),
                Slot::Listening => None,
            })
            .min()
            .map(|(_, j)| j)?;
        self.evicted += 1;
        Some(victim)
    }

    /// Slot `i` is listening again (its connection ended or was evicted).
    pub fn released(&mut self, i: usize) {
        if let Some(s) = self.slots.get_mut(i) {
            *s = Slot::Listening;
        }
    }

    /// Connections being served.
    pub fn busy(&self) -> usize {
        self.slots.iter().filter(|s| **s != Slot::Listening).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_connection_gives_way_when_the_last_slot_is_taken() {
        let mut p = Pool::new(3);
        assert_eq!(p.accepted(0, Instant(10)), None);
        assert_eq!(p.accepted(1, Instant(20)), None);
        // Slot 2 was the last listener: the oldest (slot 0) goes.
        assert_eq!(p.accepted(2, Instant(30)), Some(0));
        p.released(0);
        assert_eq!(p.busy(), 2);
        assert_eq!(p.accepted(0, Instant(40)), Some(1));
        p.released(1);
        assert_eq!(p.evicted, 2);
    }

    #[test]
    fn fifty_stalled_clients_leave_room_for_one_more() {
        let mut p = Pool::new(4);
        let mut listening: Vec<usize> = (0..4).collect();
        for t in 0..50u64 {
            let slot = listening.pop().expect("a slot always listens");
            if let Some(v) = p.accepted(slot, Instant(t)) {
                p.released(v);
                listening.push(v);
            }
        }
        assert!(!listening.is_empty());
        let admin = listening.pop().unwrap();
        // The administrator's connection is the newest: it is never the
        // one evicted by the next stalled client.
        let v = p.accepted(admin, Instant(100));
        assert_ne!(v, Some(admin));
        if let Some(v) = v {
            p.released(v);
            listening.push(v);
        }
        let next = listening.pop().unwrap();
        assert_ne!(p.accepted(next, Instant(101)), Some(admin));
    }
}
