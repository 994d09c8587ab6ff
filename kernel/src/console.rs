//! The console session shared by COM1 and the screen with the PS/2
//! keyboard: one line editor (lb-core's) whose keys come from either, and
//! whose output, like everything the appliance prints, goes to both.
//!
//! While a prompt is showing, output from elsewhere (a health change, the
//! `ready` line) is held until its line is complete, then printed in place
//! of the prompt, which is drawn again below it with what was typed so far:
//! nothing typed is lost and lines never interleave.

use crate::{screen, serial};
use alloc::string::String;
use core::cell::RefCell;
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};
use critical_section::Mutex;
use embassy_time::{Instant, Timer};
use lb_core::console::{Completer, Key, LineEditor, Outcome};

static EDITOR: Mutex<RefCell<Option<LineEditor>>> = Mutex::new(RefCell::new(None));
/// Output from elsewhere waiting for the end of its line.
static HELD: Mutex<RefCell<String>> = Mutex::new(RefCell::new(String::new()));
/// A prompt is showing (checked without a borrow on every print).
static PROMPT: AtomicBool = AtomicBool::new(false);

/// Sends text to the UART and the screen.
pub fn write_raw(s: &str) {
    serial::write(s.as_bytes());
    screen::write(s.as_bytes());
}

struct Raw;

impl Write for Raw {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_raw(s);
        Ok(())
    }
}

/// `print!` and `println!` from thread context.
pub fn print(args: fmt::Arguments) {
    if !PROMPT.load(Ordering::Relaxed) {
        let _ = Raw.write_fmt(args);
        return;
    }
    critical_section::with(|cs| {
        let (Ok(mut held), Ok(editor)) = (
            HELD.borrow(cs).try_borrow_mut(),
            EDITOR.borrow(cs).try_borrow(),
        ) else {
            // Re-entered (cannot happen on one CPU); print rather than lose it.
            let _ = Raw.write_fmt(args);
            return;
        };
        let _ = held.write_fmt(args);
        let Some(end) = held.rfind('\n') else {
            return;
        };
        let lines: String = held.drain(..=end).collect();
        let mut out = String::new();
        if let Some(ed) = editor.as_ref() {
            ed.erase(&mut out);
        }
        out.push_str(&lines);
        if let Some(ed) = editor.as_ref() {
            ed.redraw(&mut out);
        }
        write_raw(&out);
    });
}

/// Prints what was held back (when the prompt goes away).
fn release_held() {
    let held = critical_section::with(|cs| core::mem::take(&mut *HELD.borrow_ref_mut(cs)));
    if !held.is_empty() {
        write_raw(&held);
    }
}

fn with_editor<R>(f: impl FnOnce(&mut LineEditor, &mut String) -> R) -> R {
    let mut out = String::new();
    let r = critical_section::with(|cs| {
        let mut ed = EDITOR.borrow_ref_mut(cs);
        let ed = ed.get_or_insert_with(LineEditor::new);
        let r = f(ed, &mut out);
        PROMPT.store(ed.is_active(), Ordering::Relaxed);
        r
    });
    write_raw(&out);
    r
}

/// Shows `prompt` and starts taking a line (`secret`: no echo).
pub fn prompt(text: &str, secret: bool) {
    release_held();
    with_editor(|ed, out| ed.start(text, secret, out));
}

/// Feeds one key to the line editor.
pub fn key(key: Key, completer: &dyn Completer) -> Outcome {
    let outcome = with_editor(|ed, out| ed.feed(key, completer, out));
    if outcome != Outcome::Editing {
        release_held();
    }
    outcome
}

/// Longest a command's output waits for the UART to catch up.
const PACE_MS: u64 = 2_000;

/// Waits (bounded) until the serial buffer is at most half full, so a
/// command's long output is paced by the UART instead of dropped. Only the
/// console task waits here; everything else prints without waiting.
pub async fn pace() {
    let start = Instant::now();
    while serial::backlog() > serial::CAPACITY / 2 && start.elapsed().as_millis() < PACE_MS {
        Timer::after_millis(5).await;
    }
}
