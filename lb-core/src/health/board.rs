//! The health board: every real server's check schedule, shared by the
//! kernel's check workers.
//!
//! A worker asks for the most overdue check ([`Board::take_due`]), runs its
//! [`Dialog`](super::Dialog) over a socket, and reports the verdict
//! ([`Board::finish`]); the board says when a server's health changes (or
//! is first known) so the caller can tell the engine, with the console line
//! to print. Servers of services without checks (`check_type = "none"`:
//! always up; `"off"`: always down, maintenance) have no entry: [`fixed`]
//! lists them with their verdict.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::{CheckParams, Health, ServerHealth, Verdict, check_target, fixed_verdict};
use crate::config::Config;
use crate::time::Instant;

/// One real server's checks.
#[derive(Clone, Debug)]
struct Target {
    service: usize,
    server: usize,
    name: String,
    ip: Ipv4Addr,
    port: u16,
    params: CheckParams,
    schedule: ServerHealth,
    /// What the caller was last told.
    told: Option<Health>,
    /// Why the last check failed (`None` once one passes).
    last_failure: Option<String>,
}

/// A check to run now.
#[derive(Clone, Debug)]
pub struct Job {
    /// Which check (for [`Board::finish`]).
    pub index: usize,
    /// Sequence number for [`Dialog::new`](super::Dialog::new).
    pub seq: u32,
    pub ip: Ipv4Addr,
    pub port: u16,
    pub params: CheckParams,
}

/// A change of a real server's health, to pass on to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub service: usize,
    pub server: usize,
    pub up: bool,
    /// The console line, e.g. `health: DICOM/PACS1 10.0.0.1:104 down (TCP connect failed)`.
    pub line: String,
}

/// Every check of a configuration.
#[derive(Clone, Debug, Default)]
pub struct Board {
    targets: Vec<Target>,
}

/// A real server whose health is fixed by its service's check type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fixed {
    pub service: usize,
    pub server: usize,
    pub up: bool,
    /// The console line for a server held down (`off`), e.g.
    /// `health: XDS/XDS1 10.12.2.150 down (maintenance)`.
    pub line: Option<String>,
}

/// Every real server without checks, with its fixed health.
pub fn fixed(config: &Config) -> impl Iterator<Item = Fixed> + '_ {
    config
        .virtual_services
        .iter()
        .enumerate()
        .flat_map(|(si, vs)| {
            let verdict = fixed_verdict(vs);
            vs.real_servers
                .iter()
                .enumerate()
                .filter_map(move |(ri, rs)| {
                    let verdict = match &verdict {
                        Some(v) => v.clone(),
                        // A check type that yields no check: always up.
                        None if CheckParams::from_config(vs, rs).is_none() => Verdict::Pass,
                        None => return None,
                    };
                    let line = match &verdict {
                        Verdict::Fail(why) => Some(format!(
                            "health: {}/{} {} down ({why})",
                            vs.label, rs.label, rs.ip
                        )),
                        Verdict::Pass => None,
                    };
                    Some(Fixed {
                        service: si,
                        server: ri,
                        up: verdict.is_pass(),
                        line,
                    })
                })
        })
}

impl Board {
    /// Checks for every real server of every service that has them.
    pub fn new(config: &Config, now: Instant) -> Board {
        let mut targets = Vec::new();
        for (si, vs) in config.virtual_services.iter().enumerate() {
            if fixed_verdict(vs).is_some() {
                continue;
            }
            for (ri, rs) in vs.real_servers.iter().enumerate() {
                let Some(params) = CheckParams::from_config(vs, rs) else {
                    continue;
                };
                let (ip, port) = check_target(vs, rs);
                targets.push(Target {
                    service: si,
                    server: ri,
                    name: format!("{}/{}", vs.label, rs.label),
                    ip,
                    port,
                    params,
                    schedule: ServerHealth::from_config(vs, rs, now),
                    told: None,
                    last_failure: None,
                });
            }
        }
        Board { targets }
    }

