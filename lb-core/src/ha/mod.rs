//! The clustered pair: two appliances, one of them master of the virtual
//! addresses, the other ready to take over with every L4 connection and
//! persistence binding the master had.
//!
//! * Election: VRRPv3 ([`crate::vrrp`]) on the `[ha] interface`, with the
//!   VIPs and the floating addresses as the virtual router's addresses.
//!   The master answers ARP and ping for them, forwards new flows and
//!   announces them with gratuitous ARP when it takes over (from the
//!   virtual router MAC with `virtual_mac`); the backup does none of that,
//!   and forwards only flows it already knows ([`crate::engine::Engine::set_standby`]).
//! * Replication: the sync link ([`sync`], [`wire`]) carries the master's
//!   connection and persistence tables and its configuration.
//! * Faults a hospital engineer must see: a watched link down, the sync
//!   peer silent, two masters at once, a config serial that differs.
//!
//! [`Pair`] holds that state; the frame path (`crate::datapath`) feeds it
//! frames and time and sends what it asks for.
//!
//! # Layer 7
//! Layer 7 connections are spliced TCP (`crate::splice` when present):
//! their sequence offsets live in the relay, which is not replicated, so a
//! Layer 7 client reconnects after a takeover; the persistence binding it
//! reconnects with is replicated like any other, so it lands on the same
//! real server.

pub mod sync;
pub mod wire;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::config::Config;
use crate::config::ha::{Ha, interface_index};
use crate::engine::Engine;
use crate::mgmt::events::{Category, Outbox, Severity};
use crate::time::{Duration, Instant};
use crate::vrrp::{self, ChecksumMode, Repr, Router, Settings, State};
pub use sync::{Local, Received, SyncLink};

/// Gratuitous ARPs per owned address on taking over, and their spacing
/// (keepalived sends five; three 100 ms apart reach a busy switch).
pub const GARP_COUNT: u8 = 3;
pub const GARP_SPACING: Duration = Duration::from_millis(100);
/// Journal entries the engine keeps for the sync link.
pub const JOURNAL: usize = 4096;

/// Counters beyond the router's and the sync link's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairStats {
    /// Advertisements refused by the wire checks, by [`vrrp::wire::Error`].
    pub bad_adverts: [u64; vrrp::wire::Error::ALL.len()],
    /// Unicast mode: advertisements from an address that is not the peer.
    pub foreign_adverts: u64,
    /// Gratuitous ARPs sent for owned addresses.
    pub garps: u64,
}

/// What the frame path must do after the pair handled something.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Send an advertisement with this priority.
    pub advert: Option<u8>,
    /// Send gratuitous ARP for every owned address now.
    pub announce: bool,
    /// The role changed (the engine's standby follows it).
    pub role_changed: bool,
}

/// The pair's state on this appliance.
pub struct Pair {
    pub router: Router,
    /// NIC of the advertisements.
    pub nic: usize,
    pub mode: ChecksumMode,
    /// Unicast advertisements to this address (else multicast).
    pub peer: Option<Ipv4Addr>,
    pub virtual_mac: bool,
    /// Owned addresses with the NIC they live on: VIPs, then floating ones.
    owned: Vec<(Ipv4Addr, usize)>,
    /// Floating addresses (a subset of `owned`).
    floating: Vec<(Ipv4Addr, usize)>,
    /// NICs whose link must be up (the advertisement NIC included).
    watch: Vec<usize>,
    links_down: u64,
    garps_left: u8,
    next_garp: Instant,
    started: bool,
    /// The sync link and its NIC.
    pub sync: Option<(usize, SyncLink)>,
    /// When the current split brain (another master heard) was last seen.
    pub split_brain_at: Option<Instant>,
    /// The time of the last call (what status reports are relative to).
    now: Instant,
    /// Whether the sync peer was heard lately (for the event on a change).
    sync_alive: bool,
    pub stats: PairStats,
}

