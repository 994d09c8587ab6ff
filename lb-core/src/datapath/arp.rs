//! ARP for the frame path: the messages it reads and writes (through
//! smoltcp's `ArpPacket`/`ArpRepr` and `EthernetFrame`) and the neighbour
//! cache with a small queue of frames per unresolved next hop.
//!
//! The stack (smoltcp) answers ARP only for its own address and keeps its
//! own cache; the frame path needs MACs of real servers, clients and the
//! gateway for frames it forwards or originates itself, and must answer for
//! every VIP.
//!
//! Cache policy (all bounded, all counted in [`ArpStats`]):
//! * at most [`ArpCache::capacity`] entries; when full, the least recently
//!   confirmed entry without queued frames is evicted; if every entry has
//!   queued frames the new address is not cached (`full`) and its frame is
//!   dropped;
//! * an entry is refreshed by every ARP frame from that address; after
//!   [`REFRESH_MS`] a use sends a new request while the old MAC stays in
//!   use, after [`EXPIRE_MS`] the entry is unresolved again;
//! * an unresolved address is requested at most once per [`RETRY_MS`], at
//!   most [`MAX_TRIES`] times while frames wait; then its queue is dropped
//!   (`unanswered`) and the next frame starts over;
//! * at most [`QUEUE_PER_HOP`] frames wait per address; more are dropped
//!   (`queue_full`).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr,
};

use crate::frame::ETHERNET_HEADER_LEN;
use crate::time::Instant;

/// Ethernet header plus the IPv4-over-Ethernet ARP body.
pub const ARP_FRAME_LEN: usize = ETHERNET_HEADER_LEN + 28;
/// A confirmed entry is re-requested when used after this long.
pub const REFRESH_MS: u64 = 4 * 60 * 1000;
/// A confirmed entry is no longer trusted after this long.
pub const EXPIRE_MS: u64 = 5 * 60 * 1000;
/// Time between requests for an unresolved address.
pub const RETRY_MS: u64 = 1000;
/// Requests sent for an unresolved address before its queue is dropped.
pub const MAX_TRIES: u8 = 3;
/// Frames kept per unresolved address.
pub const QUEUE_PER_HOP: usize = 4;
pub const BROADCAST: [u8; 6] = [0xff; 6];

/// An IPv4-over-Ethernet ARP message (the fields of smoltcp's `ArpRepr`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    pub request: bool,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl Arp {
    /// `None` unless `frame` is an Ethernet frame carrying a well-formed
    /// IPv4-over-Ethernet request or reply.
    pub fn parse(frame: &[u8]) -> Option<Arp> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.ethertype() != EthernetProtocol::Arp {
            return None;
        }
        let packet = ArpPacket::new_checked(eth.payload()).ok()?;
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_hardware_addr,
            target_protocol_addr,
        } = ArpRepr::parse(&packet).ok()?
        else {
            return None;
        };
        let request = match operation {
            ArpOperation::Request => true,
            ArpOperation::Reply => false,
            _ => return None,
        };
        Some(Arp {
            request,
            sender_mac: source_hardware_addr.0,
            sender_ip: source_protocol_addr,
            target_mac: target_hardware_addr.0,
            target_ip: target_protocol_addr,
        })
    }

    /// A broadcast request "who has `target`? tell `ip`".
    pub fn request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Arp {
        Arp {
            request: true,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: [0; 6],
            target_ip: target,
        }
    }

    /// A gratuitous ARP (a request for `ip` from `ip`), which updates the
    /// neighbours' caches and switches' tables when a VIP comes up.
    pub fn gratuitous(mac: [u8; 6], ip: Ipv4Addr) -> Arp {
        Arp::request(mac, ip, ip)
    }

    /// The reply to this request: "`ip` is at `mac`".
    pub fn reply(&self, mac: [u8; 6], ip: Ipv4Addr) -> Arp {
        Arp {
            request: false,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// Where the message goes: requests are broadcast, replies unicast.
    pub fn eth_dst(&self) -> [u8; 6] {
        if self.request {
            BROADCAST
        } else {
            self.target_mac
        }
    }

    /// Writes the frame into `buf` (at least [`ARP_FRAME_LEN`] bytes; the
    /// rest, if any, is zeroed padding). Returns false if `buf` is short.
    pub fn emit(&self, buf: &mut [u8]) -> bool {
        if buf.len() < ARP_FRAME_LEN {
            return false;
        }
        buf.fill(0);
        let mut eth = EthernetFrame::new_unchecked(&mut *buf);
        EthernetRepr {
            src_addr: EthernetAddress(self.sender_mac),
            dst_addr: EthernetAddress(self.eth_dst()),
            ethertype: EthernetProtocol::Arp,
        }
        .emit(&mut eth);
        let mut packet = ArpPacket::new_unchecked(eth.payload_mut());
        ArpRepr::EthernetIpv4 {
            operation: if self.request {
                ArpOperation::Request
            } else {
                ArpOperation::Reply
            },
            source_hardware_addr: EthernetAddress(self.sender_mac),
            source_protocol_addr: self.sender_ip,
            target_hardware_addr: EthernetAddress(self.target_mac),
            target_protocol_addr: self.target_ip,
        }
        .emit(&mut packet);
        true
    }
}

/// Counters of the cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArpStats {
    pub requests_sent: u64,
    pub learned: u64,
    /// Entries evicted to make room.
    pub evicted: u64,
    /// Frames dropped: the table was full of addresses with waiting frames.
    pub full: u64,
    /// Frames dropped: the per-address queue was full.
    pub queue_full: u64,
    /// Frames dropped: the address never answered.
    pub unanswered: u64,
}

