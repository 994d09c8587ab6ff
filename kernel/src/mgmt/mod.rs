//! Management over the network: the kernel side of `lb_core::mgmt`.
//!
//! Tasks on the management interface's stack: the System Overview page,
//! `/api/status`, `/api/events` and `/metrics` on TCP 9080 ([`http`]);
//! signed uploads and commands on TCP 9081 ([`command`]); syslog
//! ([`events`]). The frame path (lb-core) drops frames to those ports from
//! sources outside `management.allow` before the stack sees them.
//! Policy, parsing and rendering are lb-core's; this module moves bytes
//! and applies what lb-core admitted.

pub mod command;
pub mod events;
pub mod http;
mod slots;

use crate::{Nics, println, time};
use alloc::format;
use alloc::string::String;
use core::cell::RefCell;
use critical_section::Mutex;
use embassy_executor::Spawner;
use embassy_net::Stack;
use lb_core::datapath::Datapath;
use lb_core::mgmt::admission::{Counters, Kind};
use lb_core::mgmt::status::{Sample, Status};

/// What the management tasks share.
#[derive(Clone, Copy)]
pub struct Ctx {
    pub dp: &'static RefCell<Datapath>,
    pub nics: &'static Nics,
}

/// Applied and rejected requests.
static COUNTERS: Mutex<RefCell<Counters>> = Mutex::new(RefCell::new(Counters {
    applied: 0,
    rejected: [0; Kind::ALL.len()],
    evicted: 0,
}));

pub fn count(f: impl FnOnce(&mut Counters)) {
    critical_section::with(|cs| f(&mut COUNTERS.borrow_ref_mut(cs)));
}

/// The appliance as the console, the page, the API and the metrics show
/// it: lb-core's view of the frame path, with the NICs and management.
pub fn snapshot(dp: &Datapath, nics: &Nics) -> Status {
    let mut st = Status::from_datapath(dp);
    st.version = String::from(crate::VERSION);
    st.uptime_s = time::now_us() / 1_000_000;
    st.serial = crate::running::get().management.serial;
    let irq = |i: usize| crate::interrupts::COUNTS[i].load(core::sync::atomic::Ordering::Relaxed);
    st.details.push(format!(
        "interrupts: timer={} nic-msg={} nic-line={}",
        irq(0),
        irq(1),
        irq(2)
    ));
    st.details.push(crate::datapath::housekeeping_line());
    for i in 0..nics.len() {
        let (n, model, up) = nics.with(i, |n| (n.stats, n.model(), n.link_up()));
        st.details.push(format!(
            "nic eth{i} {model} link={} rx={} rx-super={} tx={} tx-super={} segmented={} sw-csum={} consumed={} redirected={} stack-full={} no-stack={} tx-full={} tx-invalid={} errors={}",
            if up { "up" } else { "down" },
            n.rx_frames,
            n.rx_super_frames,
            n.tx_frames,
            n.tx_super_frames,
            n.tx_segmented,
            n.sw_checksums,
            n.rx_consumed,
            n.rx_redirected,
            n.stack_full,
            n.no_stack,
            n.tx_full,
            n.tx_invalid,
            n.errors
        ));
        let nic = format!("eth{i}");
        for (what, v) in [
            ("rx", n.rx_frames),
            ("rx_super", n.rx_super_frames),
            ("tx", n.tx_frames),
            ("tx_super", n.tx_super_frames),
            ("segmented", n.tx_segmented),
            ("sw_checksum", n.sw_checksums),
            ("consumed", n.rx_consumed),
            ("redirected", n.rx_redirected),
            ("stack_full", n.stack_full),
            ("no_stack", n.no_stack),
            ("tx_full", n.tx_full),
            ("tx_invalid", n.tx_invalid),
            ("errors", n.errors),
        ] {
            st.metrics.push(Sample::new(
                "lbmed_nic_frames_total",
                &[("nic", &nic), ("kind", what)],
                v,
            ));
        }
        st.metrics.push(Sample::new(
            "lbmed_nic_link_up",
            &[("nic", &nic), ("model", model)],
            u64::from(up),
        ));
    }
    let c = critical_section::with(|cs| COUNTERS.borrow_ref(cs).clone());
    st.details.push(format!(
        "management: {} applied, {} rejected, {} evicted, {} frames from outside the allow list",
        c.applied,
        c.rejected_total(),
        c.evicted,
        dp.stats.management_refused
    ));
    st.metrics.push(Sample::new(
        "lbmed_management_applied_total",
        &[],
        c.applied,
    ));
    for k in Kind::ALL {
        st.metrics.push(Sample::new(
            "lbmed_management_rejected_total",
            &[("reason", k.name())],
            c.rejected(k),
        ));
    }
    st.metrics.push(Sample::new(
        "lbmed_management_evicted_total",
        &[],
        c.evicted,
    ));
    let (logged, _) = events::counts();
    st.metrics
        .push(Sample::new("lbmed_events_total", &[], logged));
    st
}

/// Sockets the management tasks open on their stack.
pub const SOCKETS: usize = http::SLOTS + command::SLOTS + 1;

/// Starts the management tasks on `stack` (the management interface's).
pub fn start(spawner: Spawner, ctx: Ctx, stack: Stack<'static>, name: &str) {
    let ok = (|| {
        for i in 0..http::SLOTS {
            spawner.spawn(http::task(ctx, stack, i).ok()?);
        }
        for i in 0..command::SLOTS {
            spawner.spawn(command::task(ctx, stack, i).ok()?);
        }
        spawner.spawn(events::syslog_task(stack).ok()?);
        Some(())
    })();
    match ok {
        Some(()) => println!(
            "management: {name} ports {} (page, API, metrics) and {} (signed commands)",
            lb_core::mgmt::HTTP_PORT,
            lb_core::mgmt::COMMAND_PORT
        ),
        None => println!("error: management: cannot start its tasks"),
    }
}
