//! The frame path's side of the clustered pair ([`crate::ha`]): VRRP
//! advertisements and sync datagrams in and out, the owned addresses
//! (VIPs and floating ones) answered for only while master, gratuitous ARP
//! on takeover, ping replies for owned addresses, and the engine's standby
//! following the role.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr};

use super::arp::Arp;
use super::{Datapath, MIN_FRAME, Transmit, Verdict};
use crate::frame::{ETHERNET_HEADER_LEN, checksum};
use crate::ha::{self, Actions, Received};
use crate::time::Instant;
use crate::vrrp::wire::{self as vwire, Addressing};

const IPV4_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const ICMP_ECHO_REQUEST: u8 = 8;

impl Datapath {
    /// Whether the appliance answers for `ip` (a VIP or a floating
    /// address) now: always without a pair, only as master with one.
    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        match &self.pair {
            None => self.is_vip(ip),
            Some(p) => p.is_master() && (self.is_vip(ip) || p.is_owned_address(ip)),
        }
    }

    /// The MAC the owned addresses on `nic` answer with.
    pub(super) fn owned_mac(&self, nic: usize) -> Option<[u8; 6]> {
        let own = *self.macs.get(nic)?;
        Some(self.pair.as_ref().map_or(own, |p| p.owned_mac(own)))
    }

    /// The owned addresses with their NICs (what `announce_vips` sends
    /// gratuitous ARP for).
    pub(super) fn owned_addresses(&self) -> Vec<(Ipv4Addr, usize)> {
        let mut v = self.vips.clone();
        if let Some(p) = &self.pair {
            for &(a, n) in p.floating() {
                v.push((a, n));
            }
        }
        v
    }

    /// Frames of the pair (advertisements, sync datagrams) and pings to
    /// owned addresses; `None` when the frame is none of these.
    pub(super) fn pair_frame<T: Transmit>(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        now: Instant,
        tx: &mut T,
    ) -> Option<Verdict> {
        if frame.len() < ETHERNET_HEADER_LEN + IPV4_HEADER || frame[12..14] != [0x08, 0x00] {
            return None;
        }
        let proto = frame[ETHERNET_HEADER_LEN + 9];
        if proto == vwire::PROTOCOL {
            let pair = self.pair.as_mut()?;
            let a = pair.on_advert_frame(nic, frame, now, &mut self.events);
            self.pair_actions(a, tx, now);
            return Some(Verdict::Consumed);
        }
        if proto == 17 && self.pair.as_ref().is_some_and(|p| p.sync.is_some()) {
            return self.sync_frame(nic, frame, now);
        }
        if proto == 1 {
            return self.echo_for_owned(nic, frame, now);
        }
        None
    }

    fn sync_frame(&mut self, nic: usize, frame: &[u8], now: Instant) -> Option<Verdict> {
        let (sync_nic, peer, port) = {
            let (n, s) = self.pair.as_ref()?.sync.as_ref()?;
            (*n, s.peer, s.port)
        };
        let own = self.address(sync_nic)?.0;
        let ip = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).ok()?;
        if nic != sync_nic || ip.dst_addr() != own || ip.src_addr() != peer {
            return None;
        }
        let udp = UdpPacket::new_checked(ip.payload()).ok()?;
        if udp.dst_port() != port || !ip.verify_checksum() {
            return None;
        }
        let serial = self.config.management.serial;
        let Datapath { pair, engine, .. } = self;
        let pair = pair.as_mut()?;
        let local = pair.local(serial);
        let (_, link) = pair.sync.as_mut()?;
        if let Received::Config { serial, envelope } =
            link.on_datagram(udp.payload(), engine, &local, now)
        {
            self.synced_config = Some((serial, envelope));
        }
        Some(Verdict::Consumed)
    }

    /// Answers a ping to an owned address (the VIPs and floating addresses
    /// are not the IP stack's) in place, within the stack's echo rate.
    fn echo_for_owned(&mut self, nic: usize, frame: &mut [u8], now: Instant) -> Option<Verdict> {
        let ip = Ipv4Packet::new_checked(&frame[ETHERNET_HEADER_LEN..]).ok()?;
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let hl = usize::from(ip.header_len());
        let total = usize::from(ip.total_len());
        if ip.next_header() != IpProtocol::Icmp
            || !ip.verify_checksum()
            || ip.more_frags()
            || ip.frag_offset() != 0
            || self.is_own(dst)
        {
            return None;
        }
        let icmp = ETHERNET_HEADER_LEN + hl;
        if frame.get(icmp) != Some(&ICMP_ECHO_REQUEST) || total < hl + 8 {
            return None;
        }
        let owned = self.is_vip(dst) || self.pair.as_ref().is_some_and(|p| p.is_owned_address(dst));
        if !owned {
            return None;
        }
        if !self.owns(dst) || !self.guard.echo_allowed(now) {
            self.stats.stack_echo_limited += u64::from(self.owns(dst));
            return Some(Verdict::Consumed);
        }
        let mac = self.owned_mac(nic)?;
        // Ethernet: back to the sender, from the owned address's MAC.
        let (d, s) = frame.split_at_mut(6);
        d.copy_from_slice(&s[..6]);
        s[..6].copy_from_slice(&mac);
        // IPv4: swapped addresses, our TTL, a fresh header checksum.
        let ipb = &mut frame[ETHERNET_HEADER_LEN..ETHERNET_HEADER_LEN + hl];
        ipb[12..16].copy_from_slice(&dst.octets());
        ipb[16..20].copy_from_slice(&src.octets());
        ipb[8] = super::unreachable::TTL;
        ipb[10..12].copy_from_slice(&[0, 0]);
        let c = checksum::compute(ipb);
        ipb[10..12].copy_from_slice(&c.to_be_bytes());
        // ICMP: type 0, checksum adjusted for the type word (RFC 1624).
        let body = &mut frame[icmp..ETHERNET_HEADER_LEN + total];
        let old = u16::from_be_bytes([body[2], body[3]]);
        let mut delta = checksum::Delta::NONE;
        delta.word(u16::from(ICMP_ECHO_REQUEST) << 8, 0);
        body[0] = 0;
        body[2..4].copy_from_slice(&delta.apply(old).to_be_bytes());
        self.stats.owned_echo_replies += 1;
        Some(Verdict::Transmit(nic))
    }

    /// Runs the pair: election timers, gratuitous ARP repeats, the sync
    /// link. Call it at [`Datapath::pair_deadline`] and at least every
    /// 10 ms while the sync link has work. Returns when to call again.
    pub fn poll_pair<T: Transmit>(&mut self, now: Instant, tx: &mut T) -> Option<Instant> {
        let pair = self.pair.as_mut()?;
        let mut acts = Actions::default();
        if !pair.router_started()
            && let Some((own, _)) = self.addrs.get(pair.nic).copied().flatten()
        {
            pair.router.set_address(own);
            let a = pair.start(now, &mut self.events);
            merge(&mut acts, a);
        }
        let a = pair.poll(now, &mut self.events);
        merge(&mut acts, a);
        self.pair_actions(acts, tx, now);
        let next_sync = self.poll_sync(now, tx);
        let pair = self.pair.as_ref()?;
        match (pair.next_deadline(), next_sync) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn poll_sync<T: Transmit>(&mut self, now: Instant, tx: &mut T) -> Option<Instant> {
        let serial = self.config.management.serial;
        let (sync_nic, peer, port) = {
            let (n, s) = self.pair.as_ref()?.sync.as_ref()?;
            (*n, s.peer, s.port)
        };
        let own = self.address(sync_nic).map(|a| a.0);
        let mut out: Vec<Vec<u8>> = Vec::new();
        let next = {
            let Datapath { pair, engine, .. } = self;
            let pair = pair.as_mut()?;
            let local = pair.local(serial);
            let (_, link) = pair.sync.as_mut()?;
            link.poll(engine, &local, now, &mut |d: &[u8]| {
                out.push(d.to_vec());
                true
            })
        };
        let Some(own) = own else {
            return Some(next);
        };
        for d in out {
            let ip_len = IPV4_HEADER + UDP_HEADER + d.len();
            let sent = self.send_ipv4(tx, peer, ip_len, now, |p| {
                write_udp(p, own, peer, port, &d);
            });
            if sent == super::Sent::Dropped
                && let Some((_, link)) = self.pair.as_mut().and_then(|p| p.sync.as_mut())
            {
                link.stats.send_failed += 1;
            }
        }
        Some(next)
    }

    /// Sends what the pair asked for and makes the engine follow the role.
    pub(super) fn pair_actions<T: Transmit>(&mut self, a: Actions, tx: &mut T, now: Instant) {
        let Some(pair) = &self.pair else {
            return;
        };
        if a.role_changed {
            ha::apply_role(pair, &mut self.engine);
        }
        if let Some(priority) = a.advert {
            self.send_advert(priority, tx, now);
        }
        if a.announce {
            self.announce_vips(tx);
            if let Some(p) = self.pair.as_mut() {
                p.stats.garps += 1;
            }
        }
    }

    fn send_advert<T: Transmit>(&mut self, priority: u8, tx: &mut T, now: Instant) {
        let Some(pair) = &self.pair else {
            return;
        };
        let nic = pair.nic;
        let (Some(&mac), Some((own, _))) = (self.macs.get(nic), self.address(nic)) else {
            return;
        };
        let repr = pair.advert(priority);
        let mode = pair.mode;
        // The master advertises from the virtual router MAC when it uses
        // one (RFC 5798 §7.3), so switches learn where it is.
        let src_mac = if priority > 0 {
            pair.owned_mac(mac)
        } else {
            mac
        };
        let (dst, dst_mac) = match pair.peer {
            None => (vwire::MULTICAST_GROUP, vwire::MULTICAST_MAC),
            Some(peer) => match self.arp.known(peer, now) {
                Some((m, refresh)) => {
                    if refresh {
                        self.send_request(tx, nic, peer);
                    }
                    (peer, m)
                }
                None => {
                    // The first advertisements find the peer's MAC first.
                    if self.arp.lookup(peer, now).is_none() {
                        self.send_request(tx, nic, peer);
                    }
                    return;
                }
            },
        };
        let to = Addressing {
            src_mac,
            dst_mac,
            src: own,
            dst,
        };
        let len = vwire::frame_len(&repr).max(MIN_FRAME);
        self.send(tx, nic, len, |b| {
            vwire::emit_frame(b, &to, &repr, mode);
        });
    }

    /// A config the sync link received from the master (serial above
    /// ours), for the caller to decode, merge, store and apply.
    pub fn take_synced_config(&mut self) -> Option<(u64, Vec<u8>)> {
        self.synced_config.take()
    }

    /// Tells the sync link which config envelope to offer the peer (the
    /// running config; call again after every change).
    pub fn offer_config(&mut self, envelope: Vec<u8>) {
        let serial = self.config.management.serial;
        if let Some((_, link)) = self.pair.as_mut().and_then(|p| p.sync.as_mut()) {
            link.set_config(serial, envelope);
        }
    }

    /// A received config was not usable (counted on the sync link).
    pub fn synced_config_refused(&mut self) {
        if let Some((_, link)) = self.pair.as_mut().and_then(|p| p.sync.as_mut()) {
            link.config_refused();
        }
    }

    /// A NIC's link went up or down (watched links fault the pair).
    pub fn set_link<T: Transmit>(&mut self, nic: usize, up: bool, now: Instant, tx: &mut T) {
        let Some(pair) = self.pair.as_mut() else {
            return;
        };
        let a = pair.set_link(nic, up, now, &mut self.events);
        self.pair_actions(a, tx, now);
    }

    /// The appliance stops: a master resigns (priority 0) so the backup
    /// takes over at once.
    pub fn shutdown_pair<T: Transmit>(&mut self, now: Instant, tx: &mut T) {
        let Some(pair) = self.pair.as_mut() else {
            return;
        };
        let out = pair.router.shutdown(now);
        if let Some(p) = out.advert {
            self.send_advert(p, tx, now);
        }
        if let Some(pair) = &self.pair {
            ha::apply_role(pair, &mut self.engine);
        }
    }

    /// Gratuitous ARP for one owned address (from its MAC).
    pub(super) fn garp(&self, ip: Ipv4Addr, nic: usize) -> Option<Arp> {
        Some(Arp::gratuitous(self.owned_mac(nic)?, ip))
    }
}

fn merge(acts: &mut Actions, a: Actions) {
    acts.advert = a.advert.or(acts.advert);
    acts.announce |= a.announce;
    acts.role_changed |= a.role_changed;
}

/// Writes an IPv4 + UDP packet (`packet` is exactly its length).
fn write_udp(packet: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, port: u16, payload: &[u8]) {
    let udp = UdpRepr {
        src_port: port,
        dst_port: port,
    };
    let ip = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: IpProtocol::Udp,
        payload_len: UDP_HEADER + payload.len(),
        hop_limit: 64,
    };
    let caps = ChecksumCapabilities::default();
    let mut p = Ipv4Packet::new_unchecked(&mut *packet);
    ip.emit(&mut p, &caps);
    let mut u = UdpPacket::new_unchecked(&mut packet[IPV4_HEADER..]);
    udp.emit(
        &mut u,
        &IpAddress::Ipv4(src),
        &IpAddress::Ipv4(dst),
        payload.len(),
        |b| b.copy_from_slice(payload),
        &caps,
    );
}
