//! The load-balancing engine of the appliance.
//!
//! Sans-IO: every state machine here takes an input (a frame, an event, the
//! bytes a peer sent) together with `now` and returns a decision. There is no
//! I/O and no clock of its own, so the whole engine is tested on the host.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod aware;
pub mod cmdline;
pub mod config;
pub mod conntrack;
pub mod console;
pub mod datapath;
pub mod engine;
pub mod envelope;
pub mod flow;
pub mod frame;
pub mod ha;
pub mod health;
pub mod log;
pub mod mgmt;
pub mod password;
pub mod persist;
pub mod schedule;
pub mod splice;
pub mod startup;
pub mod store;
pub mod time;
pub mod vrrp;
pub mod wire;
pub mod wizard;
