//! One virtual router's state machine (RFC 5798 §6.4), sans-IO.
//!
//! The caller feeds it received advertisements ([`Router::on_advert`]),
//! link changes ([`Router::set_fault`]) and the time ([`Router::poll`], at
//! or before [`Router::next_deadline`]); it answers with [`Output`]s: send
//! an advertisement, take or give up the addresses. Times are milliseconds
//! of the caller's monotonic clock.
//!
//! Beyond the RFC, as keepalived does and hospital pairs need:
//! * **Preemption delay** and **preemption gate**: a backup of higher
//!   priority takes the master role from a lower one only `preempt_delay`
//!   after it first saw that master, and only while the caller says it may
//!   ([`Router::set_preempt_ready`]: the appliance holds preemption until
//!   it has the current master's connection table, so taking over breaks
//!   no flow).
//! * **Split brain heals itself**: a master that hears a master of lower
//!   priority (both were master while adverts did not pass) answers at
//!   once and announces its addresses again, so neighbours that followed
//!   the other one come back ([`Output::announce`]).
//! * **Fault**: while a watched link is down the router neither holds nor
//!   claims the addresses; a master leaving says so with priority 0, so
//!   the backup takes over after its skew time instead of three intervals.

use core::net::Ipv4Addr;

use super::wire::Repr;
use crate::time::{Duration, Instant};

/// Priority of the address owner (not used by this appliance: its VIPs are
/// never its own interface addresses).
pub const OWNER_PRIORITY: u8 = 255;

/// The virtual router's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub vrid: u8,
    /// 1..=254 (higher wins).
    pub priority: u8,
    /// Advertisement interval, centiseconds (1..=4095).
    pub advert_interval_cs: u16,
    /// Whether a higher-priority backup takes over from a lower master.
    pub preempt: bool,
    /// How long after first hearing a lower-priority master it may.
    pub preempt_delay: Duration,
    /// Our primary address on the link (ties between equal priorities go
    /// to the higher address).
    pub address: Ipv4Addr,
}

/// Where the router is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    Initialize,
    Backup,
    Master,
    /// A watched link is down: neither master nor candidate.
    Fault,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Initialize => "init",
            State::Backup => "backup",
            State::Master => "master",
            State::Fault => "fault",
        }
    }
}

/// Why the router changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Started (as backup, or as master when it owns the addresses).
    Startup,
    /// No advertisement for the master down interval.
    MasterDown,
    /// The master said it stops (priority 0) and the skew time passed.
    MasterLeft,
    /// A master of higher priority (or equal priority and higher address).
    HigherPriority,
    /// We preempted a master of lower priority.
    Preempted,
    /// A watched link went down.
    LinkDown,
    /// The watched links are up again.
    LinkUp,
    /// The appliance stops.
    Shutdown,
}

impl Reason {
    pub fn text(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::MasterDown => "no advertisement from the master",
            Reason::MasterLeft => "the master resigned",
            Reason::HigherPriority => "a master of higher priority",
            Reason::Preempted => "preempting a master of lower priority",
            Reason::LinkDown => "watched link down",
            Reason::LinkUp => "watched links up",
            Reason::Shutdown => "shutdown",
        }
    }
}

/// What the caller must do after a call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Output {
    /// Send one advertisement with this priority now.
    pub advert: Option<u8>,
    /// The state changed: (from, to, why).
    pub transition: Option<(State, State, Reason)>,
    /// Announce the addresses (gratuitous ARP) now: on becoming master,
    /// and when a split brain heals.
    pub announce: bool,
}

impl Output {
    fn merge(&mut self, o: Output) {
        self.advert = o.advert.or(self.advert);
        if o.transition.is_some() {
            self.transition = o.transition;
        }
        self.announce |= o.announce;
    }
}

/// Counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouterStats {
    pub adverts_sent: u64,
    pub adverts_received: u64,
    /// Advertisements for another VRID on the link.
    pub other_vrid: u64,
    /// Advertisements with priority 0 (a master resigning).
    pub priority_zero: u64,
    /// Advertisements whose interval differs from ours (used anyway, as
    /// RFC 5798 says a backup does).
    pub interval_mismatch: u64,
    /// Advertisements whose address list differs from ours.
    pub address_mismatch: u64,
    pub became_master: u64,
    /// Lower-priority masters heard while master (split brain).
    pub lower_master_heard: u64,
}

