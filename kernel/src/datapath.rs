//! Glue between lb-core's frame path ([`Datapath`]) and the NICs: the
//! frame hook, the [`Transmit`] that sends its frames, the housekeeping
//! task, and printing what it logs.
//!
//! One [`Datapath`] is shared (`&'static RefCell`) by the hook, the
//! housekeeping task, the health checkers and the console. Everything runs
//! on one CPU in thread context and no borrow is held across an `await`, so
//! borrows never overlap; the hook uses `try_borrow_mut` anyway and passes
//! the frame to the stack rather than panic if that ever changed.

use crate::{Nics, println, time};
use alloc::boxed::Box;
use core::cell::RefCell;
use core::sync::atomic::{AtomicU64, Ordering};
use embassy_net::Stack;
use embassy_time::Timer;
use lb_core::datapath::{Datapath, TICK_MS, Transmit, Verdict};
use lb_core::frame::Offload;
use lb_core::mgmt::events::{Category, Severity};
use lb_core::time::Instant;
use net::FrameHook;

/// Gratuitous ARPs per VIP when the config is applied, and their spacing.
const GARP_COUNT: usize = 3;
const GARP_SPACING_MS: u64 = 100;
/// Longest frame a NIC transmit buffer takes (Ethernet header + MTU).
const MAX_FRAME: usize = 1514;

/// Milliseconds since kernel entry, the clock of lb-core.
pub fn now() -> Instant {
    Instant(time::now_us() / 1000)
}

