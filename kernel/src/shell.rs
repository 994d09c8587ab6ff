//! The serial console's command line: COM1 input polled every
//! [`POLL_MS`], a line editor (printable ASCII, backspace/delete, Enter)
//! and the commands `status` and `help`. Any byte sequence is safe: control
//! and non-ASCII bytes are ignored and an over-long line is cut at
//! [`LINE_MAX`] bytes.

use crate::serial::{DATA, LINE_STATUS};
use crate::{Nics, print, println};
use core::cell::RefCell;
use embassy_time::Timer;
use lb_core::config::{AdminState, Forwarding};
use lb_core::datapath::Datapath;
use lb_core::frame::DropReason;
use lb_core::schedule::Health;

const POLL_MS: u64 = 20;
const LINE_MAX: usize = 128;

/// The line being typed.
struct LineEditor {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl LineEditor {
    /// Feeds one byte; returns the finished line on Enter.
    fn feed(&mut self, b: u8) -> Option<&str> {
        match b {
            b'\r' | b'\n' => {
                println!();
                let n = core::mem::take(&mut self.len);
                Some(core::str::from_utf8(&self.buf[..n]).unwrap_or(""))
            }
            0x08 | 0x7f => {
                if self.len > 0 {
                    self.len -= 1;
                    print!("\x08 \x08");
                }
                None
            }
            0x20..=0x7e if self.len < LINE_MAX => {
                self.buf[self.len] = b;
                self.len += 1;
                print!("{}", b as char);
                None
            }
            _ => None,
        }
    }
}

fn forwarding(f: Forwarding) -> &'static str {
    match f {
        Forwarding::Dr => "dr",
        Forwarding::Nat => "nat",
        Forwarding::Snat => "snat",
        Forwarding::Layer7 => "layer7",
    }
}

fn health(h: Health) -> &'static str {
    match h {
        Health::Up => "up",
        Health::Down => "down",
        Health::Unknown => "unknown",
    }
}

fn admin(a: AdminState) -> &'static str {
    match a {
        AdminState::Online => "online",
        AdminState::Drain => "drain",
        AdminState::Halt => "halt",
    }
}

/// `status`: services, real servers, drop counters, ARP.
fn status(dp: &Datapath, nics: &Nics) {
    let e = &dp.engine;
    for (si, vs) in dp.config.virtual_services.iter().enumerate() {
        let Some(stats) = e.service_stats(si) else {
            continue;
        };
        let active: u64 = (0..vs.real_servers.len())
            .filter_map(|ri| e.server_state(si, ri))
            .map(|s| u64::from(s.active))
            .sum();
        print!("vs {} {}:", vs.label, vs.vip);
        for (i, p) in vs.ports.iter().enumerate() {
            print!("{}{p}", if i > 0 { "," } else { "" });
        }
        println!(
            " {} conns={active} pkts={} bytes={}",
            forwarding(vs.forwarding),
            stats.service.packets,
            stats.service.bytes
        );
        for (ri, rs) in vs.real_servers.iter().enumerate() {
            let (Some(st), Some(c)) = (e.server_state(si, ri), stats.servers.get(ri)) else {
                continue;
            };
            let port = rs.target_port(vs.forwarding, vs.ports.first().copied().unwrap_or(0));
            println!(
                "  rs {} {}:{port} {} {} weight={} active={} conns={} pkts={} bytes={}",
                rs.label,
                rs.ip,
                health(st.health),
                admin(st.admin),
                st.weight,
                st.active,
                c.connections,
                c.packets,
                c.bytes
            );
        }
    }
    let drops = e.drops();
    print!("drops:");
    for r in DropReason::ALL {
        print!(" {}={}", r.name(), drops.get(r));
    }
    let a = &dp.arp.stats;
    println!(
        " arp-full={} arp-queue-full={} arp-unanswered={} tx-full={}",
        a.full, a.queue_full, a.unanswered, dp.stats.tx_full
    );
    println!(
        "arp: {} entries (max {}), {} frames waiting, {} requests sent, {} VIP replies; {} ICMP unreachable sent",
        dp.arp.len(),
        dp.arp.capacity(),
        dp.arp.queued(),
        a.requests_sent,
        dp.stats.vip_arp_replies,
        dp.stats.unreachable_sent
    );
    let ct = e.conntrack();
    let p = e.persistence();
    println!(
        "conntrack: {} flows, {} half-open (max {}, {} per source) early-drop={} source-limited={} full={}",
        ct.len(),
        ct.half_open(),
        ct.half_open_limit(),
        ct.source_limit(),
        ct.stats.early_drop,
        ct.stats.source_limited,
        ct.stats.refused_full
    );
    println!(
        "stack: udp-limited={} echo-limited={} (each at most {}/s to our own addresses)",
        dp.stats.stack_udp_limited,
        dp.stats.stack_echo_limited,
        lb_core::datapath::guard::PER_SECOND
    );
    println!(
        "persistence: {} clients (max {}) refused-full={}",
        p.len(),
        p.capacity(),
        p.stats.refused_full
    );
    for i in 0..nics.len() {
        let n = nics.with(i, |n| n.stats);
        println!(
            "nic eth{i} rx={} tx={} consumed={} redirected={} dropped={} errors={}",
            n.rx_frames, n.tx_frames, n.rx_consumed, n.rx_redirected, n.dropped, n.errors
        );
    }
}

fn help() {
    println!("commands:");
    println!("  status   virtual services, real servers, drop counters, ARP");
    println!("  help     this list");
}

async fn run(line: &str, dp: &RefCell<Datapath>, nics: &Nics) {
    let line = line.trim();
    match line {
        "" => {}
        "status" => status(&dp.borrow(), nics),
        "help" | "?" => help(),
        "save" => match crate::storage::save(&crate::running::get()).await {
            Ok(h) => println!(
                "saved: slot {} sequence {} ({} bytes)",
                h.slot.name(),
                h.sequence,
                h.len
            ),
            Err(e) => println!("error: save: {e}"),
        },
        "store status" => {
            for l in crate::storage::status() {
                println!("{l}");
            }
        }
        "store format" => match crate::storage::format().await {
            Ok(()) => println!("store: formatted; both slots empty"),
            Err(e) => println!("error: store format: {e}"),
        },
        other => println!("unknown command: {other} (try help)"),
    }
}

/// Polls COM1 and runs each line typed.
#[embassy_executor::task]
pub async fn console_task(dp: &'static RefCell<Datapath>, nics: &'static Nics) {
    let mut ed = LineEditor {
        buf: [0; LINE_MAX],
        len: 0,
    };
    // A missing UART reads 0xFF everywhere: never treat that as input.
    if LINE_STATUS.read8() == 0xFF {
        return;
    }
    loop {
        let mut budget = 256;
        while budget > 0 && LINE_STATUS.read8() & 1 != 0 {
            budget -= 1;
            let b = DATA.read8();
            if let Some(line) = ed.feed(b) {
                let line = alloc::string::String::from(line);
                run(&line, dp, nics).await;
            }
        }
        Timer::after_millis(POLL_MS).await;
    }
}
