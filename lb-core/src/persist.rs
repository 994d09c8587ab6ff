//! Source-IP persistence: client (masked by the service's persistence
//! netmask) → real server, per virtual service.
//!
//! A fixed-capacity open-addressing table (linear probing, backward-shift
//! deletion, so no tombstones). Each slot is 16 bytes: one word packs the
//! service, the masked client address and the server; the other is the
//! expiry instant. The slot array is a power of two with load ≤ 3/4.
//!
//! Entries expire `timeout` after their last refresh ([`touch`] or
//! [`insert`]). Expired entries read as absent and are reclaimed lazily (on
//! lookup, on insert into a full table) and by a bounded sweep
//! ([`expire`]), so no call costs O(n) except the rare administrative
//! [`drop_server`].
//!
//! Full-table policy: a new client is **refused** (counted in
//! `stats.refused_full`) after a bounded attempt to reclaim expired
//! entries. Its flow is still scheduled and tracked, it only has no
//! affinity yet. Evicting instead would silently move an existing client —
//! perhaps between two associations of one study — which is worse than a
//! new client not being sticky for a while.
//!
//! [`touch`]: PersistTable::touch
//! [`insert`]: PersistTable::insert
//! [`expire`]: PersistTable::expire
//! [`drop_server`]: PersistTable::drop_server

use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::conntrack::hash::KeyedHash;
use crate::time::{Duration, Instant};

/// How many slots an insert into a full table examines for expired entries
/// before refusing.
pub const RECLAIM_BUDGET: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    /// `service << 48 | client << 16 | server`, or [`EMPTY`].
    word: u64,
    /// Milliseconds; the entry is dead once `now >= expires`.
    expires: u64,
}

/// Service id 0xFFFF is never valid (at most 256 services), so this word
/// is never a real entry.
const EMPTY: u64 = u64::MAX;
const EMPTY_SLOT: Slot = Slot {
    word: EMPTY,
    expires: 0,
};

impl Slot {
    fn key(self) -> u64 {
        self.word >> 16
    }
    fn server(self) -> u16 {
        self.word as u16
    }
    fn is_empty(self) -> bool {
        self.word == EMPTY
    }
    fn live(self, now: Instant) -> bool {
        !self.is_empty() && now.millis() < self.expires
    }
}

/// One binding, as [`PersistTable::entry_at`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistEntry {
    pub service: u16,
    /// The client's address, masked with the service's persistence mask.
    pub client: Ipv4Addr,
    pub server: u16,
    pub expires: Instant,
}

/// The table is full and nothing could be reclaimed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PersistFull;

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PersistStats {
    pub inserted: u64,
    /// New clients given no affinity because the table was full.
    pub refused_full: u64,
    pub expired: u64,
    /// Entries removed because their server went down or was halted.
    pub dropped_for_server: u64,
}

/// The persistence table of all virtual services.
pub struct PersistTable {
    slots: Vec<Slot>,
    mask: usize,
    capacity: usize,
    len: usize,
    cursor: usize,
    hash: KeyedHash,
    pub stats: PersistStats,
}

/// Applies the service's persistence netmask to a client address.
pub fn masked(client: Ipv4Addr, mask: Ipv4Addr) -> u32 {
    u32::from(client) & u32::from(mask)
}

fn key_of(service: u16, client: u32) -> u64 {
    (u64::from(service) << 32) | u64::from(client)
}

