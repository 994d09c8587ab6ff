//! The health board: every real server's check and feedback-agent poll
//! schedules, shared by the kernel's check workers, and what each server's
//! check and agent last said.
//!
//! A worker asks for the most overdue poll ([`Board::take_due`]), runs its
//! [`Dialog`](super::Dialog) over a socket, and reports the verdict (and the
//! agent's reply, for an agent poll) with [`Board::finish`]; the board says
//! what changed about the server — health, weight, administrative state —
//! with the console lines to print. Servers of services without checks
//! (`check_type = "none"`: always up; `"off"`: always down, maintenance)
//! have no check: [`Board::new`] returns their fixed health as changes.
//! The console reads each server's note (last reason, agent) from here.
//!
//! A live apply ([`Board::apply`]) builds the board of the new
//! configuration keeping, for each real server that continues with the same
//! polls, its schedules, streaks and verdicts. Poll identities
//! ([`Job::index`]) are never reused, so a poll still running when the board
//! was replaced finishes into nothing rather than into another server.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::{
    AgentReply, CheckKind, CheckParams, Health, ServerHealth, ServerVerdicts, Verdict,
    check_summary, check_target, fixed_verdict,
};
use crate::config::diff::Plan;
use crate::config::{AdminState, Config, VirtualService};
use crate::time::Instant;

/// What a poll is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The service's health check.
    Check,
    /// The server's feedback agent.
    Agent,
}

/// One poll schedule: a server's check or its agent.
#[derive(Clone, Debug)]
struct Target {
    /// Stable across live applies (see [`Job::index`]).
    id: usize,
    role: Role,
    /// Index into `Board::servers`.
    server: usize,
    ip: Ipv4Addr,
    port: u16,
    params: CheckParams,
    schedule: ServerHealth,
}

/// One real server: what its check and agent said, and what the caller was
/// last told.
#[derive(Clone, Debug)]
struct Server {
    service: usize,
    server: usize,
    name: String,
    ip: Ipv4Addr,
    /// The port its check connects to (for the log), if it has one.
    check_port: Option<u16>,
    weight: u32,
    admin: AdminState,
    verdicts: ServerVerdicts,
    told: Option<Health>,
    /// The down reason last logged: a down server whose reason changes is
    /// logged again, so the log always ends with the current reason.
    told_reason: Option<String>,
    told_weight: u32,
    told_admin: AdminState,
}

/// A poll to run now.
#[derive(Clone, Debug)]
pub struct Job {
    /// Which poll (for [`Board::finish`]); never reused.
    pub index: usize,
    /// Sequence number for [`Dialog::new`](super::Dialog::new).
    pub seq: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub params: CheckParams,
}

/// What changed about a real server, to pass on to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub service: usize,
    pub server: usize,
    /// New health (`true`: up), when it changed or is first known.
    pub up: Option<bool>,
    /// New scheduling weight (a feedback agent's share).
    pub weight: Option<u32>,
    /// New administrative state (an agent's drain or maintenance).
    pub admin: Option<AdminState>,
    /// Event lines for the health log, each with whether it is a warning
    /// (a server down), e.g. `DICOM/PACS1 10.0.0.1 down (connection refused)`
    /// or `VIEWER/V1 agent weight 50 (configured 100)`.
    pub lines: Vec<(bool, String)>,
}

/// Every check and agent poll of a configuration.
#[derive(Clone, Debug, Default)]
pub struct Board {
    targets: Vec<Target>,
    servers: Vec<Server>,
    /// Index in `servers` of each service's first real server.
    first: Vec<usize>,
    /// Each service's check, for `status` (`check=https tls-verify=none`).
    checks: Vec<String>,
    /// The next poll identity.
    next_id: usize,
}

/// Whether the polls of a server of `old` and of `new` run the same way:
/// same check (or fixed health), timing and agent.
fn same_polling(old: &VirtualService, new: &VirtualService) -> bool {
    check_summary(old) == check_summary(new)
        && fixed_verdict(old) == fixed_verdict(new)
        && (
            old.check_interval,
            old.check_rise,
            old.check_fall,
            old.check_timeout,
        ) == (
            new.check_interval,
            new.check_rise,
            new.check_fall,
            new.check_timeout,
        )
}

