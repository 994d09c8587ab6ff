//! Choosing a real server for a new flow.
//!
//! The scheduler sees a slice of [`RealServerState`] (one per configured
//! real server, in configured order) and returns an index, or `None` when no
//! server may take a new flow — a counted outcome, not an error. A server
//! is eligible when it is online (not draining or halted), not reported
//! down by its health check, has a weight above zero and is not overloaded
//! (see `max_connections`). Existing flows are not the scheduler's
//! business: drained servers keep theirs, and the engine drops a halted
//! server's flows.

use alloc::vec::Vec;
use core::net::Ipv4Addr;

pub use crate::config::{AdminState, Mode, SchedulerKind};
use crate::config::{RealServer, VirtualService};

/// What the health checker last concluded about a real server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Health {
    /// No verdict yet. Eligible, as in keepalived and HAProxy: a freshly
    /// configured server takes traffic until its checks say otherwise.
    #[default]
    Unknown,
    Up,
    /// Never chosen.
    Down,
}

/// The live state of one real server, as the scheduler needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealServerState {
    /// Identity for source hashing (so the mapping does not depend on the
    /// order of servers in the config).
    pub ip: Ipv4Addr,
    pub port: u16,
    pub weight: u32,
    pub admin: AdminState,
    /// Driven by the health checker.
    pub health: Health,
    /// Flows currently tracked to this server; kept by the engine through
    /// [`flow_opened`](Self::flow_opened) / [`flow_closed`](Self::flow_closed).
    pub active: u32,
    pub min_connections: u32,
    /// 0: no limit.
    pub max_connections: u32,
    overloaded: bool,
}

impl RealServerState {
    pub fn new(ip: Ipv4Addr, weight: u32) -> Self {
        RealServerState {
            ip,
            port: 0,
            weight,
            admin: AdminState::Online,
            health: Health::Unknown,
            active: 0,
            min_connections: 0,
            max_connections: 0,
            overloaded: false,
        }
    }

    pub fn from_config(rs: &RealServer) -> Self {
        RealServerState {
            port: rs.port.unwrap_or(0),
            admin: rs.state,
            min_connections: rs.min_connections,
            max_connections: rs.max_connections,
            ..RealServerState::new(rs.ip, rs.weight)
        }
    }

    /// The states of a service's real servers, in configured order.
    pub fn for_service(vs: &VirtualService) -> Vec<RealServerState> {
        vs.real_servers
            .iter()
            .map(RealServerState::from_config)
            .collect()
    }

    /// Whether the server may take a new flow now.
    pub fn accepts_new_flows(&self) -> bool {
        self.admin == AdminState::Online
            && self.health != Health::Down
            && self.weight > 0
            && !self.overloaded
    }

    /// Whether the server is over its connection limit (it stays so until
    /// it falls below `min_connections`, or below the maximum when no
    /// minimum is set: hysteresis like IPVS's thresholds, so a server at
    /// its limit does not flap on every flow).
    pub fn is_overloaded(&self) -> bool {
        self.overloaded
    }

    /// Takes over the live part of `old`, the same server under a new
    /// configuration (a live apply): health, active flows, overload.
    pub fn continue_from(&mut self, old: &RealServerState) {
        self.health = old.health;
        self.active = old.active;
        self.overloaded = old.overloaded;
        self.update_overload();
    }

    /// A flow to this server was opened.
    pub fn flow_opened(&mut self) {
        self.active = self.active.saturating_add(1);
        self.update_overload();
    }

    /// A flow to this server ended (closed, expired or dropped).
    pub fn flow_closed(&mut self) {
        self.active = self.active.saturating_sub(1);
        self.update_overload();
    }

    fn update_overload(&mut self) {
        if self.max_connections == 0 {
            self.overloaded = false;
        } else if self.active >= self.max_connections {
            self.overloaded = true;
        } else if self.overloaded {
            let low = if self.min_connections > 0 {
                self.min_connections
            } else {
                self.max_connections
            };
            if self.active < low {
                self.overloaded = false;
            }
        }
    }
}

