//! Feedback agents: a small service on the real server that says how much
//! load it wants, polled over TCP.
//!
//! The reply is one line of ASCII words, HAProxy's agent-check protocol:
//! `75%` (the share of the configured weight to use), `ready`, `drain`,
//! `maint` (administrative), `up`, `down`, `failed`, `stopped`
//! (operational), separated by spaces, commas or tabs, optionally followed
//! by `#` and a reason. Loadbalancer.org's feedback agent answers with its
//! idle percentage, with or without `%` (`64`, `64%`), which reads the same
//! way. Each part persists until a later reply changes it, as in HAProxy.
//!
//! What the appliance does with it: the effective weight is the configured
//! weight times the percentage; `drain` and `maint` take no new flows and
//! keep existing ones (a DICOM association is never cut by an agent);
//! `down` takes the server out like a failed check until `up`. An agent
//! that cannot be reached changes nothing: the health check judges
//! reachability.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::dialog::Step;
use super::verdict::{FailReason, Phase, Verdict};
use crate::config::AdminState;

/// Longest reply read (one line).
pub const MAX_REPLY: usize = 1024;
/// Largest percentage honoured (HAProxy's limit: weights scale up to 256%).
pub const MAX_PERCENT: u32 = 256;
/// Longest reason kept.
const MAX_REASON: usize = 64;

/// The administrative part of a reply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AgentAdmin {
    #[default]
    Ready,
    Drain,
    Maint,
}

/// One parsed reply: only what it mentions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentReply {
    pub percent: Option<u32>,
    pub admin: Option<AgentAdmin>,
    /// `Some(true)` for `up`, `Some(false)` for `down`/`failed`/`stopped`.
    pub up: Option<bool>,
    pub reason: String,
}

/// A reply the appliance cannot use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentError {
    /// No word of the protocol in it (the text, truncated).
    NotUnderstood(String),
    /// Longer than [`MAX_REPLY`] without a line end.
    TooLong,
    /// The agent closed without a word.
    Empty,
}

impl fmt::Display for AgentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AgentError::NotUnderstood(t) => write!(f, "reply {t:?} not understood"),
            AgentError::TooLong => write!(f, "reply longer than {MAX_REPLY} bytes"),
            AgentError::Empty => f.write_str("closed without a reply"),
        }
    }
}

fn clip(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(MAX_REASON)])
        .trim()
        .into()
}

/// Parses one reply line (without its line end).
pub fn parse_reply(line: &[u8]) -> Result<AgentReply, AgentError> {
    let (words, reason) = match line.iter().position(|&b| b == b'#') {
        Some(i) => (&line[..i], clip(&line[i + 1..])),
        None => (line, String::new()),
    };
    let mut r = AgentReply {
        reason,
        ..AgentReply::default()
    };
    let mut understood = false;
    for word in words
        .split(|&b| matches!(b, b' ' | b',' | b'\t' | b'\r' | b'\n'))
        .filter(|w| !w.is_empty())
    {
        let w: Vec<u8> = word.to_ascii_lowercase();
        let digits = w.strip_suffix(b"%").unwrap_or(&w);
        if !digits.is_empty() && digits.iter().all(u8::is_ascii_digit) {
            // At most 4 digits matter: anything longer is over the cap.
            let value = if digits.len() > 4 {
                MAX_PERCENT
            } else {
                digits
                    .iter()
                    .fold(0u32, |v, d| v * 10 + u32::from(d - b'0'))
            };
            r.percent = Some(value.min(MAX_PERCENT));
            understood = true;
            continue;
        }
        let known = match w.as_slice() {
            b"ready" => {
                r.admin = Some(AgentAdmin::Ready);
                true
            }
            b"drain" => {
                r.admin = Some(AgentAdmin::Drain);
                true
            }
            b"maint" => {
                r.admin = Some(AgentAdmin::Maint);
                true
            }
            b"up" => {
                r.up = Some(true);
                true
            }
            b"down" | b"failed" | b"stopped" => {
                r.up = Some(false);
                true
            }
            // HAProxy's maxconn:N: the appliance's limits are in the config.
            _ => w.starts_with(b"maxconn:"),
        };
        understood |= known;
    }
    if understood {
        Ok(r)
    } else if words.iter().all(u8::is_ascii_whitespace) {
        Err(AgentError::Empty)
    } else {
        Err(AgentError::NotUnderstood(clip(words)))
    }
}

/// What the agent has said so far about one real server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentState {
    pub percent: u32,
    pub admin: AgentAdmin,
    pub up: bool,
    /// The reason of the last reply that gave one.
    pub reason: String,
    /// Replies applied, and polls that gave nothing usable.
    pub replies: u64,
    pub failures: u64,
    /// Why the last poll gave nothing usable, if it did not.
    pub last_error: Option<String>,
}

