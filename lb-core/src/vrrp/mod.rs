//! VRRPv3 (RFC 5798) for IPv4: the protocol that elects which appliance of
//! a clustered pair holds the virtual addresses.
//!
//! * [`wire`]: advertisements on the wire (zero-copy [`wire::Packet`],
//!   [`wire::Repr`], whole frames with their IPv4 header and checksum in
//!   either of the two conventions in use).
//! * [`router`]: one virtual router's state machine (initialize, backup,
//!   master, fault) with its timers, preemption and split-brain healing.
//!
//! Both are sans-IO: the appliance's frame path feeds them frames and the
//! time (see [`crate::ha`]). They interoperate with keepalived
//! (`vrrp_version 3`), tested against adverts it sent
//! (`lb-core/testdata/vrrp`) and end to end.

pub mod router;
#[cfg(test)]
mod tests;
pub mod wire;

pub use router::{Output, Reason, Router, RouterStats, Settings, State};
pub use wire::{Advert, ChecksumMode, Repr};