    /// Number of checked real servers.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The most overdue check that is due and not running, marked started.
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
            index,
            seq,
            ip: t.ip,
            port: t.port,
            params: t.params.clone(),
        })
    }

    /// Records the verdict of check `index`; returns the change of health
    /// when there is one (or the first verdict), for the engine and console.
    pub fn finish(&mut self, index: usize, verdict: Verdict, now: Instant) -> Option<Change> {
        let t = self.targets.get_mut(index)?;
        let reason = verdict.clone();
        t.last_failure = match &reason {
            Verdict::Fail(why) => Some(format!("{why}")),
            Verdict::Pass => None,
        };
        t.schedule.finish(now, verdict);
        let health = t.schedule.health();
        if t.told == Some(health) {
            return None;
        }
        let up = health == Health::Up;
        let first = t.told.is_none();
        t.told = Some(health);
        let what = format!("health: {} {}:{}", t.name, t.ip, t.port);
        let line = match (&reason, up) {
            (Verdict::Fail(r), false) => format!("{what} down ({r})"),
            (_, true) if first => format!("{what} up"),
            (_, true) => format!("{what} up (recovered)"),
            (Verdict::Pass, false) => format!("{what} down"),
        };
        Some(Change {
            service: t.service,
            server: t.server,
            up,
            line,
        })
    }

    /// Why the last check of real server `server` of service `service`
    /// failed, if it did.
    pub fn last_failure(&self, service: usize, server: usize) -> Option<&str> {
        self.targets
            .iter()
            .find(|t| t.service == service && t.server == server)?
            .last_failure
            .as_deref()
    }

    /// (checks run, checks failed) of the server behind check `index`.
    pub fn counts(&self, index: usize) -> Option<(u64, u64)> {
        Some(self.targets.get(index)?.schedule.counts())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CheckType;
    use crate::health::FailReason;

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
        let board = Board::new(&c, Instant(0));
        let servers: usize = c
            .virtual_services
            .iter()
            .map(|v| v.real_servers.len())
            .sum();
        let fixed: Vec<_> = fixed(&c).collect();
        let up: Vec<_> = fixed
            .iter()
            .filter(|f| f.up)
            .map(|f| (f.service, f.server))
            .collect();
        assert_eq!(up, [(1, 0), (1, 1)]);
        let down: Vec<_> = fixed.iter().filter(|f| !f.up).collect();
        assert_eq!(down.len(), c.virtual_services[2].real_servers.len());
        assert!(
            down.iter()
                .all(|f| f.line.as_deref().is_some_and(|l| l.contains(" down ("))),
            "{down:?}"
        );
        assert_eq!(board.len() + fixed.len(), servers);
    }

    #[test]
    fn checks_come_due_once_and_report_changes_only() {
        let c = config();
        let mut board = Board::new(&c, Instant(0));
        let later = Instant(60_000);
        let mut jobs = Vec::new();
        while let Some(j) = board.take_due(later) {
            jobs.push(j);
        }
        assert_eq!(jobs.len(), board.len(), "each due check handed out once");
        assert!(board.take_due(later).is_none(), "none twice while running");
        let first = board.finish(jobs[0].index, Verdict::Pass, later).unwrap();
        assert!(first.up && first.line.ends_with(" up"), "{first:?}");
        // The same health again: nothing to tell.
        let again = board.take_due(Instant(200_000)).unwrap();
        assert_eq!(again.index, jobs[0].index);
        assert!(
            board
                .finish(again.index, Verdict::Pass, Instant(200_000))
                .is_none()
        );
        // Failures down to `fall` mark it down, with the reason.
        let mut change = None;
        for k in 0..10u64 {
            let now = Instant(300_000 + k * 100_000);
            let Some(j) = board.take_due(now).filter(|j| j.index == jobs[0].index) else {
                continue;
            };
            if let Some(c) = board.finish(j.index, fail(), now) {
                change = Some(c);
                break;
            }
        }
        let change = change.expect("marked down");
        assert!(!change.up);
        assert!(
            change.line.contains("down (TCP connect failed)"),
            "{change:?}"
        );
        assert_eq!(
            (change.service, change.server),
            (first.service, first.server)
        );
        // The page and status show the last failure until a check passes.
        assert_eq!(
            board.last_failure(change.service, change.server),
            Some("TCP connect failed")
        );
        let mut passed = false;
        for k in 0..100u64 {
            let now = Instant(5_000_000 + k * 100_000);
            while let Some(j) = board.take_due(now) {
                board.finish(j.index, Verdict::Pass, now);
                passed |= j.index == jobs[0].index;
            }
            if passed {
                break;
            }
        }
        assert!(passed);
        assert_eq!(board.last_failure(change.service, change.server), None);
        assert!(board.finish(999, Verdict::Pass, later).is_none());
    }
}
