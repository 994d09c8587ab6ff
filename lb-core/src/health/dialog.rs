//! The check dialog every kind shares: connect, request, answer, deadline.

use alloc::vec::Vec;
use core::fmt;

use super::agent::{AgentCheck, AgentReply};
use super::dicom::{DicomCheck, DicomParams};
use super::hl7::{Hl7Check, Hl7Params};
use super::http::{HttpCheck, HttpParams};
use super::tls::{BoxedTls, TlsLayer, TlsParams};
use super::verdict::{FailReason, Phase, Verdict};
use crate::time::{Duration, Instant};

/// What the check talks once connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Pass as soon as the TCP connection is established.
    Tcp,
    /// ICMP echo: for this kind "connect" means sending an echo request
    /// and "connected" receiving its reply (see [`Dialog::is_ping`]).
    Ping,
    /// HTTP/1.1 GET over plain TCP.
    Http(HttpParams),
    /// The same HTTP dialog over TLS 1.2 or 1.3, which the dialog runs itself.
    Https(HttpParams, TlsParams),
    /// DICOM association + C-ECHO + release.
    Dicom(DicomParams),
    /// HL7 v2 message over MLLP, expecting an accepting ACK.
    Hl7(Hl7Params),
    /// A feedback agent's one-line reply ([`Dialog::agent_reply`]).
    Agent,
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
            CheckKind::Tcp | CheckKind::Ping | CheckKind::Agent => Ok(()),
            CheckKind::Http(p) => p.validate(),
            CheckKind::Https(p, t) => p.validate().and(t.validate()),
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

/// Why the connection could not be opened, as far as the transport knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The server answered with a reset: nothing listens on the port.
    Refused,
    /// No route, or an ICMP unreachable came back.
    Unreachable,
    /// Anything else the transport reported.
    Failed,
}

/// The protocol spoken once connected.
#[derive(Debug)]
enum Protocol {
    Tcp,
    Ping,
    Http(HttpCheck),
    Dicom(DicomCheck),
    Hl7(Hl7Check),
    Agent(AgentCheck),
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
    /// HTTPS: the settings until connected, then the running layer.
    tls_params: Option<TlsParams>,
    tls: Option<BoxedTls>,
    /// Seconds since 1970 at the start of the check, for certificate validity.
    wall_clock: Option<u64>,
    state: State,
}

impl Dialog {
    /// A check ready to `start`. `seq` numbers the checks of one server so
    /// each request is fresh (HL7 control ID, DICOM message ID).
    pub fn new(params: &CheckParams, seq: u32) -> Result<Self, ParamsError> {
        params.validate()?;
        let (protocol, tls_params) = match &params.kind {
            CheckKind::Tcp => (Protocol::Tcp, None),
            CheckKind::Ping => (Protocol::Ping, None),
            CheckKind::Http(p) => (Protocol::Http(HttpCheck::new(p)), None),
            CheckKind::Https(p, t) => (Protocol::Http(HttpCheck::new(p)), Some(t.clone())),
            CheckKind::Dicom(p) => (Protocol::Dicom(DicomCheck::new(p, seq)), None),
            CheckKind::Hl7(p) => (Protocol::Hl7(Hl7Check::new(p, seq)), None),
            CheckKind::Agent => (Protocol::Agent(AgentCheck::default()), None),
        };
        Ok(Dialog {
            protocol,
            timeout: params.timeout,
            deadline: None,
            tls_params,
            tls: None,
            wall_clock: None,
            state: State::Idle,
        })
    }

    /// Gives the check the wall clock (seconds since 1970), which HTTPS
    /// checks with `ca` verification need for certificate validity.
    pub fn with_wall_clock(mut self, unix_secs: u64) -> Self {
        self.wall_clock = Some(unix_secs);
        self
    }

    /// An ICMP echo check: the caller sends an echo request for `Connect`
    /// and reports the reply with [`Dialog::on_connected`].
    pub fn is_ping(&self) -> bool {
        matches!(self.protocol, Protocol::Ping)
    }

    /// What a feedback agent said, once its dialog passed.
    pub fn agent_reply(&self) -> Option<&AgentReply> {
        match &self.protocol {
            Protocol::Agent(a) => a.reply(),
            _ => None,
        }
    }

    /// Bytes to write before closing, when the check ended early in a
    /// state the server should hear about: a DICOM association is released
    /// (A-RELEASE-RQ) rather than cut.
    pub fn goodbye(&self) -> Option<Vec<u8>> {
        match &self.protocol {
            Protocol::Dicom(c) => c.goodbye(),
            _ => None,
        }
    }