impl Default for AgentState {
    fn default() -> Self {
        AgentState {
            percent: 100,
            admin: AgentAdmin::Ready,
            up: true,
            reason: String::new(),
            replies: 0,
            failures: 0,
            last_error: None,
        }
    }
}

impl AgentState {
    /// Folds a reply in: what it mentions replaces what was said before.
    pub fn apply(&mut self, r: &AgentReply) {
        if let Some(p) = r.percent {
            self.percent = p;
        }
        if let Some(a) = r.admin {
            self.admin = a;
        }
        if let Some(up) = r.up {
            self.up = up;
        }
        if !r.reason.is_empty() || r.up.is_some() || r.admin.is_some() {
            self.reason = r.reason.clone();
        }
        self.replies += 1;
        self.last_error = None;
    }

    /// A poll that gave no usable reply: nothing changes but the count.
    pub fn poll_failed(&mut self, why: String) {
        self.failures += 1;
        self.last_error = Some(why);
    }

    /// The weight to schedule with, from the configured one.
    pub fn weight(&self, configured: u32) -> u32 {
        let w = u64::from(configured) * u64::from(self.percent) / 100;
        // A non-zero share of a non-zero weight never rounds to "no flows".
        let w = if w == 0 && self.percent > 0 && configured > 0 {
            1
        } else {
            w
        };
        w.min(u64::from(crate::config::MAX_WEIGHT)) as u32
    }

    /// The administrative state: the configured one unless it is online and
    /// the agent asks for drain or maintenance (never halt: agents do not
    /// cut connections).
    pub fn admin_state(&self, configured: AdminState) -> AdminState {
        match (configured, self.admin) {
            (AdminState::Online, AgentAdmin::Drain | AgentAdmin::Maint) => AdminState::Drain,
            (c, _) => c,
        }
    }

    /// Short text for `status`: e.g. `agent=50%`, `agent=drain`, `agent=down (disk full)`.
    pub fn summary(&self) -> String {
        let mut s = alloc::format!("{}%", self.percent);
        match self.admin {
            AgentAdmin::Ready => {}
            AgentAdmin::Drain => s.push_str(",drain"),
            AgentAdmin::Maint => s.push_str(",maint"),
        }
        if !self.up {
            s.push_str(",down");
        }
        if !self.reason.is_empty() {
            s.push_str(" (");
            s.push_str(&self.reason);
            s.push(')');
        }
        s
    }

    /// Why the server is out, when the agent says it is down.
    pub fn down_reason(&self) -> Option<FailReason> {
        (!self.up).then(|| FailReason::Agent(self.reason.clone()))
    }
}

/// The agent dialog: connect, read one line (or until close), parse.
#[derive(Debug, Default)]
pub(super) struct AgentCheck {
    buf: Vec<u8>,
    reply: Option<AgentReply>,
}

impl AgentCheck {
    pub(super) fn reply(&self) -> Option<&AgentReply> {
        self.reply.as_ref()
    }

    fn finish(&mut self, line: &[u8]) -> Verdict {
        match parse_reply(line) {
            Ok(r) => {
                self.reply = Some(r);
                Verdict::Pass
            }
            Err(e) => Verdict::Fail(FailReason::AgentReply(e)),
        }
    }

    pub(super) fn on_data(&mut self, data: &[u8]) -> Step {
        let room = (MAX_REPLY + 1).saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        if let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let line = core::mem::take(&mut self.buf);
            return Step::Done(self.finish(&line[..end]));
        }
        if self.buf.len() > MAX_REPLY {
            return Step::Done(Verdict::Fail(FailReason::AgentReply(AgentError::TooLong)));
        }
        Step::Wait
    }

    pub(super) fn on_closed(&mut self) -> Verdict {
        let line = core::mem::take(&mut self.buf);
        self.finish(&line)
    }

    pub(super) fn on_timeout(&self) -> Verdict {
        Verdict::Fail(FailReason::Timeout(Phase::AgentReply))
    }
}

#[cfg(test)]
mod tests {
    use super::super::dialog::{Action, CheckKind, CheckParams, Dialog};
    use super::*;
    use crate::time::{Duration, Instant};

    fn reply(s: &str) -> AgentReply {
        parse_reply(s.as_bytes()).unwrap()
    }