#[derive(Debug)]
struct Entry {
    nic: usize,
    mac: Option<[u8; 6]>,
    /// When the MAC was last confirmed by an ARP frame.
    confirmed: Instant,
    last_request: Option<Instant>,
    tries: u8,
    queue: Vec<Vec<u8>>,
}

impl Entry {
    /// A new entry for an address whose MAC is not known yet.
    fn unresolved(nic: usize, now: Instant) -> Self {
        Entry {
            nic,
            mac: None,
            confirmed: now,
            last_request: None,
            tries: 0,
            queue: Vec::new(),
        }
    }

    fn fresh_mac(&self, now: Instant) -> Option<[u8; 6]> {
        let mac = self.mac?;
        (now.0.saturating_sub(self.confirmed.0) < EXPIRE_MS).then_some(mac)
    }
}

/// What the caller must do for a frame towards an address.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolve {
    /// Send it to this MAC; if `refresh`, also send a request for the address.
    Known { mac: [u8; 6], refresh: bool },
    /// Queued (or dropped and counted); if `request`, send a request now.
    Pending { request: bool, queued: bool },
}

/// Neighbour cache of the data path.
#[derive(Debug)]
pub struct ArpCache {
    entries: BTreeMap<Ipv4Addr, Entry>,
    capacity: usize,
    pub stats: ArpStats,
}