impl Board {
    /// Polls for every real server of every service, and the fixed health
    /// of servers without checks (as changes for the caller to apply).
    pub fn new(config: &Config, now: Instant) -> (Board, Vec<Change>) {
        let mut b = Board::default();
        let mut fixed = Vec::new();
        for (si, vs) in config.virtual_services.iter().enumerate() {
            b.first.push(b.servers.len());
            b.checks.push(check_summary(vs));
            for (ri, rs) in vs.real_servers.iter().enumerate() {
                let index = b.servers.len();
                b.servers.push(Server {
                    service: si,
                    server: ri,
                    name: format!("{}/{}", vs.label, rs.label),
                    ip: rs.ip,
                    check_port: None,
                    weight: rs.weight,
                    admin: rs.state,
                    verdicts: if rs.agent_port.is_some() {
                        ServerVerdicts::with_agent()
                    } else {
                        ServerVerdicts::default()
                    },
                    told: None,
                    told_reason: None,
                    told_weight: rs.weight,
                    told_admin: rs.state,
                });
                if let Some(port) = rs.agent_port {
                    let seed = (u64::from(u32::from(rs.ip)) << 16) | u64::from(port);
                    let interval = vs.check_interval.duration();
                    b.targets.push(Target {
                        id: b.targets.len(),
                        role: Role::Agent,
                        server: index,
                        ip: rs.ip,
                        port,
                        params: CheckParams {
                            kind: CheckKind::Agent,
                            timeout: vs.check_timeout.duration(),
                        },
                        schedule: ServerHealth::new(interval, 1, 1, Health::Up, now, seed),
                    });
                }
                let params = match fixed_verdict(vs) {
                    Some(v) => Err(v),
                    // A check type that yields no check: always up.
                    None => CheckParams::from_config(vs, rs).ok_or(Verdict::Pass),
                };
                match params {
                    Ok(params) => {
                        let (ip, port) = check_target(vs, rs);
                        if params.kind != CheckKind::Ping {
                            b.servers[index].check_port = Some(port);
                        }
                        b.targets.push(Target {
                            id: b.targets.len(),
                            role: Role::Check,
                            server: index,
                            ip,
                            port,
                            params,
                            schedule: ServerHealth::from_config(vs, rs, now),
                        });
                    }
                    Err(verdict) => {
                        b.servers[index].verdicts.fixed(&verdict);
                        // Always-up servers go up quietly; held-down ones say why.
                        let quiet = verdict.is_pass();
                        fixed.extend(b.tell(index).map(|mut c| {
                            if quiet {
                                c.lines.clear();
                            }
                            c
                        }));
                    }
                }
            }
        }
        b.next_id = b.targets.len();
        (b, fixed)
    }

    /// Replaces this board (of `old`) by the board of `new`, a live apply
    /// matched by `plan`. A real server that continues and is polled the
    /// same way keeps its schedules, streaks, verdicts and agent reply; any
    /// other starts over (health unknown until checked). Returns the
    /// changes for the caller to apply: fixed health of new or changed
    /// servers, and the agent's weight or state where the configured one
    /// changed under an agent that overrides it.
    pub fn apply(&mut self, old: &Config, new: &Config, plan: &Plan, now: Instant) -> Vec<Change> {
        let (mut b, fixed) = Board::new(new, now);
        let mut prev = core::mem::take(self);
        let mut next_id = prev.next_id;
        let mut changes = Vec::new();
        let mut kept_servers = Vec::new();
        for ni in 0..b.servers.len() {
            let (si, ri) = (b.servers[ni].service, b.servers[ni].server);
            let continued = plan.services.get(si).copied().flatten().zip(
                plan.servers
                    .get(si)
                    .and_then(|s| s.get(ri))
                    .copied()
                    .flatten(),
            );
            let kept = continued.and_then(|(os, or)| {
                let same = old
                    .virtual_services
                    .get(os)
                    .zip(new.virtual_services.get(si))
                    .is_some_and(|(o, n)| same_polling(o, n));
                let oi = prev.first.get(os)? + or;
                let o = prev.servers.get(oi)?;
                (same && (o.service, o.server) == (os, or)).then_some(oi)
            });
            // Each of its polls must match one of the old server's.
            let matched: Option<Vec<(usize, usize)>> = kept.and_then(|oi| {
                let olds = prev.targets.iter().filter(|o| o.server == oi).count();
                let news: Vec<usize> = (0..b.targets.len())
                    .filter(|&k| b.targets[k].server == ni)
                    .collect();
                let pairs: Option<Vec<_>> = news
                    .iter()
                    .map(|&k| {
                        let t = &b.targets[k];
                        let p = prev.targets.iter().position(|o| {
                            o.server == oi
                                && (o.role, o.ip, o.port, &o.params)
                                    == (t.role, t.ip, t.port, &t.params)
                        })?;
                        Some((k, p))
                    })
                    .collect();
                pairs.filter(|p| p.len() == olds)
            });
            let (Some(oi), Some(pairs)) = (kept, matched) else {
                // New polls get identities never handed out before.
                for t in b.targets.iter_mut().filter(|t| t.server == ni) {
                    t.id = next_id;
                    next_id += 1;
                }
                continue;
            };
            kept_servers.push(ni);
            for (k, p) in pairs {
                let o = &prev.targets[p];
                b.targets[k].id = o.id;
                b.targets[k].schedule = o.schedule.clone();
            }
            let o = &mut prev.servers[oi];
            let s = &mut b.servers[ni];
            s.verdicts = core::mem::take(&mut o.verdicts);
            s.told = o.told;
            s.told_reason = o.told_reason.take();
            // The engine starts from the configured weight and state: tell
            // it what the agent makes of them, quietly.
            let weight = s.verdicts.weight(s.weight);
            let admin = s.verdicts.admin(s.admin);
            s.told_weight = weight;
            s.told_admin = admin;
            if weight != s.weight || admin != s.admin {
                changes.push(Change {
                    service: si,
                    server: ri,
                    up: None,
                    weight: (weight != s.weight).then_some(weight),
                    admin: (admin != s.admin).then_some(admin),
                    lines: Vec::new(),
                });
            }
        }
        // Fixed health of servers that did not keep theirs.
        changes.extend(fixed.into_iter().filter(|c| {
            !kept_servers
                .iter()
                .any(|&k| (b.servers[k].service, b.servers[k].server) == (c.service, c.server))
        }));
        b.next_id = next_id;
        *self = b;
        changes
    }

