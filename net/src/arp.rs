//! ARP for the L4 data path: the wire format (zero-copy view, in-place
//! reply, request and gratuitous frames) and the neighbour cache with a
//! small queue of frames per unresolved next hop.
//!
//! The stack (smoltcp) answers ARP only for its own address and keeps its
//! own cache; the data path needs MACs of real servers, clients and the
//! gateway for frames it forwards itself, and must answer for every VIP.
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
use lb_core::time::Instant;

pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Ethernet header plus the IPv4-over-Ethernet ARP body.
pub const ARP_FRAME_LEN: usize = 14 + 28;
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

const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;

/// A read-only view of an ARP (IPv4 over Ethernet) frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArpView {
    pub op: u16,
    pub sender_mac: [u8; 6],
    pub sender_ip: Ipv4Addr,
    pub target_mac: [u8; 6],
    pub target_ip: Ipv4Addr,
}

impl ArpView {
    /// `None` unless `frame` is a well-formed IPv4-over-Ethernet ARP frame.
    pub fn parse(frame: &[u8]) -> Option<ArpView> {
        if frame.len() < ARP_FRAME_LEN
            || u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_ARP
        {
            return None;
        }
        let a = &frame[14..ARP_FRAME_LEN];
        // Hardware type Ethernet, protocol IPv4, lengths 6 and 4.
        if a[..6] != [0, 1, 0x08, 0x00, 6, 4] {
            return None;
        }
        let mac = |o: usize| -> [u8; 6] { a[o..o + 6].try_into().unwrap_or([0; 6]) };
        let ip = |o: usize| Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]);
        Some(ArpView {
            op: u16::from_be_bytes([a[6], a[7]]),
            sender_mac: mac(8),
            sender_ip: ip(14),
            target_mac: mac(18),
            target_ip: ip(24),
        })
    }

    pub fn is_request(&self) -> bool {
        self.op == OP_REQUEST
    }
}

/// Writes an ARP frame of operation `op` into `buf` (at least
/// [`ARP_FRAME_LEN`] bytes; the rest, if any, is zeroed padding).
fn write(
    buf: &mut [u8],
    eth_dst: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) {
    buf.fill(0);
    buf[..6].copy_from_slice(&eth_dst);
    buf[6..12].copy_from_slice(&sha);
    buf[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    let a = &mut buf[14..ARP_FRAME_LEN];
    a[..6].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&sha);
    a[14..18].copy_from_slice(&spa.octets());
    a[18..24].copy_from_slice(&tha);
    a[24..28].copy_from_slice(&tpa.octets());
}

/// Turns the request in `frame` into the reply "`ip` is at `mac`", in place.
/// `frame` must have parsed as a request.
pub fn reply_in_place(frame: &mut [u8], req: &ArpView, mac: [u8; 6], ip: Ipv4Addr) {
    let len = frame.len().min(ARP_FRAME_LEN);
    if len < ARP_FRAME_LEN {
        return;
    }
    write(
        &mut frame[..ARP_FRAME_LEN],
        req.sender_mac,
        OP_REPLY,
        mac,
        ip,
        req.sender_mac,
        req.sender_ip,
    );
}

/// A broadcast request "who has `target`? tell `our_ip`".
pub fn request(buf: &mut [u8], our_mac: [u8; 6], our_ip: Ipv4Addr, target: Ipv4Addr) {
    write(buf, BROADCAST, OP_REQUEST, our_mac, our_ip, [0; 6], target);
}

/// A gratuitous ARP (a request for `ip` from `ip`), which updates the
/// neighbours' caches and switches' tables when a VIP comes up.
pub fn gratuitous(buf: &mut [u8], mac: [u8; 6], ip: Ipv4Addr) {
    write(buf, BROADCAST, OP_REQUEST, mac, ip, [0; 6], ip);
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
        if let Some(e) = self.entries.get_mut(&ip) {
            if let Some(mac) = e.fresh_mac(now) {
                let stale = now.0.saturating_sub(e.confirmed.0) >= REFRESH_MS;
                let due = e
                    .last_request
                    .is_none_or(|t| now.0.saturating_sub(t.0) >= RETRY_MS);
                let refresh = stale && due;
                if refresh {
                    e.last_request = Some(now);
                    self.stats.requests_sent += 1;
                }
                return Resolve::Known { mac, refresh };
            }
        } else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const MAC_US: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const IP_A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 10);
    const IP_US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    #[test]
    fn request_round_trips_through_the_view_and_becomes_a_reply() {
        let mut f = [0u8; 60];
        request(&mut f, MAC_A, IP_A, IP_US);
        let v = ArpView::parse(&f).unwrap();
        assert!(v.is_request());
        assert_eq!(
            (v.sender_mac, v.sender_ip, v.target_ip),
            (MAC_A, IP_A, IP_US)
        );
        reply_in_place(&mut f, &v, MAC_US, IP_US);
        let r = ArpView::parse(&f).unwrap();
        assert_eq!(r.op, OP_REPLY);
        assert_eq!((r.sender_mac, r.sender_ip), (MAC_US, IP_US));
        assert_eq!((r.target_mac, r.target_ip), (MAC_A, IP_A));
        assert_eq!(&f[..6], &MAC_A);
        assert_eq!(&f[6..12], &MAC_US);
    }

    #[test]
    fn malformed_frames_do_not_parse() {
        let mut f = [0u8; 60];
        gratuitous(&mut f, MAC_US, IP_US);
        assert!(ArpView::parse(&f[..41]).is_none());
        let mut g = f;
        g[18] = 8; // hardware length
        assert!(ArpView::parse(&g).is_none());
        let mut h = f;
        h[12] = 0x08;
        h[13] = 0x00;
        assert!(ArpView::parse(&h).is_none());
        let v = ArpView::parse(&f).unwrap();
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
}