/// Scheduling outcomes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScheduleStats {
    /// New flows given a server.
    pub picks: u64,
    /// New flows refused because no server was eligible.
    pub no_server: u64,
}

/// The scheduler of one virtual service. Deterministic: the same inputs
/// give the same choices.
#[derive(Clone, Debug)]
pub struct Scheduler {
    kind: SchedulerKind,
    mode: Mode,
    /// Round robin: where the next scan starts.
    rr_next: usize,
    /// Smooth weighted round robin: each server's running score.
    wrr_current: Vec<i64>,
    pub stats: ScheduleStats,
}

impl Scheduler {
    pub fn new(kind: SchedulerKind, mode: Mode) -> Self {
        Scheduler {
            kind,
            mode,
            rr_next: 0,
            wrr_current: Vec::new(),
            stats: ScheduleStats::default(),
        }
    }

    pub fn for_service(vs: &VirtualService) -> Self {
        Scheduler::new(vs.scheduler, vs.mode)
    }

    pub fn kind(&self) -> SchedulerKind {
        self.kind
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Picks a server for a new flow from `client`.
    pub fn pick(&mut self, servers: &[RealServerState], client: Ipv4Addr) -> Option<usize> {
        let choice = match self.mode {
            Mode::Failover => servers.iter().position(RealServerState::accepts_new_flows),
            Mode::LoadBalanced => match self.kind {
                SchedulerKind::Wlc => least_connection(servers, true),
                SchedulerKind::Lc => least_connection(servers, false),
                SchedulerKind::Rr => self.round_robin(servers),
                SchedulerKind::Wrr => self.smooth_wrr(servers),
                SchedulerKind::Sh => source_hash(servers, client),
            },
        };
        match choice {
            Some(_) => self.stats.picks += 1,
            None => self.stats.no_server += 1,
        }
        choice
    }

    fn round_robin(&mut self, servers: &[RealServerState]) -> Option<usize> {
        let n = servers.len();
        for k in 0..n {
            let i = (self.rr_next + k) % n;
            if servers[i].accepts_new_flows() {
                self.rr_next = (i + 1) % n;
                return Some(i);
            }
        }
        None
    }

    /// nginx's smooth weighted round robin: every eligible server gains its
    /// weight, the highest score wins and pays back the total. Over any
    /// window of `total` picks each server is chosen exactly `weight` times,
    /// interleaved rather than in bursts.
    fn smooth_wrr(&mut self, servers: &[RealServerState]) -> Option<usize> {
        if self.wrr_current.len() != servers.len() {
            self.wrr_current.clear();
            self.wrr_current.resize(servers.len(), 0);
        }
        let mut total: i64 = 0;
        let mut best: Option<usize> = None;
        for (i, s) in servers.iter().enumerate() {
            if !s.accepts_new_flows() {
                // A server that comes back starts fresh, not with a debt.
                self.wrr_current[i] = 0;
                continue;
            }
            let w = i64::from(s.weight);
            self.wrr_current[i] += w;
            total += w;
            if best.is_none_or(|b| self.wrr_current[i] > self.wrr_current[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.wrr_current[b] -= total;
        Some(b)
    }
}

/// Fewest active flows (per unit of weight when `weighted`); ties go to the
/// first in configured order.
fn least_connection(servers: &[RealServerState], weighted: bool) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, s) in servers.iter().enumerate() {
        if !s.accepts_new_flows() {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => {
                let o = &servers[b];
                if weighted {
                    // s.active / s.weight < o.active / o.weight, without division.
                    u64::from(s.active) * u64::from(o.weight)
                        < u64::from(o.active) * u64::from(s.weight)
                } else {
                    s.active < o.active
                }
            }
        };
        if better {
            best = Some(i);
        }
    }
    best
}

/// Weighted rendezvous hashing: each eligible server scores
/// `weight / -ln(h)` with `h` a uniform hash of (client, server) in (0, 1);
/// the highest score wins. A client keeps its server as long as that server
/// stays eligible, and when a server leaves or joins only the clients that
/// belonged to it move. Unkeyed on purpose: both appliances of a clustered
/// pair (and a rebooted appliance) map a client the same way.
fn source_hash(servers: &[RealServerState], client: Ipv4Addr) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, s) in servers.iter().enumerate() {
        if !s.accepts_new_flows() {
            continue;
        }
        let h = mix64(
            (u64::from(u32::from(client)) << 32) ^ u64::from(u32::from(s.ip)),
            u64::from(s.port),
        );
        // 53 random bits → (0, 1), never 0 or 1.
        let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        let score = s.weight as f64 / -ln(u);
        if best.is_none_or(|(_, b)| score > b) {
            best = Some((i, score));
        }
    }
    best.map(|(i, _)| i)
}

