//! Poweroff with drain first: new connections are refused, open
//! associations get a bounded time to end by themselves (A-RELEASE), then
//! the rest are aborted as a halt would (A-ABORT to both peers of a
//! DICOM-aware association, at its next PDU boundary), and the appliance
//! powers off once the A-ABORTs are acknowledged or a last bound passes.
//!
//! The caller (the console's `poweroff`) calls [`Engine::begin_shutdown`],
//! then [`Engine::shutdown_step`] every tick, keeping the frame path
//! running, until it returns [`ShutdownStep::PowerOff`].

use super::{Engine, HALT_GRACE};
use crate::splice::conn::Phase;
use crate::time::{Duration, Instant};

/// How long open associations may take to end by themselves.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(30);
/// After the aborts: how long their acknowledgements may take.
const ABORT_WAIT: Duration = Duration::from_secs(3);

/// Where a drained shutdown is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownStep {
    /// Associations are still open: `open` of them.
    Draining { open: usize },
    /// The drain time is over: the rest are being aborted.
    Aborting { open: usize },
    /// Nothing left (or the last bound passed): power off now.
    PowerOff,
}

impl Engine {
    /// Starts a drained shutdown at `now`: from here on new connections
    /// (layer 4 and layer 7) are refused, as on the backup of a pair.
    pub fn begin_shutdown(&mut self, now: Instant) {
        self.shutdown = Some(now);
    }

    /// Layer 7 connections still carrying an association (or waiting for
    /// their A-ABORTs to be acknowledged).
    pub fn open_associations(&self) -> usize {
        self.l7_table.count_where(|f| {
            matches!(
                f.ext.phase,
                Phase::AwaitingData | Phase::Connecting | Phase::Spliced
            ) || super::l7::abort_pending(&f.ext)
        })
    }

    /// One step of the shutdown begun with [`Engine::begin_shutdown`]
    /// (call it every tick, after [`Engine::expire`]).
    pub fn shutdown_step(&mut self, now: Instant, drain: Duration) -> ShutdownStep {
        let Some(started) = self.shutdown else {
            return ShutdownStep::Draining {
                open: self.open_associations(),
            };
        };
        let open = self.open_associations();
        let abort_at = started.add(drain);
        if open == 0 || now >= abort_at.add(HALT_GRACE).add(ABORT_WAIT) {
            return ShutdownStep::PowerOff;
        }
        if now < abort_at {
            return ShutdownStep::Draining { open };
        }
        if !self.shutdown_aborted {
            self.shutdown_aborted = true;
            for svc in 0..self.services.len() {
                for srv in 0..self.services[svc].servers.len() {
                    self.l7_halt(svc, srv);
                }
            }
            self.l7_track_aborted(now);
        }
        ShutdownStep::Aborting {
            open: self.open_associations(),
        }
    }

    /// Whether a drained shutdown refuses new connections.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }
}
