//! `embassy-net-driver` `Driver` for one NIC of a [`NicSet`].
//!
//! `receive` pulls frames through the hook (see [`NicSet::receive_for_stack`])
//! and only offers the stack a frame together with a transmit slot, so a
//! reply never has to be dropped for lack of a buffer.

use crate::nic::{NicSet, RxFrame};
use core::task::Context;
use embassy_net_driver::{Capabilities, HardwareAddress, LinkState};
use virtio_drivers::Hal;

/// The stack's view of NIC `index`.
pub struct NicDriver<H: Hal + 'static> {
    nics: &'static NicSet<H>,
    index: usize,
}

impl<H: Hal + 'static> NicDriver<H> {
    /// The driver for NIC `index`; from now on only this driver takes its frames.
    pub fn new(nics: &'static NicSet<H>, index: usize) -> Self {
        nics.attach_stack(index);
        NicDriver { nics, index }
    }
}

pub struct RxToken<H: Hal + 'static> {
    nics: &'static NicSet<H>,
    index: usize,
    frame: Option<RxFrame>,
}

pub struct TxToken<H: Hal + 'static> {
    nics: &'static NicSet<H>,
    index: usize,
}

impl<H: Hal + 'static> embassy_net_driver::RxToken for RxToken<H> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(mut self, f: F) -> R {
        let mut frame = self
            .frame
            .take()
            .expect("RxToken holds its frame until consumed");
        let r = f(frame.frame_mut());
        self.nics.recycle(self.index, frame);
        r
    }
}

impl<H: Hal + 'static> Drop for RxToken<H> {
    fn drop(&mut self) {
        if let Some(frame) = self.frame.take() {
            self.nics.recycle(self.index, frame);
        }
    }
}

impl<H: Hal + 'static> embassy_net_driver::TxToken for TxToken<H> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        match self.nics.transmit_with(self.index, len, f) {
            Ok(r) => r,
            // Only reachable if the slot checked in `receive`/`transmit` vanished;
            // let the stack build its frame into scratch space and drop it.
            Err(f) => {
                let mut scratch = alloc::vec![0u8; len];
                self.nics.with(self.index, |n| n.stats.dropped += 1);
                f(&mut scratch)
            }
        }
    }
}

impl<H: Hal + 'static> embassy_net_driver::Driver for NicDriver<H> {
    type RxToken<'a> = RxToken<H>;
    type TxToken<'a> = TxToken<H>;

    fn receive(&mut self, cx: &mut Context) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        if !self.nics.can_transmit(self.index) {
            self.nics.register_tx_waker(self.index, cx.waker());
            return None;
        }
        match self.nics.receive_for_stack(self.index) {
            Some(frame) => Some((
                RxToken {
                    nics: self.nics,
                    index: self.index,
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

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        LinkState::Up
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = 1514;
        caps.max_burst_size = Some(crate::nic::QUEUE_SIZE);
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.nics.with(self.index, |n| n.mac))
    }
}