/// A VRRPv3 virtual router.
#[derive(Clone, Debug)]
pub struct Router {
    settings: Settings,
    state: State,
    /// The master's advertisement interval (ours while master).
    master_interval_cs: u16,
    master_down_at: Option<Instant>,
    advert_at: Option<Instant>,
    /// The master we last heard, and its priority.
    master: Option<(Ipv4Addr, u8)>,
    /// When we first heard the lower-priority master we would preempt.
    lower_master_since: Option<Instant>,
    preempt_ready: bool,
    fault: bool,
    since: Instant,
    pub stats: RouterStats,
}

impl Router {
    pub fn new(settings: Settings) -> Router {
        Router {
            master_interval_cs: settings.advert_interval_cs,
            settings,
            state: State::Initialize,
            master_down_at: None,
            advert_at: None,
            master: None,
            lower_master_since: None,
            preempt_ready: true,
            fault: false,
            since: Instant(0),
            stats: RouterStats::default(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Our primary address changed (DHCP, the console wizard).
    pub fn set_address(&mut self, address: Ipv4Addr) {
        self.settings.address = address;
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn is_master(&self) -> bool {
        self.state == State::Master
    }

    /// When the router entered its state.
    pub fn since(&self) -> Instant {
        self.since
    }

    /// The master last heard (while backup), with its priority.
    pub fn master(&self) -> Option<(Ipv4Addr, u8)> {
        self.master
    }

    /// The advertisement interval in use (the master's while backup).
    pub fn master_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.master_interval_cs) * 10)
    }

    /// Skew_Time: (256 − priority) × Master_Adver_Interval / 256.
    pub fn skew(&self) -> Duration {
        let ms = u64::from(self.master_interval_cs) * 10;
        Duration::from_millis((256 - u64::from(self.settings.priority)) * ms / 256)
    }

    /// Master_Down_Interval: 3 × Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        let ms = u64::from(self.master_interval_cs) * 10;
        Duration::from_millis(3 * ms + self.skew().millis())
    }

