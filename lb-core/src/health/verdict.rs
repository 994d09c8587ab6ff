//! The result of one check and the reason a check failed, printable for logs.

use core::fmt;

use super::agent::AgentError;
use super::dicom::DicomFailure;
use super::hl7::Hl7Failure;
use super::http::HttpFailure;
use super::tls::TlsFailure;

/// What a check was waiting for when it ended without an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Connect,
    /// The ICMP echo reply of a ping check.
    EchoReply,
    TlsHandshake,
    HttpResponse,
    HttpBody,
    AssociateResponse,
    EchoResponse,
    ReleaseResponse,
    Hl7Ack,
    AgentReply,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Connect => "TCP connect",
            Phase::EchoReply => "ICMP echo reply",
            Phase::TlsHandshake => "TLS handshake",
            Phase::HttpResponse => "HTTP response header",
            Phase::HttpBody => "HTTP body",
            Phase::AssociateResponse => "DICOM A-ASSOCIATE-AC",
            Phase::EchoResponse => "DICOM C-ECHO-RSP",
            Phase::ReleaseResponse => "DICOM A-RELEASE-RP",
            Phase::Hl7Ack => "HL7 ACK",
            Phase::AgentReply => "the feedback agent's reply",
        })
    }
}

/// Why a check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FailReason {
    /// The server reset the connection attempt: nothing listens there.
    Refused,
    /// No route to the server, or it (or a router) answered unreachable.
    Unreachable,
    /// The TCP connection could not be opened for another reason.
    ConnectFailed,
    /// The check type is `off`: the server is down for maintenance.
    Maintenance,
    /// The feedback agent said the server is down, drained or in
    /// maintenance; the agent's reason if it gave one.
    Agent(alloc::string::String),
    /// The check timeout elapsed.
    Timeout(Phase),
    /// The peer closed the connection before answering.
    Closed(Phase),
    Http(HttpFailure),
    Dicom(DicomFailure),
    Hl7(Hl7Failure),
    Tls(TlsFailure),
    /// The feedback agent's reply was unusable.
    AgentReply(AgentError),
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Refused => f.write_str("connection refused"),
            FailReason::Unreachable => f.write_str("unreachable"),
            FailReason::ConnectFailed => f.write_str("TCP connect failed"),
            FailReason::Maintenance => f.write_str("check_type off (maintenance)"),
            FailReason::Agent(why) if why.is_empty() => f.write_str("agent says down"),
            FailReason::Agent(why) => write!(f, "agent says down: {why}"),
            FailReason::Timeout(p) => write!(f, "timeout waiting for {p}"),
            FailReason::Closed(p) => write!(f, "connection closed while waiting for {p}"),
            FailReason::Http(e) => write!(f, "HTTP {e}"),
            FailReason::Dicom(e) => write!(f, "DICOM {e}"),
            FailReason::Hl7(e) => write!(f, "HL7 {e}"),
            FailReason::Tls(e) => write!(f, "TLS {e}"),
            FailReason::AgentReply(e) => write!(f, "agent {e}"),
        }
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail(FailReason),
}

impl Verdict {
    pub fn is_pass(&self) -> bool {
        matches!(self, Verdict::Pass)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass => f.write_str("pass"),
            Verdict::Fail(r) => write!(f, "fail: {r}"),
        }
    }
}

impl From<HttpFailure> for Verdict {
    fn from(e: HttpFailure) -> Self {
        Verdict::Fail(FailReason::Http(e))
    }
}

impl From<DicomFailure> for Verdict {
    fn from(e: DicomFailure) -> Self {
        Verdict::Fail(FailReason::Dicom(e))
    }
}

impl From<Hl7Failure> for Verdict {
    fn from(e: Hl7Failure) -> Self {
        Verdict::Fail(FailReason::Hl7(e))
    }
}
