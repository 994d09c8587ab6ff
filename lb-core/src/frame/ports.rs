//! SNAT source ports: one bounded allocator per real server.
//!
//! In one-arm SNAT every flow to a real server leaves from the appliance's
//! own address, so the source port alone tells the replies apart. A port is
//! taken when the flow starts and given back when the flow's tracking entry
//! expires; when the range is used up new flows are refused and counted.

use alloc::vec::Vec;
use core::ops::RangeInclusive;

/// The source ports of SNAT flows and layer 7 server-side connections:
/// above the well-known range, below [`STACK_RANGE`].
pub const DEFAULT_RANGE: RangeInclusive<u16> = 1024..=49151;

/// The ephemeral ports of the appliance's own TCP/IP stack (health checks,
/// DNS): IANA's dynamic range. Disjoint from [`DEFAULT_RANGE`], so a reply
/// to a health check never matches a SNAT or layer 7 connection (the
/// kernel keeps embassy-net's allocator inside this range).
pub const STACK_RANGE: RangeInclusive<u16> = 49152..=65535;

/// A bitmap of the ports of one range; the cursor makes allocation
/// round-robin so a just-freed port is not reused at once (a late packet of
/// the old flow would otherwise land in the new one). The bitmap (8 KiB for
/// the default range) is only allocated at the first allocation, so real
/// servers that never see SNAT traffic cost nothing.
#[derive(Clone, Debug)]
pub struct PortAllocator {
    first: u16,
    size: u32,
    used: Vec<u64>,
    cursor: u32,
    in_use: u32,
    exhausted: u64,
}

impl PortAllocator {
    /// An allocator over `range`; an empty range (start > end) has no ports.
    pub fn new(range: RangeInclusive<u16>) -> Self {
        let (first, last) = (*range.start(), *range.end());
        let size = if first > last {
            0
        } else {
            u32::from(last - first) + 1
        };
        PortAllocator {
            first,
            size,
            used: Vec::new(),
            cursor: 0,
            in_use: 0,
            exhausted: 0,
        }
    }

    /// Takes a free port; `None` (and counted) when all are in use.
    pub fn allocate(&mut self) -> Option<u16> {
        if self.in_use >= self.size {
            self.exhausted = self.exhausted.saturating_add(1);
            return None;
        }
        if self.used.is_empty() {
            self.used = alloc::vec![0; self.size.div_ceil(64) as usize];
        }
        // Scan whole words from the cursor; a free bit exists, so at most
        // one full turn plus one word is needed.
        let words = self.used.len() as u32;
        let mut i = self.cursor;
        for _ in 0..=words {
            let w = (i / 64) as usize;
            let bit_from = i % 64;
            let free = !self.used[w] & (u64::MAX << bit_from) & self.valid_mask(w);
            if free != 0 {
                let bit = free.trailing_zeros();
                self.used[w] |= 1 << bit;
                self.in_use += 1;
                let idx = w as u32 * 64 + bit;
                self.cursor = if idx + 1 >= self.size { 0 } else { idx + 1 };
                return Some(self.first + idx as u16);
            }
            i = if w as u32 + 1 >= words {
                0
            } else {
                (w as u32 + 1) * 64
            };
        }
        // Unreachable while `in_use` is consistent; count it rather than panic.
        self.exhausted = self.exhausted.saturating_add(1);
        None
    }

    /// Bits of word `w` that are inside the range.
    fn valid_mask(&self, w: usize) -> u64 {
        let remaining = self.size - w as u32 * 64;
        if remaining >= 64 {
            u64::MAX
        } else {
            (1u64 << remaining) - 1
        }
    }

    /// Gives `port` back; false when it was not allocated (or out of range).
    pub fn free(&mut self, port: u16) -> bool {
        let Some(idx) = port.checked_sub(self.first).map(u32::from) else {
            return false;
        };
        if idx >= self.size {
            return false;
        }
        let (w, bit) = ((idx / 64) as usize, idx % 64);
        if self.used.get(w).is_none_or(|word| word & (1 << bit) == 0) {
            return false;
        }
        self.used[w] &= !(1 << bit);
        self.in_use -= 1;
        true
    }