    /// Whether the check runs TLS (HTTPS); the caller only moves bytes.
    pub fn uses_tls(&self) -> bool {
        self.tls_params.is_some()
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
        if let Some(p) = &self.tls_params {
            let step = match TlsLayer::new(p, self.wall_clock) {
                Ok(layer) => {
                    let layer = self.tls.insert(alloc::boxed::Box::new(layer));
                    match layer.start() {
                        Ok(hello) => Step::Send(hello),
                        Err(e) => Step::Done(Verdict::Fail(FailReason::Tls(e))),
                    }
                }
                Err(e) => Step::Done(Verdict::Fail(FailReason::Tls(e))),
            };
            return self.apply(step);
        }
        let step = match &mut self.protocol {
            Protocol::Tcp | Protocol::Ping => Step::Done(Verdict::Pass),
            Protocol::Http(c) => Step::Send(c.request()),
            Protocol::Dicom(c) => Step::Send(c.request()),
            Protocol::Hl7(c) => Step::Send(c.request()),
            Protocol::Agent(_) => Step::Wait,
        };
        self.apply(step)
    }

    /// The connection could not be opened (for a ping: an ICMP error came back).
    pub fn on_connect_failed(&mut self, why: ConnectError, now: Instant) -> Action {
        if let Some(a) = self.expired(now) {
            return a;
        }
        if matches!(self.state, State::Connecting) {
            let reason = match why {
                ConnectError::Refused => FailReason::Refused,
                ConnectError::Unreachable => FailReason::Unreachable,
                ConnectError::Failed => FailReason::ConnectFailed,
            };
            return self.finish(Verdict::Fail(reason));
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
        if self.tls.is_some() {
            return self.on_tls_data(data);
        }
        let step = self.protocol_data(data);
        self.apply(step)
    }

    fn protocol_data(&mut self, data: &[u8]) -> Step {
        match &mut self.protocol {
            Protocol::Tcp | Protocol::Ping => Step::Wait,
            Protocol::Http(c) => c.on_data(data),
            Protocol::Dicom(c) => c.on_data(data),
            Protocol::Hl7(c) => c.on_data(data),
            Protocol::Agent(c) => c.on_data(data),
        }
    }

    /// Ciphertext in: handshake replies out, and once established the
    /// request out and the plaintext through the protocol machine.
    fn on_tls_data(&mut self, data: &[u8]) -> Action {
        let Some(layer) = self.tls.as_mut() else {
            return self.current();
        };
        let tls_fail = |e| Verdict::Fail(FailReason::Tls(e));
        let got = match layer.receive(data) {
            Ok(g) => g,
            Err(e) => return self.finish(tls_fail(e)),
        };
        let mut send = got.send;
        if got.established {
            let request = match &mut self.protocol {
                Protocol::Http(c) => c.request(),
                _ => alloc::vec::Vec::new(),
            };
            match layer.encrypt(&request) {
                Ok(c) => send.extend_from_slice(&c),
                Err(e) => return self.finish(tls_fail(e)),
            }
        }
        if !got.plaintext.is_empty() {
            match self.protocol_data(&got.plaintext) {
                Step::Done(v) => return self.finish(v),
                // HTTP sends nothing after its request.
                Step::Send(_) | Step::Wait => {}
            }
        }
        if got.peer_closed {
            return self.on_closed_connected();
        }
        if send.is_empty() {
            Action::Wait
        } else {
            Action::Send(send)
        }
    }

    fn on_closed_connected(&mut self) -> Action {
        let verdict = match (&mut self.protocol, &self.tls) {
            (_, Some(t)) if !t.is_established() => {
                Verdict::Fail(FailReason::Closed(Phase::TlsHandshake))
            }
            (Protocol::Tcp | Protocol::Ping, _) => Verdict::Pass,
            (Protocol::Http(c), _) => c.on_closed(),
            (Protocol::Dicom(c), _) => c.on_closed(),
            (Protocol::Hl7(c), _) => c.on_closed(),
            (Protocol::Agent(c), _) => c.on_closed(),
        };
        self.finish(verdict)
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
            State::Connected => return self.on_closed_connected(),
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
            State::Connecting if self.is_ping() => {
                Verdict::Fail(FailReason::Timeout(Phase::EchoReply))
            }
            State::Connecting => Verdict::Fail(FailReason::Timeout(Phase::Connect)),
            State::Connected if self.tls.as_ref().is_some_and(|t| !t.is_established()) => {
                Verdict::Fail(FailReason::Timeout(Phase::TlsHandshake))
            }
            State::Connected => match &self.protocol {
                Protocol::Tcp | Protocol::Ping => Verdict::Pass,
                Protocol::Http(c) => Verdict::Fail(FailReason::Timeout(c.phase())),
                Protocol::Dicom(c) => c.on_timeout(),
                Protocol::Hl7(_) => Verdict::Fail(FailReason::Timeout(Phase::Hl7Ack)),
                Protocol::Agent(c) => c.on_timeout(),
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
        let fail = Action::Done(Verdict::Fail(FailReason::Refused));
        assert_eq!(d.on_connect_failed(ConnectError::Refused, Instant(1)), fail);

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
