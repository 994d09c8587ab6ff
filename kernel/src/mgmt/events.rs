//! The appliance's event log: lb-core's bounded ring, one per appliance,
//! filled by whoever has something to report (health changes, config
//! applied or rejected, drain/halt, full tables, ARP conflicts, lease
//! changes), shown by the console's `log`, `/api/events`, and sent as RFC
//! 5424 syslog when `management.syslog` is set.

use crate::{datapath, println, rtc};
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use critical_section::Mutex;
use embassy_net::Stack;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_time::Timer;
use lb_core::mgmt::events::{Category, Event, EventRing, Severity};
use lb_core::mgmt::syslog;

static RING: Mutex<RefCell<EventRing>> = Mutex::new(RefCell::new(EventRing::new()));

/// Logs an event (and prints it on the console as `category: text`).
pub fn log(severity: Severity, category: Category, text: String) {
    println!("{}: {text}", category.name());
    keep(severity, category, text);
}

/// Logs an event that was already printed in its own words.
pub fn keep(severity: Severity, category: Category, text: String) {
    let now = datapath::now().0;
    critical_section::with(|cs| RING.borrow_ref_mut(cs).push(now, severity, category, text));
}

/// The newest `n` events, oldest first.
pub fn recent(n: usize) -> Vec<Event> {
    critical_section::with(|cs| RING.borrow_ref(cs).recent(n).into_iter().cloned().collect())
}

/// (events logged, events pushed out of the ring).
pub fn counts() -> (u64, u64) {
    critical_section::with(|cs| {
        let r = RING.borrow_ref(cs);
        (r.last_seq(), r.dropped)
    })
}

fn since(seq: u64, max: usize) -> Vec<Event> {
    critical_section::with(|cs| RING.borrow_ref(cs).since(seq).take(max).cloned().collect())
}

/// Wall-clock time of an event, when the RTC gave one.
fn wall_ms(e: &Event) -> Option<u64> {
    let now_s = rtc::unix_secs();
    if now_s == 0 {
        return None;
    }
    let entry_ms = (now_s * 1000).saturating_sub(datapath::now().0);
    Some(entry_ms + e.at_ms)
}

/// Sends every new event to `management.syslog` (read from the running
/// config each round, so an upload can set or move it). Events logged
/// while no destination is set are not sent later.
#[embassy_executor::task]
pub async fn syslog_task(stack: Stack<'static>) {
    let rx_meta = alloc::boxed::Box::leak(alloc::vec![PacketMetadata::EMPTY; 2].into_boxed_slice());
    let tx_meta =
        alloc::boxed::Box::leak(alloc::vec![PacketMetadata::EMPTY; 16].into_boxed_slice());
    let rx = alloc::boxed::Box::leak(alloc::vec![0u8; 256].into_boxed_slice());
    let tx = alloc::boxed::Box::leak(alloc::vec![0u8; 16 * 1024].into_boxed_slice());
    let mut socket = UdpSocket::new(stack, rx_meta, rx, tx_meta, tx);
    if socket.bind(0).is_err() {
        println!("error: syslog: no UDP port");
        return;
    }
    let mut sent = counts().0;
    loop {
        Timer::after_millis(200).await;
        let config = crate::running::get();
        let Some(dest) = config.management.syslog else {
            sent = counts().0;
            continue;
        };
        for e in since(sent, 16) {
            let line = syslog::format(&e, &config.network.hostname, wall_ms(&e));
            let to = embassy_net::IpEndpoint::new((*dest.ip()).into(), dest.port());
            // A full buffer or no ARP answer yet: the datagram waits in the
            // socket; syslog over UDP is best-effort by design (RFC 5426).
            let _ = socket.send_to(line.as_bytes(), to).await;
            sent = e.seq;
        }
    }
}
