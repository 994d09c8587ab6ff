//! Health checks: I/O-free check dialogs and rise/fall counting.
//!
//! A [`Dialog`] is one health check of one real server, written sans-IO: the
//! caller (a kernel task, or a host test over a `std` socket) owns the
//! connection and the clock, feeds events in and carries out the returned
//! [`Action`]:
//!
//! ```text
//! let mut d = Dialog::new(&params, seq)?;
//! d.start(now)              -> Action::Connect
//! d.on_connected(now)       -> Action::Send(request) | Action::Done(verdict)
//! d.on_data(&bytes, now)    -> Action::Send(more) | Action::Wait | Action::Done(verdict)
//! d.on_closed(now)          -> Action::Done(verdict)
//! d.on_timeout(now)         -> Action::Wait (not yet) | Action::Done(Fail(Timeout))
//! ```
//!
//! After `Done` the caller closes the connection; every later event returns
//! the same `Done`. The check's deadline (`start` + the configured timeout)
//! is available from [`Dialog::deadline`].
//!
//! HTTPS checks run TLS inside the dialog (rustls's sans-IO client, see
//! `tls`): the caller moves ciphertext exactly as it moves plaintext for the
//! other kinds. Ping checks reuse the connect events for the ICMP echo.
//!
//! [`RiseFall`] turns verdicts into up/down with hysteresis,
//! [`ServerHealth`] schedules the checks of one real server, and the
//! [`board::Board`] holds every server's schedule for the check workers.

mod agent;
pub mod board;
mod dialog;
mod dicom;
mod from_config;
mod hl7;
mod http;
mod rise_fall;
mod server_verdicts;
mod tls;
mod verdict;

pub use agent::{AgentAdmin, AgentError, AgentReply, AgentState, parse_reply as parse_agent_reply};
pub use dialog::{Action, CheckKind, CheckParams, ConnectError, Dialog, ParamsError};
pub use dicom::{DicomFailure, DicomParams};
pub use from_config::{check_summary, check_target, fixed_verdict};
pub use hl7::{DEFAULT_MESSAGE as DEFAULT_HL7_MESSAGE, Hl7Failure, Hl7Params};
pub use http::{HttpFailure, HttpParams, StatusAccept};
pub use rise_fall::{Health, RiseFall, ServerHealth, Transition};
pub use server_verdicts::ServerVerdicts;
pub use tls::{MAX_CA_CERTS, TlsFailure, TlsParams, TlsVerify, ca_from_pem, pin_from_hex};
pub use verdict::{FailReason, Phase, Verdict};
