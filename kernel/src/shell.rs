//! The serial console's command line: COM1 input polled every
//! [`POLL_MS`], a line editor (printable ASCII, backspace/delete, Enter)
//! and the commands `status` and `help`. Any byte sequence is safe: control
//! and non-ASCII bytes are ignored and an over-long line is cut at
//! [`LINE_MAX`] bytes.

use crate::serial::{DATA, LINE_STATUS};
use crate::{Nics, print, println};
use core::cell::RefCell;
use embassy_time::Timer;
use lb_core::datapath::Datapath;

const POLL_MS: u64 = 20;
const LINE_MAX: usize = 128;
/// Events `log` shows.
const LOG_LINES: usize = 50;

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

fn help() {
    println!("commands:");
    println!("  status   virtual services, real servers, drop counters, ARP");
    println!("  log      recent events (health, signed changes, requests refused)");
    println!("  help     this list");
}

async fn run(line: &str, dp: &RefCell<Datapath>, nics: &Nics) {
    let line = line.trim();
    match line {
        "" => {}
        "status" => {
            print!("{}", crate::mgmt::snapshot(&dp.borrow(), nics).to_text());
            println!(
                "mem: heap {} bytes used, {} free; l7 table {} bytes per connection, preallocated",
                crate::memory::heap_used(),
                crate::memory::heap_free(),
                dp.borrow().engine.l7_connections().bytes_per_flow()
            );
        }
        "log" => {
            for e in crate::mgmt::events::recent(LOG_LINES) {
                println!("{}", lb_core::mgmt::events::console_line(&e));
            }
        }
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