impl PersistTable {
    /// A table for at most `capacity` entries (at least 1). `seed` keys the
    /// hash (give it a boot-time random value).
    pub fn new(capacity: usize, seed: u64) -> Self {
        let capacity = capacity.max(1);
        let slots = (capacity + capacity / 3 + 1).next_power_of_two();
        PersistTable {
            slots: vec![EMPTY_SLOT; slots],
            mask: slots - 1,
            capacity,
            len: 0,
            cursor: 0,
            hash: KeyedHash::new(seed),
            stats: PersistStats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held, including expired ones not yet reclaimed.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of table memory per entry of capacity (slot array included).
    pub fn bytes_per_entry(&self) -> usize {
        self.slots.len() * core::mem::size_of::<Slot>() / self.capacity
    }

    fn home(&self, key: u64) -> usize {
        (self.hash.hash2(key, 0x5045_5253) as usize) & self.mask
    }

    /// Slot index of `key`, live or expired.
    fn find(&self, key: u64) -> Option<usize> {
        let mut i = self.home(key);
        loop {
            let s = self.slots[i];
            if s.is_empty() {
                return None;
            }
            if s.key() == key {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// The server a client of `service` is bound to, if the binding is
    /// live. Does not refresh it (see [`touch`](Self::touch)).
    pub fn lookup(
        &mut self,
        service: u16,
        client: Ipv4Addr,
        mask: Ipv4Addr,
        now: Instant,
    ) -> Option<u16> {
        let key = key_of(service, masked(client, mask));
        let i = self.find(key)?;
        let s = self.slots[i];
        if s.live(now) {
            Some(s.server())
        } else {
            self.remove_at(i);
            self.stats.expired += 1;
            None
        }
    }

    /// Refreshes a live binding (traffic from the client): it now expires
    /// `timeout` from `now`. Returns whether there was one.
    pub fn touch(
        &mut self,
        service: u16,
        client: Ipv4Addr,
        mask: Ipv4Addr,
        timeout: Duration,
        now: Instant,
    ) -> bool {
        let key = key_of(service, masked(client, mask));
        match self.find(key) {
            Some(i) if self.slots[i].live(now) => {
                self.slots[i].expires = now.add(timeout).millis();
                true
            }
            _ => false,
        }
    }

    /// Binds a client of `service` to `server` until `now + timeout`
    /// (replacing any previous binding of that client).
    pub fn insert(
        &mut self,
        service: u16,
        client: Ipv4Addr,
        mask: Ipv4Addr,
        server: u16,
        timeout: Duration,
        now: Instant,
    ) -> Result<(), PersistFull> {
        assert!(service != u16::MAX, "service id 0xFFFF is reserved");
        let key = key_of(service, masked(client, mask));
        let slot = Slot {
            word: (key << 16) | u64::from(server),
            expires: now.add(timeout).millis(),
        };
        if let Some(i) = self.find(key) {
            self.slots[i] = slot;
            self.stats.inserted += 1;
            return Ok(());
        }
        if self.len >= self.capacity {
            self.expire(now, RECLAIM_BUDGET);
            if self.len >= self.capacity {
                self.stats.refused_full += 1;
                return Err(PersistFull);
            }
        }
        let mut i = self.home(key);
        while !self.slots[i].is_empty() {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = slot;
        self.len += 1;
        self.stats.inserted += 1;
        Ok(())
    }

    /// Removes one client's binding. Returns whether there was one.
    pub fn remove(&mut self, service: u16, client: Ipv4Addr, mask: Ipv4Addr) -> bool {
        let key = key_of(service, masked(client, mask));
        match self.find(key) {
            Some(i) => {
                self.remove_at(i);
                true
            }
            None => false,
        }
    }

    /// Removes every binding to `server` of `service` (it went down or was
    /// halted), so its clients are scheduled afresh. O(table size): an
    /// administrative event, not per packet.
    pub fn drop_server(&mut self, service: u16, server: u16) -> usize {
        self.retain(|s| !(s.key() >> 32 == u64::from(service) && s.server() == server))
    }

    /// Slots of the table (for a walk over every entry, see
    /// [`PersistTable::entry_at`]).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The live binding in slot `i`, if any (replication to the pair).
    pub fn entry_at(&self, i: usize, now: Instant) -> Option<PersistEntry> {
        let s = *self.slots.get(i)?;
        s.live(now).then(|| PersistEntry {
            service: (s.key() >> 32) as u16,
            client: Ipv4Addr::from(s.key() as u32),
            server: s.server(),
            expires: Instant(s.expires),
        })
    }

    /// Removes every binding of `service` (the service was removed or
    /// reconfigured).
    pub fn drop_service(&mut self, service: u16) -> usize {
        self.retain(|s| s.key() >> 32 != u64::from(service))
    }

    /// Gives every binding its service and server under a new
    /// configuration (a live apply): `map` returns the new pair, or `None`
    /// to drop the binding. Expiry instants are kept. Returns how many were
    /// dropped. O(table size): an administrative event.
    pub fn remap(&mut self, mut map: impl FnMut(u16, u16) -> Option<(u16, u16)>) -> usize {
        let size = self.slots.len();
        let old = core::mem::replace(&mut self.slots, vec![EMPTY_SLOT; size]);
        self.len = 0;
        let mut dropped = 0;
        for s in old.into_iter().filter(|s| !s.is_empty()) {
            let service = (s.key() >> 32) as u16;
            let client = s.key() as u32;
            let Some((service, server)) = map(service, s.server()) else {
                dropped += 1;
                continue;
            };
            let key = key_of(service, client);
            let mut i = self.home(key);
            while !self.slots[i].is_empty() {
                i = (i + 1) & self.mask;
            }
            self.slots[i] = Slot {
                word: (key << 16) | u64::from(server),
                expires: s.expires,
            };
            self.len += 1;
        }
        self.stats.dropped_for_server += dropped as u64;
        dropped
    }

    fn retain(&mut self, keep: impl Fn(Slot) -> bool) -> usize {
        let mut removed = 0;
        let mut i = 0;
        while i < self.slots.len() {
            let s = self.slots[i];
            if !s.is_empty() && !keep(s) {
                // Backward shift may pull another entry into `i`: look again.
                self.remove_at(i);
                removed += 1;
            } else {
                i += 1;
            }
        }
        self.stats.dropped_for_server += removed as u64;
        removed
    }

    /// Examines up to `budget` slots (continuing where the last call
    /// stopped) and removes expired entries. Returns how many it removed.
    pub fn expire(&mut self, now: Instant, budget: usize) -> usize {
        if self.len == 0 {
            return 0;
        }
        let mut removed = 0;
        for _ in 0..budget.min(self.slots.len()) {
            let i = self.cursor;
            let s = self.slots[i];
            if !s.is_empty() && !s.live(now) {
                self.remove_at(i);
                removed += 1;
                // `i` may now hold a shifted entry: examine it next time round.
            } else {
                self.cursor = (i + 1) & self.mask;
            }
        }
        self.stats.expired += removed as u64;
        removed
    }

    /// Deletes slot `i` and shifts later entries of the probe run back so
    /// every entry stays reachable from its home slot.
    fn remove_at(&mut self, mut hole: usize) {
        self.len -= 1;
        let mut j = hole;
        loop {
            self.slots[hole] = EMPTY_SLOT;
            loop {
                j = (j + 1) & self.mask;
                let s = self.slots[j];
                if s.is_empty() {
                    return;
                }
                let home = self.home(s.key());
                // Movable into the hole unless its home lies cyclically in
                // (hole, j].
                let stays = if hole <= j {
                    hole < home && home <= j
                } else {
                    hole < home || home <= j
                };
                if !stays {
                    self.slots[hole] = s;
                    hole = j;
                    break;
                }
            }
        }
    }

    /// Whether every entry is reachable from its home slot (test helper).
    #[cfg(test)]
    fn check_invariants(&self) {
        let mut n = 0;
        for (i, s) in self.slots.iter().enumerate() {
            if s.is_empty() {
                continue;
            }
            n += 1;
            assert_eq!(self.find(s.key()), Some(i), "entry at {i} unreachable");
        }
        assert_eq!(n, self.len);
        assert!(self.len <= self.capacity);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ALL: Ipv4Addr = Ipv4Addr::BROADCAST;
    const HOUR: Duration = Duration::from_secs(3600);

    fn ip(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0a00_0000 | n)
    }

    #[test]
    fn binding_lives_until_timeout_and_is_refreshed() {
        let mut t = PersistTable::new(16, 1);
        let t0 = Instant::from_secs(100);
        t.insert(0, ip(1), ALL, 3, HOUR, t0).unwrap();
        assert_eq!(
            t.lookup(0, ip(1), ALL, t0.add(Duration::from_secs(3599))),
            Some(3)
        );
        assert!(t.touch(0, ip(1), ALL, HOUR, t0.add(Duration::from_secs(3000))));
        assert_eq!(
            t.lookup(0, ip(1), ALL, t0.add(Duration::from_secs(6599))),
            Some(3)
        );
        assert_eq!(
            t.lookup(0, ip(1), ALL, t0.add(Duration::from_secs(6600))),
            None
        );
        assert!(t.is_empty(), "expired entry reclaimed on lookup");
        // Other service, same client: separate binding.
        t.insert(1, ip(1), ALL, 0, HOUR, t0).unwrap();
        assert_eq!(t.lookup(0, ip(1), ALL, t0), None);
    }

    #[test]
    fn netmask_groups_clients() {
        let mut t = PersistTable::new(16, 1);
        let m24 = Ipv4Addr::new(255, 255, 255, 0);
        t.insert(0, Ipv4Addr::new(192, 168, 1, 7), m24, 2, HOUR, Instant(0))
            .unwrap();
        assert_eq!(
            t.lookup(0, Ipv4Addr::new(192, 168, 1, 200), m24, Instant(1)),
            Some(2)
        );
        assert_eq!(
            t.lookup(0, Ipv4Addr::new(192, 168, 2, 7), m24, Instant(1)),
            None
        );
    }

    #[test]
    fn full_table_refuses_new_clients_and_counts() {
        let mut t = PersistTable::new(4, 9);
        for n in 0..4 {
            t.insert(0, ip(n), ALL, 0, HOUR, Instant(0)).unwrap();
        }
        assert_eq!(
            t.insert(0, ip(99), ALL, 0, HOUR, Instant(1)),
            Err(PersistFull)
        );
        assert_eq!(t.stats.refused_full, 1);
        // Existing clients unaffected, and may be re-bound.
        assert_eq!(t.insert(0, ip(2), ALL, 1, HOUR, Instant(1)), Ok(()));
        assert_eq!(t.lookup(0, ip(2), ALL, Instant(2)), Some(1));
        // Once entries expire, the insert reclaims them.
        assert_eq!(
            t.insert(0, ip(99), ALL, 0, HOUR, Instant(0).add(HOUR)),
            Ok(())
        );
        t.check_invariants();
    }

    #[test]
    fn drop_server_moves_its_clients_only() {
        let mut t = PersistTable::new(1000, 3);
        for n in 0..900 {
            t.insert((n % 3) as u16, ip(n), ALL, (n % 5) as u16, HOUR, Instant(0))
                .unwrap();
        }
        let removed = t.drop_server(1, 2);
        assert_eq!(
            removed,
            (0..900).filter(|n| n % 3 == 1 && n % 5 == 2).count()
        );
        t.check_invariants();
        for n in 0..900u32 {
            let got = t.lookup((n % 3) as u16, ip(n), ALL, Instant(1));
            if n % 3 == 1 && n % 5 == 2 {
                assert_eq!(got, None);
            } else {
                assert_eq!(got, Some((n % 5) as u16));
            }
        }
        assert_eq!(t.drop_service(0), 300);
        t.check_invariants();
    }

    #[test]
    fn sweep_is_bounded_and_complete() {
        let mut t = PersistTable::new(1000, 5);
        for n in 0..1000 {
            t.insert(
                0,
                ip(n),
                ALL,
                0,
                Duration::from_secs(u64::from(n % 2) * 100 + 1),
                Instant(0),
            )
            .unwrap();
        }
        let later = Instant::from_secs(50);
        let mut total = 0;
        let slots = t.slots.len();
        // Each examined slot either advances the cursor or removes an entry.
        for _ in 0..((slots + 500) / 64 + 2) {
            let r = t.expire(later, 64);
            assert!(r <= 64);
            total += r;
        }
        assert_eq!(total, 500);
        assert_eq!(t.len(), 500);
        t.check_invariants();
    }

    #[test]
    fn memory_per_entry() {
        let t = PersistTable::new(1 << 16, 0);
        assert_eq!(core::mem::size_of::<Slot>(), 16);
        assert!(t.bytes_per_entry() <= 32, "{}", t.bytes_per_entry());
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u16, u32, u16, u64),
        Lookup(u16, u32),
        Touch(u16, u32, u64),
        DropServer(u16, u16),
        Expire(usize),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u16..3, 0u32..64, 0u16..4, 1u64..100).prop_map(|(a, b, c, d)| Op::Insert(a, b, c, d)),
            3 => (0u16..3, 0u32..64).prop_map(|(a, b)| Op::Lookup(a, b)),
            1 => (0u16..3, 0u32..64, 1u64..100).prop_map(|(a, b, c)| Op::Touch(a, b, c)),
            1 => (0u16..3, 0u16..4).prop_map(|(a, b)| Op::DropServer(a, b)),
            1 => (0usize..40).prop_map(Op::Expire),
            2 => (0u64..30).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Against a model: bindings are honoured exactly until they
        /// expire, and the table never exceeds its capacity.
        #[test]
        fn matches_model(cap in 1usize..40, ops in proptest::collection::vec(op(), 1..300)) {
            use std::collections::BTreeMap;
            let mut t = PersistTable::new(cap, 11);
            // (service, client) -> (server, expires)
            let mut model: BTreeMap<(u16, u32), (u16, u64)> = BTreeMap::new();
            let mut now = 0u64;
            for op in ops {
                let n = Instant::from_secs(now);
                match op {
                    Op::Insert(s, c, srv, secs) => {
                        model.retain(|_, (_, e)| *e > now * 1000);
                        let r = t.insert(s, ip(c), ALL, srv, Duration::from_secs(secs), n);
                        let exists = model.contains_key(&(s, c));
                        if r.is_ok() {
                            model.insert((s, c), (srv, (now + secs) * 1000));
                        } else {
                            prop_assert!(!exists);
                            prop_assert!(model.len() >= cap, "refused with {} live of {cap}", model.len());
                        }
                    }
                    Op::Lookup(s, c) => {
                        let want = model.get(&(s, c)).filter(|(_, e)| *e > now * 1000).map(|(srv, _)| *srv);
                        prop_assert_eq!(t.lookup(s, ip(c), ALL, n), want);
                    }
                    Op::Touch(s, c, secs) => {
                        let live = model.get(&(s, c)).is_some_and(|(_, e)| *e > now * 1000);
                        prop_assert_eq!(t.touch(s, ip(c), ALL, Duration::from_secs(secs), n), live);
                        if live {
                            model.get_mut(&(s, c)).unwrap().1 = (now + secs) * 1000;
                        }
                    }
                    Op::DropServer(s, srv) => {
                        t.drop_server(s, srv);
                        model.retain(|k, v| !(k.0 == s && v.0 == srv));
                    }
                    Op::Expire(b) => { t.expire(n, b); }
                    Op::Advance(d) => now += d,
                }
                prop_assert!(t.len() <= cap);
                t.check_invariants();
            }
        }
    }
}
