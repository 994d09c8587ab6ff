//! The check dialog every kind shares: connect, request, answer, deadline.

use alloc::vec::Vec;
use core::fmt;

use super::dicom::{DicomCheck, DicomParams};
use super::hl7::{Hl7Check, Hl7Params};
use super::http::{HttpCheck, HttpParams};
use super::verdict::{FailReason, Phase, Verdict};
use crate::time::{Duration, Instant};

/// What the check talks once connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Pass as soon as the TCP connection is established.
    Tcp,
    /// HTTP/1.1 GET over plain TCP.
    Http(HttpParams),
    /// The same HTTP dialog; the caller puts TLS between it and TCP.
    Https(HttpParams),
    /// DICOM association + C-ECHO + release.
    Dicom(DicomParams),
    /// HL7 v2 message over MLLP, expecting an accepting ACK.
    Hl7(Hl7Params),
}

/// Parameters of one check: what to talk and how long it may take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckParams {
    pub kind: CheckKind,
    /// From `start` to the verdict, connect included.
    pub timeout: Duration,
}

/// Parameters that cannot make a valid request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamsError {
    ZeroTimeout,
    /// A field is empty, too long or holds bytes it must not; names the field.
    BadField(&'static str),
}

impl fmt::Display for ParamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamsError::ZeroTimeout => f.write_str("health check timeout must not be zero"),
            ParamsError::BadField(name) => write!(f, "health check field `{name}` is invalid"),
        }
    }
}

impl CheckParams {
    /// Checks that the parameters make a valid request (config validation
    /// uses this too).
    pub fn validate(&self) -> Result<(), ParamsError> {
        if self.timeout.millis() == 0 {
            return Err(ParamsError::ZeroTimeout);
        }
        match &self.kind {
            CheckKind::Tcp => Ok(()),
            CheckKind::Http(p) | CheckKind::Https(p) => p.validate(),
            CheckKind::Dicom(p) => p.validate(),
            CheckKind::Hl7(p) => p.validate(),
        }
    }
}

/// What the caller must do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Open the TCP connection to the check address and port.
    Connect,
    /// Write these bytes to the connection, then keep reading.
    Send(Vec<u8>),
    /// Nothing to do until more bytes arrive, the peer closes or the deadline.
    Wait,
    /// The check is over: close the connection (if open) and record this.
    Done(Verdict),
}

/// The protocol spoken once connected.
#[derive(Debug)]
enum Protocol {
    Tcp,
    Http(HttpCheck),
    Dicom(DicomCheck),
    Hl7(Hl7Check),
}

/// What a protocol machine answers to bytes from the peer.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    Send(Vec<u8>),
    Wait,
    Done(Verdict),
}

#[derive(Debug)]
enum State {
    Idle,
    Connecting,
    Connected,
    Done(Verdict),
}

/// One health check of one real server, driven by the caller's events.
#[derive(Debug)]
pub struct Dialog {
    protocol: Protocol,
    timeout: Duration,
    deadline: Option<Instant>,
    tls: bool,
    state: State,
}

impl Dialog {
    /// A check ready to `start`. `seq` numbers the checks of one server so
    /// each request is fresh (HL7 control ID, DICOM message ID).
    pub fn new(params: &CheckParams, seq: u32) -> Result<Self, ParamsError> {
        params.validate()?;
        let (protocol, tls) = match &params.kind {
            CheckKind::Tcp => (Protocol::Tcp, false),
            CheckKind::Http(p) => (Protocol::Http(HttpCheck::new(p)), false),
            CheckKind::Https(p) => (Protocol::Http(HttpCheck::new(p)), true),
            CheckKind::Dicom(p) => (Protocol::Dicom(DicomCheck::new(p, seq)), false),
            CheckKind::Hl7(p) => (Protocol::Hl7(Hl7Check::new(p, seq)), false),
        };
        Ok(Dialog {
            protocol,
            timeout: params.timeout,
            deadline: None,
            tls,
            state: State::Idle,
        })
    }

    /// Whether the caller must run TLS between this dialog and TCP.
    pub fn needs_tls(&self) -> bool {
        self.tls
    }

    /// When the check times out; `None` before `start`.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The verdict, once the check is over.
    pub fn verdict(&self) -> Option<&Verdict> {
        match &self.state {
            State::Done(v) => Some(v),
            _ => None,
        }
    }

    /// Begins the check: the deadline starts now.
    pub fn start(&mut self, now: Instant) -> Action {
        match self.state {
            State::Idle => {
                self.deadline = Some(now.add(self.timeout));
                self.state = State::Connecting;
                Action::Connect
            }
            _ => self.current(),
        }
    }

    /// The TCP connection (and TLS, if any) is established.
    pub fn on_connected(&mut self, now: Instant) -> Action {
        if let Some(a) = self.expired(now) {
            return a;
        }
        if !matches!(self.state, State::Connecting) {
            return self.current();
        }
        self.state = State::Connected;
        let step = match &mut self.protocol {
            Protocol::Tcp => Step::Done(Verdict::Pass),
            Protocol::Http(c) => Step::Send(c.request()),
            Protocol::Dicom(c) => Step::Send(c.request()),
            Protocol::Hl7(c) => Step::Send(c.request()),
        };
        self.apply(step)
    }

    /// The connection could not be opened.
    pub fn on_connect_failed(&mut self, now: Instant) -> Action {
        if let Some(a) = self.expired(now) {
            return a;
        }
        if matches!(self.state, State::Connecting) {
            return self.finish(Verdict::Fail(FailReason::ConnectFailed));
        }
        self.current()
    }