impl ArpCache {
    pub fn new(capacity: usize) -> Self {
        ArpCache {
            entries: BTreeMap::new(),
            capacity: capacity.max(1),
            stats: ArpStats::default(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Frames waiting for resolution, over all addresses.
    pub fn queued(&self) -> usize {
        self.entries.values().map(|e| e.queue.len()).sum()
    }

    /// The MAC of `ip`, if confirmed recently enough.
    pub fn lookup(&self, ip: Ipv4Addr, now: Instant) -> Option<[u8; 6]> {
        self.entries.get(&ip)?.fresh_mac(now)
    }

    /// Makes room for one entry; false if every entry holds waiting frames.
    fn make_room(&mut self) -> bool {
        if self.entries.len() < self.capacity {
            return true;
        }
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.queue.is_empty())
            .min_by_key(|(_, e)| e.confirmed.0)
            .map(|(ip, _)| *ip);
        match victim {
            Some(ip) => {
                self.entries.remove(&ip);
                self.stats.evicted += 1;
                true
            }
            None => false,
        }
    }

    /// Records `ip` at `mac` (seen on `nic`) and hands back the frames that
    /// waited for it, with the NIC to send them on. Only addresses already
    /// in the cache, or `always` ones (e.g. requests for our addresses),
    /// create entries, so broadcast chatter does not flush useful ones.
    pub fn learn(
        &mut self,
        nic: usize,
        ip: Ipv4Addr,
        mac: [u8; 6],
        now: Instant,
        always: bool,
    ) -> Option<(usize, Vec<Vec<u8>>)> {
        if ip.is_unspecified() || mac == BROADCAST || mac == [0; 6] {
            return None;
        }
        if !self.entries.contains_key(&ip) {
            if !always || !self.make_room() {
                return None;
            }
            self.entries.insert(ip, Entry::unresolved(nic, now));
        }
        let e = self.entries.get_mut(&ip)?;
        e.nic = nic;
        e.mac = Some(mac);
        e.confirmed = now;
        e.tries = 0;
        e.last_request = None;
        self.stats.learned += 1;
        let out = core::mem::take(&mut e.queue);
        (!out.is_empty()).then_some((e.nic, out))
    }

    /// Resolves `ip` (reached through `nic`) for `frame`: either its MAC, or
    /// the frame is queued (copied) until the address answers.
    pub fn resolve(&mut self, nic: usize, ip: Ipv4Addr, frame: &[u8], now: Instant) -> Resolve {
        match self.known(ip, now) {
            Some((mac, refresh)) => Resolve::Known { mac, refresh },
            None => self.queue(nic, ip, frame, now),
        }
    }

    /// The MAC of `ip` if it is fresh, and whether to send a request to
    /// refresh it now (it is getting old; at most once per [`RETRY_MS`]).
    pub fn known(&mut self, ip: Ipv4Addr, now: Instant) -> Option<([u8; 6], bool)> {
        let e = self.entries.get_mut(&ip)?;
        let mac = e.fresh_mac(now)?;
        let stale = now.0.saturating_sub(e.confirmed.0) >= REFRESH_MS;
        let due = e
            .last_request
            .is_none_or(|t| now.0.saturating_sub(t.0) >= RETRY_MS);
        let refresh = stale && due;
        if refresh {
            e.last_request = Some(now);
            self.stats.requests_sent += 1;
        }
        Some((mac, refresh))
    }

    /// Queues (copies) `frame` until `ip` (reached through `nic`) answers;
    /// call when [`known`](Self::known) had no MAC.
    pub fn queue(&mut self, nic: usize, ip: Ipv4Addr, frame: &[u8], now: Instant) -> Resolve {
        if !self.entries.contains_key(&ip) {
            if !self.make_room() {
                self.stats.full += 1;
                return Resolve::Pending {
                    request: false,
                    queued: false,
                };
            }
            self.entries.insert(ip, Entry::unresolved(nic, now));
        }
        let Some(e) = self.entries.get_mut(&ip) else {
            return Resolve::Pending {
                request: false,
                queued: false,
            };
        };
        // Expired: unresolved again.
        e.mac = None;
        e.nic = nic;
        let queued = if e.queue.len() < QUEUE_PER_HOP {
            e.queue.push(frame.to_vec());
            true
        } else {
            self.stats.queue_full += 1;
            false
        };
        let request = e
            .last_request
            .is_none_or(|t| now.0.saturating_sub(t.0) >= RETRY_MS);
        if request {
            e.last_request = Some(now);
            e.tries = e.tries.saturating_add(1);
            self.stats.requests_sent += 1;
        }
        Resolve::Pending { request, queued }
    }

    /// Periodic work: addresses with waiting frames are requested again
    /// (returned as (nic, address)); those that did not answer
    /// [`MAX_TRIES`] requests lose their queue.
    pub fn poll(&mut self, now: Instant) -> Vec<(usize, Ipv4Addr)> {
        let mut again = Vec::new();
        let mut dropped = 0u64;
        for (ip, e) in self.entries.iter_mut() {
            if e.queue.is_empty() || e.mac.is_some() {
                continue;
            }
            let due = e
                .last_request
                .is_none_or(|t| now.0.saturating_sub(t.0) >= RETRY_MS);
            if !due {
                continue;
            }
            if e.tries >= MAX_TRIES {
                dropped += e.queue.len() as u64;
                e.queue.clear();
                e.tries = 0;
                continue;
            }
            e.tries += 1;
            e.last_request = Some(now);
            again.push((e.nic, *ip));
        }
        self.stats.unanswered += dropped;
        self.stats.requests_sent += again.len() as u64;
        again
    }

    /// (address, MAC if fresh, NIC) of every entry, for the console.
    pub fn entries(
        &self,
        now: Instant,
    ) -> impl Iterator<Item = (Ipv4Addr, Option<[u8; 6]>, usize)> + '_ {
        self.entries
            .iter()
            .map(move |(ip, e)| (*ip, e.fresh_mac(now), e.nic))
    }
}

/// How long the forwarding path trusts a next hop's MAC from
/// [`NextHops`] before asking the neighbour cache again (which also decides
/// when to send a refreshing request).
pub const NEXT_HOP_MS: u64 = 1000;
/// Slots of [`NextHops`] (a power of two).
const NEXT_HOP_SLOTS: usize = 256;

/// The MACs of recently used (NIC, next hop) pairs, in front of the
/// [`ArpCache`] for forwarded frames: one multiply-and-shift and one
/// compare per frame instead of a walk down the neighbour tree.
///
/// Direct-mapped: two hops that share a slot evict each other (a miss
/// only costs the tree lookup). An entry lives at most [`NEXT_HOP_MS`],
/// and [`NextHops::forget`] drops it at once when ARP learns a new MAC for
/// the address, so a moved server or gateway is followed without delay.
#[derive(Debug)]
pub struct NextHops {
    slots: Vec<Option<NextHop>>,
    pub hits: u64,
    pub misses: u64,
}

#[derive(Clone, Copy, Debug)]
struct NextHop {
    nic: usize,
    ip: Ipv4Addr,
    mac: [u8; 6],
    until: Instant,
}

impl Default for NextHops {
    fn default() -> Self {
        NextHops {
            slots: alloc::vec![None; NEXT_HOP_SLOTS],
            hits: 0,
            misses: 0,
        }
    }
}

fn slot(nic: usize, ip: Ipv4Addr) -> usize {
    let k = u64::from(u32::from(ip)) ^ ((nic as u64) << 32);
    (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as usize % NEXT_HOP_SLOTS
}

impl NextHops {
    /// The MAC of `ip` through `nic`, if cached and not older than
    /// [`NEXT_HOP_MS`].
    pub fn get(&mut self, nic: usize, ip: Ipv4Addr, now: Instant) -> Option<[u8; 6]> {
        match self.slots[slot(nic, ip)] {
            Some(h) if h.nic == nic && h.ip == ip && now.0 < h.until.0 => {
                self.hits += 1;
                Some(h.mac)
            }
            _ => {
                self.misses += 1;
                None
            }
        }
    }

    /// Caches `mac` for `ip` through `nic` (the neighbour cache just
    /// confirmed it).
    pub fn put(&mut self, nic: usize, ip: Ipv4Addr, mac: [u8; 6], now: Instant) {
        self.slots[slot(nic, ip)] = Some(NextHop {
            nic,
            ip,
            mac,
            until: Instant(now.0.saturating_add(NEXT_HOP_MS)),
        });
    }

    /// Drops whatever is cached for `ip` (on every NIC).
    pub fn forget(&mut self, ip: Ipv4Addr) {
        for h in self.slots.iter_mut() {
            if h.is_some_and(|h| h.ip == ip) {
                *h = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_US: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
    const IP_US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn request_round_trips_through_smoltcp_and_becomes_a_reply() {
        let mut f = [0u8; 60];
        assert!(Arp::request(MAC_A, IP_A, IP_US).emit(&mut f));
        assert_eq!(&f[..6], &BROADCAST);
        let v = Arp::parse(&f).unwrap();
        assert!(v.request);
        assert_eq!(
            (v.sender_mac, v.sender_ip, v.target_ip),
            (MAC_A, IP_A, IP_US)
        );
        assert!(v.reply(MAC_US, IP_US).emit(&mut f));
        let r = Arp::parse(&f).unwrap();
        assert!(!r.request);
        assert_eq!((r.sender_mac, r.sender_ip), (MAC_US, IP_US));
        assert_eq!((r.target_mac, r.target_ip), (MAC_A, IP_A));
        assert_eq!(&f[..6], &MAC_A);
        assert_eq!(&f[6..12], &MAC_US);
        assert!(f[ARP_FRAME_LEN..].iter().all(|&b| b == 0), "zero padding");
        assert!(!v.emit(&mut f[..ARP_FRAME_LEN - 1]), "short buffer refused");
    }

    #[test]
    fn malformed_frames_do_not_parse() {
        let mut f = [0u8; 60];
        Arp::gratuitous(MAC_US, IP_US).emit(&mut f);
        assert!(Arp::parse(&f[..41]).is_none());
        let mut g = f;
        g[18] = 8; // hardware length
        assert!(Arp::parse(&g).is_none());
        let mut h = f;
        h[12] = 0x08;
        h[13] = 0x00;
        assert!(Arp::parse(&h).is_none());
        let mut o = f;
        o[21] = 9; // operation
        assert!(Arp::parse(&o).is_none());
        let v = Arp::parse(&f).unwrap();
        assert_eq!((v.sender_ip, v.target_ip), (IP_US, IP_US));
    }

    #[test]
    fn unresolved_frames_wait_and_leave_when_the_answer_comes() {
        let mut c = ArpCache::new(8);
        let t = Instant(1000);
        assert_eq!(
            c.resolve(1, IP_A, &[1], t),
            Resolve::Pending {
                request: true,
                queued: true
            }
        );
        // Rate limited: no second request within RETRY_MS.
        assert_eq!(
            c.resolve(1, IP_A, &[2], Instant(1100)),
            Resolve::Pending {
                request: false,
                queued: true
            }
        );
        for i in 0..2 {
            c.resolve(1, IP_A, &[3 + i], Instant(1200));
        }
        assert_eq!(
            c.resolve(1, IP_A, &[9], Instant(1300)),
            Resolve::Pending {
                request: false,
                queued: false
            }
        );
        assert_eq!(c.stats.queue_full, 1);
        let (nic, frames) = c.learn(1, IP_A, MAC_A, Instant(1400), false).unwrap();
        assert_eq!(nic, 1);
        assert_eq!(frames, vec![vec![1], vec![2], vec![3], vec![4]]);
        assert_eq!(
            c.resolve(1, IP_A, &[5], Instant(1500)),
            Resolve::Known {
                mac: MAC_A,
                refresh: false
            }
        );
    }

    #[test]
    fn retries_then_gives_up_on_a_silent_address() {
        let mut c = ArpCache::new(8);
        c.resolve(0, IP_A, &[1], Instant(0));
        assert!(c.poll(Instant(500)).is_empty());
        assert_eq!(c.poll(Instant(1000)), vec![(0, IP_A)]);
        assert_eq!(c.poll(Instant(2000)), vec![(0, IP_A)]);
        assert!(c.poll(Instant(3000)).is_empty());
        assert_eq!(c.stats.unanswered, 1);
        assert_eq!(c.queued(), 0);
    }

    #[test]
    fn entries_refresh_then_expire() {
        let mut c = ArpCache::new(8);
        c.learn(0, IP_A, MAC_A, Instant(0), true);
        assert_eq!(
            c.resolve(0, IP_A, &[], Instant(REFRESH_MS)),
            Resolve::Known {
                mac: MAC_A,
                refresh: true
            }
        );
        assert_eq!(
            c.resolve(0, IP_A, &[], Instant(REFRESH_MS + 10)),
            Resolve::Known {
                mac: MAC_A,
                refresh: false
            }
        );
        assert_eq!(c.lookup(IP_A, Instant(EXPIRE_MS)), None);
        assert!(matches!(
            c.resolve(0, IP_A, &[7], Instant(EXPIRE_MS)),
            Resolve::Pending { queued: true, .. }
        ));
    }

    #[test]
    fn a_full_cache_evicts_idle_entries_but_never_waiting_ones() {
        let mut c = ArpCache::new(2);
        let ip = |n| Ipv4Addr::new(10, 0, 0, n);
        c.learn(0, ip(1), MAC_A, Instant(10), true);
        c.resolve(0, ip(2), &[2], Instant(20));
        // ip(1) is idle and oldest: evicted for ip(3).
        c.resolve(0, ip(3), &[3], Instant(30));
        assert_eq!(c.stats.evicted, 1);
        assert_eq!(c.lookup(ip(1), Instant(40)), None);
        // Both remaining entries hold frames: ip(4) cannot be cached.
        assert_eq!(
            c.resolve(0, ip(4), &[4], Instant(40)),
            Resolve::Pending {
                request: false,
                queued: false
            }
        );
        assert_eq!(c.stats.full, 1);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn chatter_does_not_create_entries_unless_asked() {
        let mut c = ArpCache::new(2);
        assert!(c.learn(0, IP_A, MAC_A, Instant(0), false).is_none());
        assert!(c.is_empty());
        c.learn(0, IP_A, BROADCAST, Instant(0), true);
        assert!(c.is_empty());
    }

    #[test]
    fn next_hops_expire_and_forget() {
        let mut h = NextHops::default();
        let ip = Ipv4Addr::new(10, 0, 0, 7);
        assert_eq!(h.get(1, ip, Instant(0)), None);
        h.put(1, ip, MAC_A, Instant(0));
        assert_eq!(h.get(1, ip, Instant(10)), Some(MAC_A));
        assert_eq!(h.get(0, ip, Instant(10)), None, "per NIC");
        assert_eq!(h.get(1, ip, Instant(NEXT_HOP_MS)), None, "expired");
        h.put(1, ip, MAC_A, Instant(0));
        h.forget(ip);
        assert_eq!(h.get(1, ip, Instant(1)), None);
        assert_eq!((h.hits, h.misses), (1, 4));
    }
}