    fn own_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.settings.advert_interval_cs) * 10)
    }

    /// Whether preemption may happen (the caller's gate, see the module
    /// documentation). True until set otherwise.
    pub fn set_preempt_ready(&mut self, ready: bool) {
        self.preempt_ready = ready;
    }

    /// The earliest time [`Router::poll`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Master => self.advert_at,
            State::Backup => self.master_down_at,
            State::Initialize | State::Fault => None,
        }
    }

    fn go(&mut self, to: State, why: Reason, now: Instant) -> Output {
        let from = self.state;
        self.state = to;
        self.since = now;
        self.lower_master_since = None;
        let mut out = Output {
            transition: Some((from, to, why)),
            ..Output::default()
        };
        match to {
            State::Master => {
                self.master_interval_cs = self.settings.advert_interval_cs;
                self.master_down_at = None;
                self.advert_at = Some(now.add(self.own_interval()));
                self.master = None;
                self.stats.became_master += 1;
                self.stats.adverts_sent += 1;
                out.advert = Some(self.settings.priority);
                out.announce = true;
            }
            State::Backup => {
                self.advert_at = None;
                self.master_down_at = Some(now.add(self.master_down_interval()));
            }
            State::Initialize | State::Fault => {
                self.advert_at = None;
                self.master_down_at = None;
                self.master = None;
                if from == State::Master {
                    // Resigning: the backup takes over after its skew time.
                    self.stats.adverts_sent += 1;
                    out.advert = Some(0);
                }
            }
        }
        out
    }

    /// Starts the router (RFC 5798 §6.4.1): as master when it owns the
    /// addresses, else as backup. Does nothing while a watched link is down
    /// (it starts once [`Router::set_fault`] clears).
    pub fn start(&mut self, now: Instant) -> Output {
        if self.state != State::Initialize {
            return Output::default();
        }
        if self.fault {
            return self.go(State::Fault, Reason::LinkDown, now);
        }
        let to = if self.settings.priority == OWNER_PRIORITY {
            State::Master
        } else {
            State::Backup
        };
        self.go(to, Reason::Startup, now)
    }

    /// Stops the router (shutdown): a master resigns with priority 0.
    pub fn shutdown(&mut self, now: Instant) -> Output {
        if self.state == State::Initialize {
            return Output::default();
        }
        self.go(State::Initialize, Reason::Shutdown, now)
    }

    /// A watched link went down (`true`) or every one is up (`false`).
    pub fn set_fault(&mut self, fault: bool, now: Instant) -> Output {
        if fault == self.fault {
            return Output::default();
        }
        self.fault = fault;
        match (fault, self.state) {
            (true, State::Backup | State::Master) => self.go(State::Fault, Reason::LinkDown, now),
            (false, State::Fault) => {
                let to = if self.settings.priority == OWNER_PRIORITY {
                    State::Master
                } else {
                    State::Backup
                };
                self.go(to, Reason::LinkUp, now)
            }
            _ => Output::default(),
        }
    }

    /// Timers: sends the master's advertisements, and makes a backup
    /// master when the master is silent.
    pub fn poll(&mut self, now: Instant) -> Output {
        match self.state {
            State::Master => match self.advert_at {
                Some(at) if now >= at => {
                    self.advert_at = Some(now.add(self.own_interval()));
                    self.stats.adverts_sent += 1;
                    Output {
                        advert: Some(self.settings.priority),
                        ..Output::default()
                    }
                }
                _ => Output::default(),
            },
            State::Backup => match self.master_down_at {
                Some(at) if now >= at => {
                    let why = match self.master {
                        Some((_, 0)) => Reason::MasterLeft,
                        Some((_, p)) if p < self.settings.priority && self.settings.preempt => {
                            Reason::Preempted
                        }
                        _ => Reason::MasterDown,
                    };
                    self.go(State::Master, why, now)
                }
                _ => Output::default(),
            },
            State::Initialize | State::Fault => Output::default(),
        }
    }

    /// An advertisement for any VRID arrived from `src` (checked by the
    /// wire layer: TTL, version, checksum). `addrs_match` says whether its
    /// address list is ours (a mismatch is counted, as keepalived does,
    /// but the advertisement still counts).
    pub fn on_advert(
        &mut self,
        src: Ipv4Addr,
        adv: &Repr,
        addrs_match: bool,
        now: Instant,
    ) -> Output {
        if adv.vrid != self.settings.vrid {
            self.stats.other_vrid += 1;
            return Output::default();
        }
        if src == self.settings.address {
            // Our own, looped back by a switch: not a peer.
            return Output::default();
        }
        self.stats.adverts_received += 1;
        if adv.priority == 0 {
            self.stats.priority_zero += 1;
        }
        if adv.max_advert_interval != self.settings.advert_interval_cs {
            self.stats.interval_mismatch += 1;
        }
        if !addrs_match {
            self.stats.address_mismatch += 1;
        }
        let mut out = Output::default();
        match self.state {
            State::Initialize | State::Fault => {}
            State::Backup => {
                let interval = adv.max_advert_interval.max(1);
                if adv.priority == 0 {
                    // The master resigns: take over after the skew time.
                    self.master = Some((src, 0));
                    self.master_down_at = Some(now.add(self.skew()));
                } else if !self.settings.preempt || adv.priority >= self.settings.priority {
                    self.follow(src, adv.priority, interval, now);
                } else {
                    // A master of lower priority: ours to take, once the
                    // delay has passed and the caller allows it.
                    let since = *self.lower_master_since.get_or_insert(now);
                    let delayed = now < since.add(self.settings.preempt_delay);
                    if delayed || !self.preempt_ready {
                        self.follow(src, adv.priority, interval, now);
                    } else {
                        // Discard it (RFC 5798): the down timer runs out.
                        self.master = Some((src, adv.priority));
                    }
                }
            }
            State::Master => {
                let mine = self.settings.priority;
                if adv.priority == 0 {
                    // Someone resigned: make sure the backups hear us.
                    self.advert_at = Some(now.add(self.own_interval()));
                    self.stats.adverts_sent += 1;
                    out.advert = Some(mine);
                } else if adv.priority > mine
                    || (adv.priority == mine && u32::from(src) > u32::from(self.settings.address))
                {
                    out.merge(self.go(State::Backup, Reason::HigherPriority, now));
                    self.follow(src, adv.priority, adv.max_advert_interval.max(1), now);
                } else {
                    // Two masters (split brain): ours wins; say so now and
                    // pull the neighbours back to us.
                    self.stats.lower_master_heard += 1;
                    self.advert_at = Some(now.add(self.own_interval()));
                    self.stats.adverts_sent += 1;
                    out.advert = Some(mine);
                    out.announce = true;
                }
            }
        }
        out
    }

    /// Backup: `src` is the master; its interval sets our timers.
    fn follow(&mut self, src: Ipv4Addr, priority: u8, interval_cs: u16, now: Instant) {
        if priority >= self.settings.priority || !self.settings.preempt {
            self.lower_master_since = None;
        }
        self.master = Some((src, priority));
        self.master_interval_cs = interval_cs;
        self.master_down_at = Some(now.add(self.master_down_interval()));
    }
}
