//! `embassy-net-driver` `Driver` for one NIC of a [`NicSet`].
//!
//! Received frames reach it through the frame path ([`NicSet::poll`]),
//! which queues the ones for the stack; `receive` only offers the stack a
//! frame together with a transmit slot, so a reply never has to be dropped
//! for lack of a buffer. Frames the stack sends are queued on the NIC and
//! made visible to it at the end of the main loop's pass, with the rest of
//! the burst.

use crate::dma::Packet;
use crate::nic::NicSet;
use core::task::Context;
use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};

/// The stack's view of NIC `index`.
pub struct NicDriver {
    nics: &'static NicSet,
    index: usize,
}

impl NicDriver {
    /// The driver for NIC `index`; from now on only this driver takes its frames.
    pub fn new(nics: &'static NicSet, index: usize) -> Self {
        nics.attach_stack(index);
        NicDriver { nics, index }
    }
}

pub struct RxToken {
    nics: &'static NicSet,
    frame: Option<Packet>,
}

pub struct TxToken {
    nics: &'static NicSet,
    index: usize,
}

impl embassy_net_driver::RxToken for RxToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(mut self, f: F) -> R {
        let mut frame = self
            .frame
            .take()
            .expect("RxToken holds its frame until consumed");
        let r = f(frame.frame_mut());
        self.nics.recycle(frame);
        r
    }
}

impl Drop for RxToken {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            self.nics.recycle(frame);
        }
    }
}

impl embassy_net_driver::TxToken for TxToken {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self.nics.transmit_with(self.index, len, f) {
            Ok(r) => r,
            // Only reachable if the room checked in `receive`/`transmit`
            // vanished; let the stack build its frame into scratch space and
            // drop it (counted as tx_full).
            Err(f) => {
                let mut scratch = alloc::vec![0u8; len];
                f(&mut scratch)
            }
        }
    }
}

impl embassy_net_driver::Driver for NicDriver {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken;

    fn receive(&mut self, cx: &mut Context) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.nics.can_transmit(self.index) {
            self.nics.register_tx_waker(self.index, cx.waker());
            return None;
        }
        match self.nics.take_for_stack(self.index) {
            Some(frame) => Some((
                RxToken {
                    nics: self.nics,
                    frame: Some(frame),
                },
                TxToken {
                    nics: self.nics,
                    index: self.index,
                },
            )),
            None => {
                self.nics.register_rx_waker(self.index, cx.waker());
                None
            }
        }
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<Self::TxToken<'_>> {
        if self.nics.can_transmit(self.index) {
            Some(TxToken {
                nics: self.nics,
                index: self.index,
            })
        } else {
            self.nics.register_tx_waker(self.index, cx.waker());
            None
        }
    }

    fn link_state(&mut self, cx: &mut Context) -> LinkState {
        if self.nics.with(self.index, |n| n.link_up()) {
            LinkState::Up
        } else {
            // Woken again when the link changes (see `NicSet::check_links`).
            self.nics.register_rx_waker(self.index, cx.waker());
            LinkState::Down
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(crate::nic::RX_BUDGET);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.nics.with(self.index, |n| n.mac))
    }
}