impl Pair {
    /// The pair of a validated config (`None` without `[ha]`). `vip_nics`
    /// says on which NIC each VIP lives; `own` is our address on the
    /// advertisement NIC; `boot_id` a random number of this boot.
    pub fn from_config(
        config: &Config,
        vip_nics: &[(Ipv4Addr, usize)],
        own: Option<Ipv4Addr>,
        boot_id: u64,
        now: Instant,
    ) -> Option<Pair> {
        let ha: &Ha = config.ha.as_ref()?;
        let nic = interface_index(config, &ha.interface).unwrap_or(0);
        let mut owned: Vec<(Ipv4Addr, usize)> = ha
            .owned_vips(config)
            .into_iter()
            .map(|v| {
                (
                    v,
                    vip_nics.iter().find(|(a, _)| *a == v).map_or(nic, |x| x.1),
                )
            })
            .collect();
        let floating: Vec<(Ipv4Addr, usize)> = ha
            .floating
            .iter()
            .filter_map(|f| Some((f.address, interface_index(config, &f.interface)?)))
            .collect();
        owned.extend(floating.iter().copied());
        let mut watch = alloc::vec![nic];
        for w in &ha.watch {
            if let Some(i) = interface_index(config, w)
                && !watch.contains(&i)
            {
                watch.push(i);
            }
        }
        let sync = match (&ha.sync_interface, ha.sync_peer, ha.sync_key_bytes()) {
            (Some(s), Some(peer), Some(key)) => interface_index(config, s).map(|n| {
                (
                    n,
                    SyncLink::new(
                        key,
                        peer,
                        ha.sync_port,
                        ha.sync_refresh.duration(),
                        boot_id,
                        now,
                    ),
                )
            }),
            _ => None,
        };
        let router = Router::new(Settings {
            vrid: ha.vrid,
            priority: ha.priority,
            advert_interval_cs: ha.advert_interval,
            preempt: ha.preempt,
            preempt_delay: ha.preempt_delay.duration(),
            address: own.unwrap_or(Ipv4Addr::UNSPECIFIED),
        });
        Some(Pair {
            router,
            nic,
            mode: if ha.checksum_as_v2 {
                ChecksumMode::V2
            } else {
                ChecksumMode::Rfc
            },
            peer: ha.peer,
            virtual_mac: ha.virtual_mac,
            owned,
            floating,
            watch,
            links_down: 0,
            garps_left: 0,
            next_garp: now,
            started: false,
            sync,
            split_brain_at: None,
            now,
            sync_alive: false,
            stats: PairStats::default(),
        })
    }

    pub fn is_master(&self) -> bool {
        self.router.is_master()
    }

    pub fn state(&self) -> State {
        self.router.state()
    }

    /// Owned addresses (VIPs and floating) with their NICs.
    pub fn owned(&self) -> &[(Ipv4Addr, usize)] {
        &self.owned
    }

    /// Whether `ip` is one of the pair's addresses.
    pub fn is_owned_address(&self, ip: Ipv4Addr) -> bool {
        self.owned.iter().any(|(a, _)| *a == ip)
    }

    /// Floating addresses with their NICs.
    pub fn floating(&self) -> &[(Ipv4Addr, usize)] {
        &self.floating
    }

    /// The advertisement this appliance sends with `priority`.
    pub fn advert(&self, priority: u8) -> Repr {
        Repr {
            vrid: self.router.settings().vrid,
            priority,
            max_advert_interval: self.router.settings().advert_interval_cs,
            addrs: self.owned.iter().map(|(a, _)| *a).collect(),
        }
    }

    /// The MAC the owned addresses answer with on `nic` (`own` is the NIC's).
    pub fn owned_mac(&self, own: [u8; 6]) -> [u8; 6] {
        if self.virtual_mac {
            vrrp::wire::virtual_mac(self.router.settings().vrid)
        } else {
            own
        }
    }