    /// Bytes from the peer, in order, split however the transport split them.
    pub fn on_data(&mut self, data: &[u8], now: Instant) -> Action {
        if let Some(a) = self.expired(now) {
            return a;
        }
        if !matches!(self.state, State::Connected) {
            // Nothing was asked yet (or the check is over): ignore.
            return self.current();
        }
        let step = match &mut self.protocol {
            Protocol::Tcp => Step::Wait,
            Protocol::Http(c) => c.on_data(data),
            Protocol::Dicom(c) => c.on_data(data),
            Protocol::Hl7(c) => c.on_data(data),
        };
        self.apply(step)
    }

    /// The peer closed (or reset) the connection.
    pub fn on_closed(&mut self, now: Instant) -> Action {
        if let Some(a) = self.expired(now) {
            return a;
        }
        let verdict = match &self.state {
            State::Idle => return Action::Wait,
            State::Done(v) => return Action::Done(v.clone()),
            State::Connecting => Verdict::Fail(FailReason::ConnectFailed),
            State::Connected => match &mut self.protocol {
                Protocol::Tcp => Verdict::Pass,
                Protocol::Http(c) => c.on_closed(),
                Protocol::Dicom(c) => c.on_closed(),
                Protocol::Hl7(c) => c.on_closed(),
            },
        };
        self.finish(verdict)
    }

    /// The caller's timer fired; a check past its deadline fails.
    pub fn on_timeout(&mut self, now: Instant) -> Action {
        self.expired(now).unwrap_or_else(|| self.current())
    }

    fn expired(&mut self, now: Instant) -> Option<Action> {
        let deadline = self.deadline?;
        if now < deadline {
            return None;
        }
        let verdict = match &self.state {
            State::Idle | State::Done(_) => return None,
            State::Connecting => Verdict::Fail(FailReason::Timeout(Phase::Connect)),
            State::Connected => match &self.protocol {
                Protocol::Tcp => Verdict::Pass,
                Protocol::Http(c) => Verdict::Fail(FailReason::Timeout(c.phase())),
                Protocol::Dicom(c) => c.on_timeout(),
                Protocol::Hl7(_) => Verdict::Fail(FailReason::Timeout(Phase::Hl7Ack)),
            },
        };
        Some(self.finish(verdict))
    }

    fn apply(&mut self, step: Step) -> Action {
        match step {
            Step::Send(b) => Action::Send(b),
            Step::Wait => Action::Wait,
            Step::Done(v) => self.finish(v),
        }
    }

    fn finish(&mut self, verdict: Verdict) -> Action {
        self.state = State::Done(verdict.clone());
        Action::Done(verdict)
    }

    fn current(&self) -> Action {
        match &self.state {
            State::Done(v) => Action::Done(v.clone()),
            _ => Action::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn tcp() -> CheckParams {
        CheckParams {
            kind: CheckKind::Tcp,
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn tcp_passes_on_connect() {
        let mut d = Dialog::new(&tcp(), 0).unwrap();
        assert_eq!(d.start(Instant(0)), Action::Connect);
        assert_eq!(d.deadline(), Some(Instant(5000)));
        assert_eq!(d.on_connected(Instant(10)), Action::Done(Verdict::Pass));
        // Later events repeat the verdict.
        assert_eq!(d.on_data(b"x", Instant(11)), Action::Done(Verdict::Pass));
        assert_eq!(d.on_closed(Instant(12)), Action::Done(Verdict::Pass));
        assert_eq!(d.verdict(), Some(&Verdict::Pass));
    }

    #[test]
    fn tcp_connect_failure_and_timeout() {
        let mut d = Dialog::new(&tcp(), 0).unwrap();
        d.start(Instant(0));
        let fail = Action::Done(Verdict::Fail(FailReason::ConnectFailed));
        assert_eq!(d.on_connect_failed(Instant(1)), fail);

        let mut d = Dialog::new(&tcp(), 0).unwrap();
        d.start(Instant(0));
        assert_eq!(d.on_timeout(Instant(4999)), Action::Wait);
        let v = Verdict::Fail(FailReason::Timeout(Phase::Connect));
        assert_eq!(d.on_timeout(Instant(5000)), Action::Done(v.clone()));
        assert_eq!(v.to_string(), "fail: timeout waiting for TCP connect");
        // A late connect does not turn a timed-out check into a pass.
        assert_eq!(d.on_connected(Instant(5001)), Action::Done(v));
    }

    #[test]
    fn late_event_counts_as_timeout() {
        let mut d = Dialog::new(&tcp(), 0).unwrap();
        d.start(Instant(100));
        let v = Verdict::Fail(FailReason::Timeout(Phase::Connect));
        assert_eq!(d.on_connected(Instant(5100)), Action::Done(v));
    }

    #[test]
    fn zero_timeout_is_rejected() {
        let p = CheckParams {
            kind: CheckKind::Tcp,
            timeout: Duration(0),
        };
        assert_eq!(Dialog::new(&p, 0).unwrap_err(), ParamsError::ZeroTimeout);
    }

    #[test]
    fn events_before_start_are_ignored() {
        let mut d = Dialog::new(&tcp(), 0).unwrap();
        assert_eq!(d.on_data(b"x", Instant(0)), Action::Wait);
        assert_eq!(d.on_closed(Instant(0)), Action::Wait);
        assert_eq!(d.on_timeout(Instant(99_999)), Action::Wait);
        assert_eq!(d.on_connected(Instant(0)), Action::Wait);
        assert_eq!(d.start(Instant(0)), Action::Connect);
    }
}