    /// Takes `port` itself (a flow replicated from the other appliance of
    /// a pair keeps its port); false when it is in use or out of range.
    pub fn take(&mut self, port: u16) -> bool {
        let Some(idx) = port.checked_sub(self.first).map(u32::from) else {
            return false;
        };
        if idx >= self.size {
            return false;
        }
        if self.used.is_empty() {
            self.used = alloc::vec![0; self.size.div_ceil(64) as usize];
        }
        let (w, bit) = ((idx / 64) as usize, idx % 64);
        if self.used[w] & (1 << bit) != 0 {
            return false;
        }
        self.used[w] |= 1 << bit;
        self.in_use += 1;
        true
    }

    pub fn is_allocated(&self, port: u16) -> bool {
        match port.checked_sub(self.first).map(u32::from) {
            Some(idx) if idx < self.size => self
                .used
                .get((idx / 64) as usize)
                .is_some_and(|w| w & (1 << (idx % 64)) != 0),
            _ => false,
        }
    }

    pub fn in_use(&self) -> u32 {
        self.in_use
    }

    pub fn capacity(&self) -> u32 {
        self.size
    }

    /// Allocations refused because the range was used up.
    pub fn exhausted(&self) -> u64 {
        self.exhausted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    #[test]
    fn allocates_every_port_once_then_refuses() {
        let mut a = PortAllocator::new(60000..=60099);
        let mut seen = BTreeSet::new();
        for _ in 0..100 {
            let p = a.allocate().unwrap();
            assert!((60000..=60099).contains(&p));
            assert!(seen.insert(p), "port {p} handed out twice");
        }
        assert_eq!(a.in_use(), 100);
        assert_eq!(a.allocate(), None);
        assert_eq!(a.exhausted(), 1);
        assert!(a.free(60042));
        assert_eq!(a.allocate(), Some(60042));
    }

    #[test]
    fn full_default_range() {
        let mut a = PortAllocator::new(DEFAULT_RANGE);
        assert_eq!(a.capacity(), 48128);
        for _ in 0..48128 {
            let p = a.allocate().unwrap();
            assert!(!STACK_RANGE.contains(&p));
        }
        assert_eq!(a.allocate(), None);
        assert!(a.free(49151));
        assert_eq!(a.allocate(), Some(49151));
    }

    #[test]
    fn freed_port_is_not_reused_at_once() {
        let mut a = PortAllocator::new(2000..=2009);
        let p = a.allocate().unwrap();
        assert!(a.free(p));
        assert_ne!(a.allocate(), Some(p));
    }

    #[test]
    fn free_of_unknown_port_is_refused() {
        let mut a = PortAllocator::new(2000..=2009);
        assert!(!a.free(2000));
        assert!(!a.free(1999));
        assert!(!a.free(2010));
        let p = a.allocate().unwrap();
        assert!(a.free(p));
        assert!(!a.free(p));
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn empty_range_has_no_ports() {
        #[allow(clippy::reversed_empty_ranges)]
        let mut a = PortAllocator::new(10..=9);
        assert_eq!(a.capacity(), 0);
        assert_eq!(a.allocate(), None);
        assert_eq!(a.exhausted(), 1);
    }

    proptest! {
        /// Against a model: never hands out a port in use, never exceeds the
        /// range, refuses only when full.
        #[test]
        fn behaves_like_a_set(
            start in 0u16..65000, len in 1u16..300,
            ops in proptest::collection::vec((any::<bool>(), any::<prop::sample::Index>()), 0..600),
        ) {
            let end = start.saturating_add(len - 1);
            let mut a = PortAllocator::new(start..=end);
            let mut model = BTreeSet::new();
            for (alloc_op, idx) in ops {
                if alloc_op {
                    match a.allocate() {
                        Some(p) => {
                            prop_assert!((start..=end).contains(&p));
                            prop_assert!(model.insert(p));
                        }
                        None => prop_assert_eq!(model.len() as u32, a.capacity()),
                    }
                } else if !model.is_empty() {
                    let p = *model.iter().nth(idx.index(model.len())).unwrap();
                    prop_assert!(a.free(p));
                    model.remove(&p);
                }
                prop_assert_eq!(a.in_use() as usize, model.len());
            }
        }
    }
}
