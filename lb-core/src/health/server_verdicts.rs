//! One real server's health as the console shows it: what its check and
//! its feedback agent last said, combined into up/down with a reason.

use alloc::string::{String, ToString};

use super::agent::{AgentReply, AgentState};
use super::rise_fall::Health;
use super::verdict::{FailReason, Verdict};
use crate::config::AdminState;

/// The check's and the agent's findings about one real server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerVerdicts {
    /// The check's up/down (`None`: no verdict yet, taken as up).
    check: Option<Health>,
    /// Why the last failed check failed (kept while the server is down).
    reason: Option<FailReason>,
    /// Why the last check failed, until one passes.
    last_failure: Option<FailReason>,
    /// Present when the server has an agent.
    agent: Option<AgentState>,
}

impl ServerVerdicts {
    /// A server with a feedback agent.
    pub fn with_agent() -> Self {
        ServerVerdicts {
            agent: Some(AgentState::default()),
            ..ServerVerdicts::default()
        }
    }

    /// Records the check's health after a verdict (`health` from
    /// [`super::ServerHealth`]). A failure's reason is kept; a pass clears it
    /// once the server is up.
    pub fn check_result(&mut self, health: Health, verdict: &Verdict) {
        self.check = Some(health);
        self.last_failure = match verdict {
            Verdict::Fail(r) => Some(r.clone()),
            Verdict::Pass => None,
        };
        match verdict {
            Verdict::Fail(r) => self.reason = Some(r.clone()),
            Verdict::Pass if health == Health::Up => self.reason = None,
            Verdict::Pass => {}
        }
    }

    /// A fixed verdict (`check_type = none` or `off`).
    pub fn fixed(&mut self, verdict: &Verdict) {
        let health = if verdict.is_pass() {
            Health::Up
        } else {
            Health::Down
        };
        self.check_result(health, verdict);
    }

    /// Folds an agent reply in (ignored when the server has no agent).
    pub fn agent_reply(&mut self, reply: &AgentReply) {
        if let Some(a) = &mut self.agent {
            a.apply(reply);
        }
    }

    /// An agent poll that gave nothing: nothing changes but the count.
    pub fn agent_failed(&mut self, why: &FailReason) {
        if let Some(a) = &mut self.agent {
            a.poll_failed(why.to_string());
        }
    }

    pub fn agent(&self) -> Option<&AgentState> {
        self.agent.as_ref()
    }

    /// Whether new flows may go to the server: its check is not down and
    /// its agent does not say down.
    pub fn health(&self) -> Health {
        let agent_down = self.agent.as_ref().is_some_and(|a| !a.up);
        if self.check == Some(Health::Down) || agent_down {
            Health::Down
        } else {
            Health::Up
        }
    }

    /// The weight to schedule with.
    pub fn weight(&self, configured: u32) -> u32 {
        self.agent
            .as_ref()
            .map_or(configured, |a| a.weight(configured))
    }

    /// The administrative state to apply.
    pub fn admin(&self, configured: AdminState) -> AdminState {
        self.agent
            .as_ref()
            .map_or(configured, |a| a.admin_state(configured))
    }

    /// Why the last check failed, until a check passes (the server may be
    /// up, one failure short of its fall, or down and rising).
    pub fn last_failure(&self) -> Option<String> {
        self.last_failure.as_ref().map(|r| r.to_string())
    }

    /// Why the server is down, for `status` and the log; `None` when up.
    pub fn down_reason(&self) -> Option<String> {
        if self.health() == Health::Up {
            return None;
        }
        if self.check == Some(Health::Down)
            && let Some(r) = &self.reason
        {
            return Some(r.to_string());
        }
        self.agent
            .as_ref()
            .and_then(AgentState::down_reason)
            .map(|r| r.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::agent::parse_reply;
    use crate::health::verdict::Phase;

    #[test]
    fn check_and_agent_combine() {
        let mut s = ServerVerdicts::with_agent();
        assert_eq!((s.health(), s.down_reason()), (Health::Up, None));
        let refused = Verdict::Fail(FailReason::Refused);
        s.check_result(Health::Up, &refused);
        assert_eq!(s.down_reason(), None, "one failure short of fall");
        s.check_result(Health::Down, &refused);
        assert_eq!(s.down_reason().as_deref(), Some("connection refused"));
        let timeout = Verdict::Fail(FailReason::Timeout(Phase::Connect));
        s.check_result(Health::Down, &timeout);
        assert_eq!(
            s.down_reason().as_deref(),
            Some("timeout waiting for TCP connect"),
            "the last reason"
        );
        s.check_result(Health::Down, &Verdict::Pass);
        assert_eq!(s.health(), Health::Down, "rising");
        s.check_result(Health::Up, &Verdict::Pass);
        assert_eq!(s.health(), Health::Up);
        s.agent_reply(&parse_reply(b"down # patching").unwrap());
        assert_eq!(s.health(), Health::Down);
        assert_eq!(
            s.down_reason().as_deref(),
            Some("agent says down: patching")
        );
        s.agent_reply(&parse_reply(b"up 25% drain").unwrap());
        assert_eq!(
            (s.health(), s.weight(200), s.admin(AdminState::Online)),
            (Health::Up, 50, AdminState::Drain)
        );
        s.agent_failed(&FailReason::Refused);
        assert_eq!(s.weight(200), 50);
        assert_eq!(s.agent().unwrap().failures, 1);
    }

    #[test]
    fn fixed_verdicts_and_servers_without_agent() {
        let mut s = ServerVerdicts::default();
        s.agent_reply(&parse_reply(b"down").unwrap());
        assert_eq!((s.health(), s.weight(7)), (Health::Up, 7));
        s.fixed(&Verdict::Fail(FailReason::Maintenance));
        assert_eq!(
            s.down_reason().as_deref(),
            Some("check_type off (maintenance)")
        );
        s.fixed(&Verdict::Pass);
        assert_eq!(s.health(), Health::Up);
    }
}