    fn find(&self, id: usize) -> Option<usize> {
        self.targets.iter().position(|t| t.id == id)
    }

    /// Number of polls (checks and agents).
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The most overdue poll that is due and not running, marked started.
    pub fn take_due(&mut self, now: Instant) -> Option<Job> {
        let index = self
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.schedule.in_flight() && t.schedule.next_due() <= now)
            .min_by_key(|(_, t)| t.schedule.next_due())
            .map(|(i, _)| i)?;
        let t = &mut self.targets[index];
        let seq = t.schedule.begin(now)?;
        Some(Job {
            index: t.id,
            seq,
            ip: t.ip,
            port: t.port,
            params: t.params.clone(),
        })
    }

    /// Records the verdict of poll `index` (with the agent's reply for an
    /// agent poll that passed); returns what changed about its server.
    pub fn finish(
        &mut self,
        index: usize,
        verdict: Verdict,
        agent: Option<&AgentReply>,
        now: Instant,
    ) -> Option<Change> {
        let i = self.find(index)?;
        let t = &mut self.targets[i];
        t.schedule.finish(now, verdict.clone());
        let (role, server, health) = (t.role, t.server, t.schedule.health());
        let s = self.servers.get_mut(server)?;
        match (role, &verdict, agent) {
            (Role::Check, v, _) => s.verdicts.check_result(health, v),
            (Role::Agent, Verdict::Pass, Some(reply)) => s.verdicts.agent_reply(reply),
            (Role::Agent, Verdict::Fail(why), _) => s.verdicts.agent_failed(why),
            (Role::Agent, Verdict::Pass, None) => {}
        }
        self.tell(server)
    }

    /// What changed about server `i` since the caller was last told.
    fn tell(&mut self, i: usize) -> Option<Change> {
        let s = self.servers.get_mut(i)?;
        let mut c = Change {
            service: s.service,
            server: s.server,
            up: None,
            weight: None,
            admin: None,
            lines: Vec::new(),
        };
        let health = s.verdicts.health();
        let reason = s.verdicts.down_reason();
        if s.told != Some(health) || reason != s.told_reason {
            let up = health == Health::Up;
            if s.told != Some(health) {
                c.up = Some(up);
            }
            let what = match s.check_port {
                Some(port) => format!("{} {}:{port}", s.name, s.ip),
                None => format!("{} {}", s.name, s.ip),
            };
            c.lines.push(match (&reason, s.told) {
                (Some(why), _) => (true, format!("{what} down ({why})")),
                (None, None) => (false, format!("{what} up")),
                (None, Some(_)) => (false, format!("{what} up (recovered)")),
            });
            s.told = Some(health);
            s.told_reason = reason;
        }
        let weight = s.verdicts.weight(s.weight);
        if weight != s.told_weight {
            c.weight = Some(weight);
            c.lines.push((
                false,
                format!("{} agent weight {weight} (configured {})", s.name, s.weight),
            ));
            s.told_weight = weight;
        }
        let admin = s.verdicts.admin(s.admin);
        if admin != s.told_admin {
            c.admin = Some(admin);
            let state = match admin {
                AdminState::Online => "online",
                AdminState::Drain => "drain",
                AdminState::Halt => "halt",
            };
            c.lines.push((false, format!("{} agent {state}", s.name)));
            s.told_admin = admin;
        }
        (c.up.is_some() || c.weight.is_some() || c.admin.is_some() || !c.lines.is_empty())
            .then_some(c)
    }

    /// (polls run, polls failed) of poll `index`.
    pub fn counts(&self, index: usize) -> Option<(u64, u64)> {
        Some(self.targets[self.find(index)?].schedule.counts())
    }

    fn server(&self, service: usize, server: usize) -> Option<&Server> {
        let s = self.servers.get(self.first.get(service)? + server)?;
        (s.service == service && s.server == server).then_some(s)
    }

    /// Why the server's last check failed, until a check passes.
    pub fn last_failure(&self, service: usize, server: usize) -> Option<String> {
        self.server(service, server)?.verdicts.last_failure()
    }

    /// Why real server `server` of `service` is down, when it is.
    pub fn reason(&self, service: usize, server: usize) -> Option<String> {
        self.server(service, server)?.verdicts.down_reason()
    }

    /// What the server's feedback agent said, e.g. `50%,drain (backup window)`.
    pub fn agent(&self, service: usize, server: usize) -> Option<String> {
        Some(self.server(service, server)?.verdicts.agent()?.summary())
    }

    /// The server's note for `status`: `agent=... reason="..."` (empty when
    /// there is nothing to say).
    pub fn note(&self, service: usize, server: usize) -> String {
        let mut out = String::new();
        if let Some(a) = self.agent(service, server) {
            out.push_str("agent=");
            out.push_str(&a);
        }
        if let Some(r) = self.reason(service, server) {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str("reason=\"");
            out.push_str(&r);
            out.push('"');
        }
        out
    }

    /// The service's check for `status`, e.g. `check=https tls-verify=none`.
    pub fn check(&self, service: usize) -> &str {
        self.checks.get(service).map_or("", String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CheckType;
    use crate::health::{FailReason, parse_agent_reply};

    fn config() -> Config {
        let text = include_str!("../../configs/medical.toml");
        crate::config::from_toml(text).expect("example config validates")
    }

    fn fail() -> Verdict {
        Verdict::Fail(FailReason::ConnectFailed)
    }

    #[test]
    fn every_checked_server_has_a_target_and_the_rest_a_fixed_health() {
        let mut c = config();
        c.virtual_services[1].check_type = CheckType::None;
        c.virtual_services[2].check_type = CheckType::Off;
        let (board, fixed) = Board::new(&c, Instant(0));
        let servers: usize = c
            .virtual_services
            .iter()
            .map(|v| v.real_servers.len())
            .sum();
        let up: Vec<_> = fixed
            .iter()
            .filter(|f| f.up == Some(true))
            .map(|f| (f.service, f.server))
            .collect();
        assert_eq!(up, [(1, 0), (1, 1)]);
        let down: Vec<_> = fixed.iter().filter(|f| f.up == Some(false)).collect();
        assert_eq!(down.len(), c.virtual_services[2].real_servers.len());
        let vs = &c.virtual_services[2];
        for f in &down {
            let rs = &vs.real_servers[f.server];
            let want = format!(
                "{}/{} {} down (check_type off (maintenance))",
                vs.label, rs.label, rs.ip
            );
            assert_eq!(f.lines, [(true, want)]);
        }
        assert_eq!(board.len() + fixed.len(), servers);
        assert_eq!(
            board.reason(2, 0).as_deref(),
            Some("check_type off (maintenance)")
        );
        assert_eq!(board.note(1, 0), "");
        assert_eq!(board.check(2), "check=off");
    }

    #[test]
    fn checks_come_due_once_and_report_changes_only() {
        let c = config();
        let (mut board, _) = Board::new(&c, Instant(0));
        let later = Instant(60_000);
        let mut jobs = Vec::new();
        while let Some(j) = board.take_due(later) {
            jobs.push(j);
        }
        assert_eq!(jobs.len(), board.len(), "each due check handed out once");
        assert!(board.take_due(later).is_none(), "none twice while running");
        let first = board
            .finish(jobs[0].index, Verdict::Pass, None, later)
            .unwrap();
        assert_eq!(first.up, Some(true));
        assert!(
            !first.lines[0].0 && first.lines[0].1.ends_with(" up"),
            "{first:?}"
        );
        // The same health again: nothing to tell.
        let again = board.take_due(Instant(200_000)).unwrap();
        assert_eq!(again.index, jobs[0].index);
        assert!(
            board
                .finish(again.index, Verdict::Pass, None, Instant(200_000))
                .is_none()
        );
        // Failures down to `fall` mark it down, with the reason.
        let mut change = None;
        for k in 0..10u64 {
            let now = Instant(300_000 + k * 100_000);
            let Some(j) = board.take_due(now).filter(|j| j.index == jobs[0].index) else {
                continue;
            };
            if let Some(c) = board.finish(j.index, fail(), None, now) {
                change = Some(c);
                break;
            }
        }
        let change = change.expect("marked down");
        assert_eq!(change.up, Some(false));
        assert!(
            change.lines[0].0 && change.lines[0].1.contains("down (TCP connect failed)"),
            "{change:?}"
        );
        assert_eq!(
            (change.service, change.server),
            (first.service, first.server)
        );
        assert_eq!(
            board.reason(change.service, change.server).as_deref(),
            Some("TCP connect failed")
        );
        // Still down for another reason: logged again, health unchanged.
        let now = Instant(2_000_000);
        let j = board.take_due(now).unwrap();
        assert_eq!(j.index, jobs[0].index);
        let refused = Verdict::Fail(FailReason::Refused);
        let c = board.finish(j.index, refused, None, now).unwrap();
        assert_eq!(c.up, None);
        assert!(c.lines[0].1.ends_with("down (connection refused)"), "{c:?}");
        assert_eq!(
            board.last_failure(c.service, c.server).as_deref(),
            Some("connection refused")
        );
        // The last failure is shown until a check passes (the server may
        // still be down, rising).
        let mut passed = false;
        for k in 0..100u64 {
            let now = Instant(5_000_000 + k * 100_000);
            while let Some(j) = board.take_due(now) {
                board.finish(j.index, Verdict::Pass, None, now);
                passed |= j.index == jobs[0].index;
            }
            if passed {
                break;
            }
        }
        assert!(passed);
        assert_eq!(board.last_failure(c.service, c.server), None);
        assert!(board.finish(999, Verdict::Pass, None, later).is_none());
    }

    #[test]
    fn agent_replies_change_weight_state_and_health() {
        let mut c = config();
        c.virtual_services[0].real_servers[0].agent_port = Some(3333);
        c.virtual_services[0].real_servers[0].weight = 200;
        let (mut board, _) = Board::new(&c, Instant(0));
        let checks = board.len();
        let mut now = Instant(10_000);
        let agent = |board: &mut Board, text: &str, now: &mut Instant| loop {
            *now = now.add(crate::time::Duration(1000));
            let Some(j) = board.take_due(*now) else {
                continue;
            };
            if j.params.kind != CheckKind::Agent {
                board.finish(j.index, Verdict::Pass, None, *now);
                continue;
            }
            assert_eq!(
                (j.ip, j.port),
                (c.virtual_services[0].real_servers[0].ip, 3333)
            );
            let reply = parse_agent_reply(text.as_bytes()).unwrap();
            return board.finish(j.index, Verdict::Pass, Some(&reply), *now);
        };
        assert!(checks > 0);
        let ch = agent(&mut board, "50%", &mut now).unwrap();
        assert_eq!((ch.service, ch.server, ch.weight), (0, 0, Some(100)));
        assert!(
            ch.lines.contains(&(
                false,
                "DICOM-Modalities/DICOM1 agent weight 100 (configured 200)".into()
            )),
            "{ch:?}"
        );
        let ch = agent(&mut board, "drain # backup", &mut now).unwrap();
        assert_eq!((ch.weight, ch.admin), (None, Some(AdminState::Drain)));
        assert_eq!(board.note(0, 0), "agent=50%,drain (backup)");
        let ch = agent(&mut board, "down # disk full", &mut now).unwrap();
        assert_eq!(ch.up, Some(false));
        assert_eq!(
            board.reason(0, 0).as_deref(),
            Some("agent says down: disk full")
        );
        let ch = agent(&mut board, "up ready 100%", &mut now).unwrap();
        assert_eq!(
            (ch.up, ch.weight, ch.admin),
            (Some(true), Some(200), Some(AdminState::Online))
        );
        assert_eq!(board.note(0, 0), "agent=100%");
    }
}
