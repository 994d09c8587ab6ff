//! Management over the network, as sans-IO pieces the kernel drives.
//!
//! * Administrators hold Ed25519 keys ([`keys`]); the running config lists
//!   the public ones in `management.admin_keys`.
//! * Uploads, rollbacks and real-server state changes are signed
//!   [`request`]s with a serial that must exceed the running one; the
//!   whole acceptance policy is [`admission::admit`].
//! * They travel in the small framed protocol of [`wire`] on TCP port
//!   [`COMMAND_PORT`]; one slot [`pool`] per endpoint keeps stalled
//!   clients from locking administrators out.
//! * The frame path lets only sources on the [`allow`] list reach the
//!   management ports.
//! * The appliance shows itself as a [`status::Status`]: console text,
//!   JSON, Prometheus metrics and the System Overview [`page`] on
//!   [`HTTP_PORT`].
//! * Events go to a bounded ring ([`events`]) and out as RFC 5424
//!   [`syslog`]; [`diff`] says what an applied config changed.

pub mod admission;
pub mod allow;
pub mod diff;
pub mod events;
pub mod keys;
pub mod page;
pub mod pool;
pub mod request;
pub mod status;
pub mod syslog;
pub mod wire;

/// The System Overview page, `/api/status` and `/metrics` (plain HTTP).
pub const HTTP_PORT: u16 = 9080;
/// Signed uploads and commands ([`wire`]).
pub const COMMAND_PORT: u16 = 9081;
/// Largest request frame payload accepted: the signed request with its
/// config. The guide's whole medical config compiles to under 1 KiB.
pub const MAX_REQUEST: u32 = 1024 * 1024;
/// Milliseconds a client has, from connecting, to send its whole request.
pub const REQUEST_DEADLINE_MS: u64 = 15_000;

/// Whether a TCP destination port is a management port (the frame path
/// applies the allow list to these).
pub fn is_management_port(port: u16) -> bool {
    port == HTTP_PORT || port == COMMAND_PORT
}