/// The NICs as the frame path's way out.
pub struct NicTx(pub &'static Nics);

impl Transmit for NicTx {
    fn send<F: FnOnce(&mut [u8])>(&mut self, nic: usize, len: usize, fill: F) -> bool {
        nic < self.0.len() && len <= MAX_FRAME && self.0.transmit_with(nic, len, fill).is_ok()
    }
}

/// Prints the lines the frame path logged, and puts the events it
/// reported (health changes, ARP conflicts, full tables) in the event log.
pub fn print_log(dp: &mut Datapath) {
    while let Some(line) = dp.log.pop() {
        println!("{line}");
    }
    while let Some((severity, category, text)) = dp.events.pop() {
        crate::mgmt::events::log(severity, category, text);
    }
}

/// The frame hook the NICs call.
struct Hook {
    dp: &'static RefCell<Datapath>,
    nics: &'static Nics,
}

impl FrameHook for Hook {
    fn on_frame(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        offload: &Offload,
        now: Instant,
    ) -> Verdict {
        match self.dp.try_borrow_mut() {
            Ok(mut dp) => dp.on_frame_offloaded(nic, frame, offload, now, &mut NicTx(self.nics)),
            Err(_) => Verdict::PassToStack,
        }
    }
}

/// Installs the frame path as the NICs' hook and returns the shared handle.
pub fn install(dp: Datapath, nics: &'static Nics) -> &'static RefCell<Datapath> {
    let shared: &'static RefCell<Datapath> = Box::leak(Box::new(RefCell::new(dp)));
    nics.set_hook(Box::new(Hook { dp: shared, nics }));
    shared
}

/// Gratuitous ARP for the VIPs, then housekeeping every [`TICK_MS`].
#[embassy_executor::task]
pub async fn housekeeping_task(dp: &'static RefCell<Datapath>, nics: &'static Nics) {
    for _ in 0..GARP_COUNT {
        dp.borrow_mut().announce_vips(&mut NicTx(nics));
        Timer::after_millis(GARP_SPACING_MS).await;
    }
    loop {
        {
            let started = time::now_us();
            let mut dp = dp.borrow_mut();
            dp.tick(now(), &mut NicTx(nics));
            print_log(&mut dp);
            note_pass(time::now_us().saturating_sub(started));
        }
        Timer::after_millis(TICK_MS).await;
    }
}

/// Longest housekeeping pass (µs) and passes over a millisecond: frames
/// wait while a pass runs, so this bounds what it adds to their latency.
static LONGEST_PASS_US: AtomicU64 = AtomicU64::new(0);
static PASSES_OVER_1MS: AtomicU64 = AtomicU64::new(0);

fn note_pass(us: u64) {
    LONGEST_PASS_US.fetch_max(us, Ordering::Relaxed);
    if us > 1000 {
        PASSES_OVER_1MS.fetch_add(1, Ordering::Relaxed);
    }
}

/// `status`'s housekeeping line.
pub fn housekeeping_line() -> alloc::string::String {
    alloc::format!(
        "housekeeping: every {TICK_MS} ms, longest pass {} us, {} passes over 1 ms",
        LONGEST_PASS_US.load(Ordering::Relaxed),
        PASSES_OVER_1MS.load(Ordering::Relaxed)
    )
}

/// Longest sleep of the pair task: the sync link wants a poll at least
/// this often while it has work, and a priority-0 advertisement (the
/// master resigning) shortens the election's deadline after it was read.
const PAIR_POLL_MS: u64 = 10;

/// The clustered pair (`[ha]`): the election's timers, gratuitous ARP
/// repeats after a takeover and the sync link, at their deadline and at
/// least every [`PAIR_POLL_MS`], and the links it watches. Offers the
/// running config to the peer; a config the master sent is handed to
/// [`crate::mgmt::command::synced`].
#[embassy_executor::task]
pub async fn pair_task(dp: &'static RefCell<Datapath>, nics: &'static Nics) {
    offer_running_config(dp);
    // Link states as the pair last heard them (the link task reads them
    // from the cards); a watched link down makes this appliance resign.
    let mut links: alloc::vec::Vec<bool> = alloc::vec![true; nics.len()];
    loop {
        let (next, synced) = {
            let mut dp = dp.borrow_mut();
            for (i, known) in links.iter_mut().enumerate() {
                let up = nics.with(i, |n| n.link_up());
                if up != *known {
                    *known = up;
                    dp.set_link(i, up, now(), &mut NicTx(nics));
                }
            }
            let next = dp.poll_pair(now(), &mut NicTx(nics));
            print_log(&mut dp);
            (next, dp.take_synced_config())
        };
        if let Some((serial, envelope)) = synced {
            crate::mgmt::command::synced(crate::mgmt::Ctx { dp, nics }, serial, &envelope).await;
        }
        let at = now().0 + PAIR_POLL_MS;
        let at = next.map_or(at, |n| n.0.clamp(now().0, at));
        Timer::at(embassy_time::Instant::from_millis(at)).await;
    }
}

/// Tells the sync link which config to offer the peer: the running one,
/// as its envelope (call again after every change).
pub fn offer_running_config(dp: &RefCell<Datapath>) {
    match lb_core::envelope::encode(&crate::running::get()) {
        Ok(blob) => dp.borrow_mut().offer_config(blob),
        Err(e) => println!("warning: pair: the running config cannot be offered to the peer: {e}"),
    }
}

/// How often a DHCP-addressed NIC's stack is asked for its lease.
const LEASE_POLL_MS: u64 = 250;

/// Follows the DHCP lease of NIC `nic`: whenever the stack's address,
/// prefix or gateway changes (first lease, a renewal that moved it, a lost
/// lease), the frame path is told, so NAT, SNAT, ARP and ICMP use the
/// address the stack has. eth0's leased gateway becomes the default route
/// (a lease without one keeps the configured gateway).
#[embassy_executor::task(pool_size = 8)]
pub async fn lease_task(
    dp: &'static RefCell<Datapath>,
    nics: &'static Nics,
    nic: usize,
    stack: Stack<'static>,
) {
    let mut known = None;
    loop {
        let lease = stack
            .config_v4()
            .map(|c| (c.address.address(), c.address.prefix_len(), c.gateway));
        if lease != known {
            let mut dp = dp.borrow_mut();
            match lease {
                Some((address, prefix, gateway)) => {
                    dp.set_address(nic, Some((address, prefix)));
                    if nic == 0 && gateway.is_some() {
                        dp.set_gateway(gateway);
                    }
                    let line = match gateway {
                        Some(gw) => alloc::format!("eth{nic} leased {address}/{prefix} gw {gw}"),
                        None => alloc::format!("eth{nic} leased {address}/{prefix}"),
                    };
                    println!("{line}");
                    crate::mgmt::events::keep(Severity::Notice, Category::Link, line);
                    // Neighbours learn where the VIPs are now.
                    dp.announce_vips(&mut NicTx(nics));
                }
                None => {
                    dp.set_address(nic, None);
                    let line = alloc::format!("eth{nic} lease lost");
                    println!("{line}");
                    crate::mgmt::events::keep(Severity::Warning, Category::Link, line);
                }
            }
            known = lease;
        }
        Timer::after_millis(LEASE_POLL_MS).await;
    }
}
