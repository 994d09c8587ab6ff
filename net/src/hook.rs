//! The hook that sees every received frame before the IP stack does.
//!
//! The frame path (lb-core's `Datapath`, through the kernel's glue)
//! implements [`FrameHook`]: it may rewrite the frame in place and send it
//! out of a NIC ([`Verdict::Transmit`]), swallow it ([`Verdict::Consumed`]),
//! or let the stack have it ([`Verdict::PassToStack`]). [`PassThrough`]
//! gives every frame to the stack.

pub use lb_core::datapath::Verdict;
use lb_core::frame::Offload;
use lb_core::time::Instant;

/// Sees each received Ethernet frame (no device header) before the stack.
pub trait FrameHook {
    /// `nic` is the index of the receiving NIC (0 = eth0); `offload` says
    /// whether the frame's checksum is partial and whether it is a TCP
    /// super-frame (see `lb_core::frame::offload`): a hook that rewrites
    /// the frame must keep that metadata true (the engine's
    /// `process_offloaded` does); `now` is milliseconds since kernel entry.
    fn on_frame(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
    ) -> Verdict;
}

/// Default hook: every frame goes to the stack.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl FrameHook for PassThrough {
    fn on_frame(
        &mut self,
        _nic: usize,
        _frame: &mut [u8],
        _offload: &Offload,
        _now: Instant,
    ) -> Verdict {
        Verdict::PassToStack
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_through_passes_everything() {
        let mut f = [0u8; 60];
        assert_eq!(
            PassThrough.on_frame(1, &mut f, &Offload::NONE, Instant(5)),
            Verdict::PassToStack
        );
    }
}