/// A 64-bit mix (SplitMix64's finaliser over two words).
fn mix64(a: u64, b: u64) -> u64 {
    let mut z = a ^ b.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Natural logarithm for `x` in (0, 1], good to ~1e-12 (no `libm` in
/// `core`): split x = m · 2^e with m in [1, 2), then
/// ln m = 2·atanh((m−1)/(m+1)) by its series.
fn ln(x: f64) -> f64 {
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut k = 1.0;
    // s ≤ 1/3, so 13 terms leave an error below 1e-14.
    while k < 27.0 {
        sum += term / k;
        term *= s2;
        k += 2.0;
    }
    2.0 * sum + e as f64 * core::f64::consts::LN_2
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn servers(weights: &[u32]) -> Vec<RealServerState> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| RealServerState::new(Ipv4Addr::new(10, 0, 0, 10 + i as u8), w))
            .collect()
    }

    fn client(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(0xC0A8_0000u32.wrapping_add(n.wrapping_mul(2_654_435_761)))
    }

    /// Runs `flows` new flows that never close, returns each server's count.
    fn run(kind: SchedulerKind, servers: &mut [RealServerState], flows: u32) -> Vec<u32> {
        let mut s = Scheduler::new(kind, Mode::LoadBalanced);
        let mut counts = alloc::vec![0u32; servers.len()];
        for n in 0..flows {
            let i = s.pick(servers, client(n)).unwrap();
            servers[i].flow_opened();
            counts[i] += 1;
        }
        counts
    }

    fn assert_shares(counts: &[u32], weights: &[u32], tolerance: f64) {
        let total: u32 = counts.iter().sum();
        let wsum: u32 = weights.iter().sum();
        for (c, w) in counts.iter().zip(weights) {
            let got = *c as f64 / total as f64;
            let want = *w as f64 / wsum as f64;
            assert!(
                (got - want).abs() <= tolerance * want.max(1e-9) || (got - want).abs() < 1e-9,
                "share {got:.4} vs weight share {want:.4} (counts {counts:?}, weights {weights:?})"
            );
        }
    }

    #[test]
    fn ln_is_accurate() {
        for &x in &[1e-300, 1e-9, 0.001, 0.1, 0.5, 0.75, 0.999_999, 1.0] {
            let want = std::primitive::f64::ln(x);
            assert!((ln(x) - want).abs() < 1e-10 * want.abs().max(1.0), "{x}");
        }
    }

    #[test]
    fn smooth_wrr_is_exact_and_interleaved() {
        let mut sv = servers(&[5, 1, 1]);
        let mut s = Scheduler::new(SchedulerKind::Wrr, Mode::LoadBalanced);
        let seq: Vec<usize> = (0..7).map(|_| s.pick(&sv, client(0)).unwrap()).collect();
        // nginx's documented sequence for weights 5,1,1.
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0]);
        sv[0].admin = AdminState::Drain;
        for _ in 0..10 {
            assert_ne!(s.pick(&sv, client(0)), Some(0));
        }
    }

    #[test]
    fn round_robin_cycles_over_eligible() {
        let mut sv = servers(&[1, 1, 1]);
        sv[1].health = Health::Down;
        let mut s = Scheduler::new(SchedulerKind::Rr, Mode::LoadBalanced);
        let seq: Vec<usize> = (0..4).map(|_| s.pick(&sv, client(0)).unwrap()).collect();
        assert_eq!(seq, [0, 2, 0, 2]);
    }

    #[test]
    fn least_connection_prefers_idle() {
        let mut sv = servers(&[100, 100, 100]);
        sv[0].active = 5;
        sv[1].active = 2;
        sv[2].active = 3;
        let mut s = Scheduler::new(SchedulerKind::Lc, Mode::LoadBalanced);
        assert_eq!(s.pick(&sv, client(0)), Some(1));
        // Weighted: 2/100 vs 3/300 → server 2.
        sv[2].weight = 300;
        let mut s = Scheduler::new(SchedulerKind::Wlc, Mode::LoadBalanced);
        assert_eq!(s.pick(&sv, client(0)), Some(2));
    }

    #[test]
    fn failover_takes_first_healthy_in_order() {
        let mut sv = servers(&[100, 100, 100]);
        let mut s = Scheduler::new(SchedulerKind::Wlc, Mode::Failover);
        sv[0].active = 1000;
        assert_eq!(s.pick(&sv, client(1)), Some(0));
        sv[0].health = Health::Down;
        assert_eq!(s.pick(&sv, client(1)), Some(1));
        sv[1].admin = AdminState::Halt;
        assert_eq!(s.pick(&sv, client(1)), Some(2));
        sv[0].health = Health::Up;
        assert_eq!(s.pick(&sv, client(1)), Some(0));
    }

    #[test]
    fn no_server_is_counted() {
        let mut sv = servers(&[100, 0]);
        sv[0].admin = AdminState::Drain;
        for kind in [
            SchedulerKind::Wlc,
            SchedulerKind::Wrr,
            SchedulerKind::Rr,
            SchedulerKind::Lc,
            SchedulerKind::Sh,
        ] {
            let mut s = Scheduler::new(kind, Mode::LoadBalanced);
            assert_eq!(s.pick(&sv, client(3)), None);
            assert_eq!(s.pick(&[], client(3)), None);
            assert_eq!(
                s.stats,
                ScheduleStats {
                    picks: 0,
                    no_server: 2
                }
            );
        }
    }

    #[test]
    fn max_connections_with_hysteresis() {
        let mut sv = servers(&[100, 100]);
        sv[0].max_connections = 3;
        sv[0].min_connections = 1;
        let mut s = Scheduler::new(SchedulerKind::Rr, Mode::Failover);
        for _ in 0..3 {
            assert_eq!(s.pick(&sv, client(0)), Some(0));
            sv[0].flow_opened();
        }
        assert!(sv[0].is_overloaded());
        assert_eq!(s.pick(&sv, client(0)), Some(1));
        sv[0].flow_closed(); // 2 active: still above the low mark
        assert_eq!(s.pick(&sv, client(0)), Some(1));
        sv[0].flow_closed();
        sv[0].flow_closed(); // 0 < 1
        assert_eq!(s.pick(&sv, client(0)), Some(0));
    }

    #[test]
    fn wrr_and_wlc_shares_over_100k_flows() {
        for weights in [
            &[100u32, 100, 100][..],
            &[100, 200, 300],
            &[1, 5, 10, 50],
            &[65535, 1000],
        ] {
            for kind in [SchedulerKind::Wrr, SchedulerKind::Wlc] {
                let mut sv = servers(weights);
                let counts = run(kind, &mut sv, 100_000);
                assert_shares(&counts, weights, 0.05);
            }
        }
    }

    #[test]
    fn source_hash_shares_over_100k_random_clients() {
        for weights in [&[100u32, 100, 100][..], &[100, 200, 300], &[10, 30]] {
            let mut sv = servers(weights);
            let counts = run(SchedulerKind::Sh, &mut sv, 100_000);
            assert_shares(&counts, weights, 0.05);
        }
    }

    #[test]
    fn source_hash_moves_only_the_clients_of_a_removed_server() {
        let mut sv = servers(&[100, 100, 100, 100]);
        let mut s = Scheduler::new(SchedulerKind::Sh, Mode::LoadBalanced);
        let before: Vec<usize> = (0..5000).map(|n| s.pick(&sv, client(n)).unwrap()).collect();
        sv[2].health = Health::Down;
        for (n, &b) in before.iter().enumerate() {
            let after = s.pick(&sv, client(n as u32)).unwrap();
            if b != 2 {
                assert_eq!(after, b, "client {n} moved off a healthy server");
            } else {
                assert_ne!(after, 2);
            }
        }
        // Independent of configured order.
        let mut rev = sv.clone();
        rev.reverse();
        for n in 0..1000 {
            let a = s.pick(&sv, client(n)).unwrap();
            let b = s.pick(&rev, client(n)).unwrap();
            assert_eq!(sv[a].ip, rev[b].ip);
        }
    }

    fn arb_server() -> impl Strategy<Value = RealServerState> {
        (
            0u32..=1000,
            prop_oneof![
                Just(AdminState::Online),
                Just(AdminState::Drain),
                Just(AdminState::Halt)
            ],
            prop_oneof![Just(Health::Unknown), Just(Health::Up), Just(Health::Down)],
            0u32..50,
            0u32..60,
            any::<u32>(),
        )
            .prop_map(|(weight, admin, health, active, max, ip)| {
                let mut s = RealServerState::new(Ipv4Addr::from(ip), weight);
                s.admin = admin;
                s.health = health;
                s.max_connections = max;
                s.active = active;
                s.update_overload();
                s
            })
    }

    fn arb_kind() -> impl Strategy<Value = SchedulerKind> {
        prop_oneof![
            Just(SchedulerKind::Wlc),
            Just(SchedulerKind::Wrr),
            Just(SchedulerKind::Rr),
            Just(SchedulerKind::Lc),
            Just(SchedulerKind::Sh),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(6))]
        /// Over 100k new flows with random weights, wrr and wlc (equal load:
        /// flows never close) give each server its weight share within 5 %.
        #[test]
        fn weighted_shares_hold_for_random_weights(
            weights in proptest::collection::vec(10u32..=1000, 1..8),
        ) {
            for kind in [SchedulerKind::Wrr, SchedulerKind::Wlc] {
                let mut sv = servers(&weights);
                let counts = run(kind, &mut sv, 100_000);
                assert_shares(&counts, &weights, 0.05);
            }
        }
    }

    proptest! {
        /// Halted, draining, down, weight-0 and overloaded servers are never
        /// chosen; `None` only when nothing is eligible.
        #[test]
        fn ineligible_servers_are_never_chosen(
            sv in proptest::collection::vec(arb_server(), 0..12),
            kind in arb_kind(),
            failover in any::<bool>(),
            clients in proptest::collection::vec(any::<u32>(), 1..50),
        ) {
            let mode = if failover { Mode::Failover } else { Mode::LoadBalanced };
            let mut s = Scheduler::new(kind, mode);
            let any_eligible = sv.iter().any(RealServerState::accepts_new_flows);
            for c in clients {
                match s.pick(&sv, Ipv4Addr::from(c)) {
                    Some(i) => {
                        let x = &sv[i];
                        prop_assert!(x.admin == AdminState::Online);
                        prop_assert!(x.health != Health::Down);
                        prop_assert!(x.weight > 0);
                        prop_assert!(x.max_connections == 0 || x.active < x.max_connections);
                        if failover {
                            prop_assert_eq!(Some(i), sv.iter().position(RealServerState::accepts_new_flows));
                        }
                    }
                    None => prop_assert!(!any_eligible),
                }
            }
        }
    }
}
