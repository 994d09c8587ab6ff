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
//! The HTTP dialog is transport-agnostic: for HTTPS the kernel puts TLS
//! underneath and feeds the dialog plaintext ([`Dialog::needs_tls`]).
//!
//! [`RiseFall`] turns verdicts into up/down with hysteresis and
//! [`ServerHealth`] schedules the checks of one real server.

mod dialog;
mod dicom;
mod from_config;
mod hl7;
mod http;
mod rise_fall;
mod verdict;

pub use dialog::{Action, CheckKind, CheckParams, Dialog, ParamsError};
pub use dicom::{DicomFailure, DicomParams};
pub use from_config::check_target;
pub use hl7::{Hl7Failure, Hl7Params};
pub use http::{HttpFailure, HttpParams, StatusAccept};
pub use rise_fall::{Health, RiseFall, ServerHealth, Transition};
pub use verdict::{FailReason, Phase, Verdict};