    /// Starts the election (once the advertisement NIC has its address).
    pub fn start(&mut self, now: Instant, events: &mut Outbox) -> Actions {
        if self.started {
            return Actions::default();
        }
        self.started = true;
        let out = self.router.start(now);
        self.actions(out, now, events)
    }

    /// Whether the election has started.
    pub fn router_started(&self) -> bool {
        self.started
    }

    /// A link changed; a watched link down is a fault.
    pub fn set_link(&mut self, nic: usize, up: bool, now: Instant, events: &mut Outbox) -> Actions {
        if nic >= 64 {
            return Actions::default();
        }
        let bit = 1u64 << nic;
        let before = self.links_down;
        if up {
            self.links_down &= !bit;
        } else {
            self.links_down |= bit;
        }
        if before == self.links_down || !self.watch.contains(&nic) {
            return Actions::default();
        }
        events.push(
            if up {
                Severity::Notice
            } else {
                Severity::Error
            },
            Category::Pair,
            format!("watched link eth{nic} {}", if up { "up" } else { "down" }),
        );
        let fault = self.watch.iter().any(|&n| self.links_down & (1 << n) != 0);
        let out = self.router.set_fault(fault, now);
        self.actions(out, now, events)
    }

    /// Watched links that are down.
    pub fn links_down(&self) -> impl Iterator<Item = usize> + '_ {
        self.watch
            .iter()
            .copied()
            .filter(|&n| self.links_down & (1 << n) != 0)
    }

    /// An advertisement frame arrived on `nic`.
    pub fn on_advert_frame(
        &mut self,
        nic: usize,
        frame: &[u8],
        now: Instant,
        events: &mut Outbox,
    ) -> Actions {
        if nic != self.nic {
            return Actions::default();
        }
        let adv = match vrrp::wire::parse_frame(frame, self.mode) {
            Ok(a) => a,
            Err(e) => {
                self.stats.bad_adverts[e.index()] += 1;
                return Actions::default();
            }
        };
        if let Some(peer) = self.peer
            && adv.src != peer
            && adv.repr.vrid == self.router.settings().vrid
        {
            self.stats.foreign_adverts += 1;
            return Actions::default();
        }
        let ours = self.advert(0).addrs;
        let matches =
            adv.repr.addrs.len() == ours.len() && ours.iter().all(|a| adv.repr.addrs.contains(a));
        let lower_before = self.router.stats.lower_master_heard;
        let out = self.router.on_advert(adv.src, &adv.repr, matches, now);
        if self.router.stats.lower_master_heard != lower_before {
            if self
                .split_brain_at
                .is_none_or(|t| now.since(t) > Duration::from_secs(5))
            {
                events.push(
                    Severity::Error,
                    Category::Pair,
                    format!(
                        "split brain: {} also claims VRID {} with priority {} (ours {}); announcing our addresses again",
                        adv.src,
                        adv.repr.vrid,
                        adv.repr.priority,
                        self.router.settings().priority
                    ),
                );
            }
            self.split_brain_at = Some(now);
        }
        self.actions(out, now, events)
    }

    /// The time of the last [`Pair::poll`].
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Timers of the election; the gratuitous ARP repeats after a takeover.
    pub fn poll(&mut self, now: Instant, events: &mut Outbox) -> Actions {
        self.now = self.now.max(now);
        let ready = self.sync.as_ref().is_none_or(|(_, s)| s.complete());
        self.router.set_preempt_ready(ready);
        if let Some((nic, link)) = &self.sync {
            let alive = link.peer_alive(now);
            if alive != self.sync_alive {
                self.sync_alive = alive;
                let (sev, what) = if alive {
                    (Severity::Notice, "answers again")
                } else {
                    (Severity::Error, "is silent")
                };
                events.push(
                    sev,
                    Category::Pair,
                    format!("sync link: peer {} on eth{nic} {what}", link.peer),
                );
            }
        }
        let out = self.router.poll(now);
        let mut a = self.actions(out, now, events);
        if self.garps_left > 0 && now >= self.next_garp && self.is_master() {
            self.garps_left -= 1;
            self.next_garp = now.add(GARP_SPACING);
            a.announce = true;
        }
        a
    }

    /// The earliest time [`Pair::poll`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let garp = (self.garps_left > 0).then_some(self.next_garp);
        match (self.router.next_deadline(), garp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn actions(&mut self, out: vrrp::Output, now: Instant, events: &mut Outbox) -> Actions {
        let mut a = Actions {
            advert: out.advert,
            announce: out.announce,
            role_changed: false,
        };
        if let Some((from, to, why)) = out.transition {
            a.role_changed = true;
            let s = self.router.settings();
            // A takeover because the other appliance failed, and any fault,
            // are what an engineer must notice.
            let severity = match (to, why) {
                (_, vrrp::Reason::LinkDown) => Severity::Error,
                (State::Master, vrrp::Reason::MasterDown) => Severity::Warning,
                _ => Severity::Notice,
            };
            events.push(
                severity,
                Category::Pair,
                format!(
                    "{} -> {} (VRID {}, priority {}): {}",
                    from.name(),
                    to.name(),
                    s.vrid,
                    s.priority,
                    why.text()
                ),
            );
            if to == State::Master {
                // The first announcement goes now, the rest spaced.
                self.garps_left = GARP_COUNT.saturating_sub(1);
                self.next_garp = now.add(GARP_SPACING);
            } else {
                self.garps_left = 0;
            }
        }
        a
    }

    /// The role byte of the hello (0 init, 1 backup, 2 master, 3 fault).
    pub fn role_byte(&self) -> u8 {
        match self.state() {
            State::Initialize => 0,
            State::Backup => 1,
            State::Master => 2,
            State::Fault => 3,
        }
    }

    /// What the sync link reports about us.
    pub fn local(&self, serial: u64) -> Local {
        Local {
            role: self.role_byte(),
            priority: self.router.settings().priority,
            master: self.is_master(),
            serial,
        }
    }

    /// Faults to show on the console and the status page (empty: none).
    pub fn faults(&self, now: Instant, serial: u64) -> Vec<String> {
        let mut f = Vec::new();
        for n in self.links_down() {
            f.push(format!("watched link eth{n} is down"));
        }
        if let Some((_, s)) = &self.sync {
            if !s.peer_alive(now) {
                match s.peer_heard() {
                    Some(t) => f.push(format!(
                        "sync link: peer {} silent for {} s",
                        s.peer,
                        now.since(t).millis() / 1000
                    )),
                    None => f.push(format!("sync link: peer {} never heard", s.peer)),
                }
            } else if let Some(h) = s.peer_hello() {
                if h.serial != serial {
                    f.push(format!(
                        "config: this appliance runs serial {serial}, the peer {}",
                        h.serial
                    ));
                }
                if h.role == 2 && self.is_master() {
                    f.push(String::from("both appliances are master"));
                }
            }
        }
        if self
            .split_brain_at
            .is_some_and(|t| now.since(t) < Duration::from_secs(10))
        {
            f.push(String::from(
                "split brain: another master advertised within the last 10 s",
            ));
        }
        f
    }
}

/// The configuration a backup runs after receiving the master's: the
/// master's virtual services, `[l4]` and `[management]` (keys, allow list,
/// syslog, serial), with this appliance's own `[network]` and `[ha]`.
pub fn merge_synced(own: &Config, received: Config) -> Config {
    Config {
        network: own.network.clone(),
        ha: own.ha.clone(),
        ..received
    }
}

/// A [`Pair`]'s engine side: standby unless master, journal while syncing.
pub fn apply_role(pair: &Pair, engine: &mut Engine) {
    engine.set_standby(!pair.is_master());
    if !pair.is_master() {
        engine.clear_journal();
    }
}