    #[test]
    fn haproxy_words_and_lb_org_idle_percentages() {
        assert_eq!(reply("75%").percent, Some(75));
        assert_eq!(reply("64").percent, Some(64), "LB.org's bare idle value");
        assert_eq!(reply("100%\r").percent, Some(100));
        assert_eq!(reply("999%").percent, Some(MAX_PERCENT));
        assert_eq!(reply("99999999999").percent, Some(MAX_PERCENT));
        let r = reply("DRAIN, 10% # backup window");
        assert_eq!(
            (r.admin, r.percent, r.reason.as_str()),
            (Some(AgentAdmin::Drain), Some(10), "backup window")
        );
        let r = reply("down#disk full");
        assert_eq!((r.up, r.reason.as_str()), (Some(false), "disk full"));
        assert_eq!(reply("stopped").up, Some(false));
        assert_eq!(reply("failed").up, Some(false));
        assert_eq!(reply("up ready").up, Some(true));
        assert_eq!(reply("maint").admin, Some(AgentAdmin::Maint));
        assert_eq!(reply("ready maxconn:30").admin, Some(AgentAdmin::Ready));
        assert_eq!(
            parse_reply(b"hello there"),
            Err(AgentError::NotUnderstood("hello there".into()))
        );
        assert_eq!(parse_reply(b"  \r"), Err(AgentError::Empty));
        assert_eq!(parse_reply(b"#only a reason"), Err(AgentError::Empty));
    }

    #[test]
    fn state_persists_between_replies() {
        let mut s = AgentState::default();
        assert_eq!(s.weight(100), 100);
        s.apply(&reply("50%"));
        assert_eq!(s.weight(100), 50);
        assert_eq!(s.weight(3), 1, "never rounds a share down to nothing");
        s.apply(&reply("drain"));
        assert_eq!(s.weight(100), 50, "drain leaves the percentage");
        assert_eq!(s.admin_state(AdminState::Online), AdminState::Drain);
        assert_eq!(s.admin_state(AdminState::Halt), AdminState::Halt);
        s.apply(&reply("ready"));
        assert_eq!(s.admin_state(AdminState::Online), AdminState::Online);
        s.apply(&reply("0%"));
        assert_eq!(s.weight(100), 0);
        s.apply(&reply("down # maintenance reboot"));
        assert_eq!(
            s.down_reason(),
            Some(FailReason::Agent("maintenance reboot".into()))
        );
        assert_eq!(s.summary(), "0%,down (maintenance reboot)");
        s.apply(&reply("up 100%"));
        assert_eq!((s.down_reason(), s.weight(7)), (None, 7));
        assert_eq!(s.summary(), "100%");
        s.poll_failed("refused".into());
        assert_eq!((s.replies, s.failures), (6, 1));
        assert_eq!(s.weight(7), 7, "an unreachable agent changes nothing");
        assert_eq!(
            AgentState {
                percent: MAX_PERCENT,
                ..AgentState::default()
            }
            .weight(crate::config::MAX_WEIGHT),
            crate::config::MAX_WEIGHT
        );
    }

    fn dialog() -> Dialog {
        let p = CheckParams {
            kind: CheckKind::Agent,
            timeout: Duration::from_secs(2),
        };
        let mut d = Dialog::new(&p, 0).unwrap();
        assert_eq!(d.start(Instant(0)), Action::Connect);
        assert_eq!(
            d.on_connected(Instant(1)),
            Action::Wait,
            "the agent speaks first"
        );
        d
    }

    #[test]
    fn dialog_reads_one_line_or_until_close() {
        let mut d = dialog();
        assert_eq!(d.on_data(b"5", Instant(2)), Action::Wait);
        assert_eq!(
            d.on_data(b"0%\nignored", Instant(2)),
            Action::Done(Verdict::Pass)
        );
        assert_eq!(d.agent_reply().unwrap().percent, Some(50));
        let mut d = dialog();
        d.on_data(b"drain", Instant(2));
        assert_eq!(d.on_closed(Instant(3)), Action::Done(Verdict::Pass));
        assert_eq!(d.agent_reply().unwrap().admin, Some(AgentAdmin::Drain));
        let mut d = dialog();
        assert_eq!(
            d.on_closed(Instant(3)),
            Action::Done(Verdict::Fail(FailReason::AgentReply(AgentError::Empty)))
        );
        let mut d = dialog();
        let mut a = Action::Wait;
        for _ in 0..3 {
            a = d.on_data(&[b'x'; 600], Instant(2));
        }
        assert_eq!(
            a,
            Action::Done(Verdict::Fail(FailReason::AgentReply(AgentError::TooLong)))
        );
        let mut d = dialog();
        assert_eq!(
            d.on_timeout(Instant(2000)),
            Action::Done(Verdict::Fail(FailReason::Timeout(Phase::AgentReply)))
        );
    }
}
