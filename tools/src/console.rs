//! A booted appliance: the QEMU process and its serial console.

use crate::lab::Lab;
use crate::qemu::Machine;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Console lines seen so far, shared with the reader thread.
#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    closed: bool,
}

/// One running appliance. Dropping it kills QEMU (by PID) and waits for it.
pub struct Appliance {
    child: Child,
    stdin: Option<ChildStdin>,
    console: Arc<(Mutex<Lines>, Condvar)>,
    pub started: Instant,
}

impl Appliance {
    /// Boots `machine`, inside the lab namespace when given (its taps live there).
    pub fn boot(machine: &Machine, lab: Option<&Lab>) -> Result<Appliance> {
        let mut cmd = match lab {
            Some(lab) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", lab.ns(), "qemu-system-x86_64"])
                    .args(machine.args());
                c
            }
            None => machine.command(),
        };
        Self::spawn(&mut cmd)
    }

    /// Starts any QEMU command line whose serial console is on stdout.
    pub fn spawn(cmd: &mut Command) -> Result<Appliance> {
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting QEMU")?;
        let console = Arc::new((Mutex::new(Lines::default()), Condvar::new()));
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, tag) in [
            (Box::new(stdout) as Box<dyn std::io::Read + Send>, ""),
            (Box::new(stderr), "qemu: "),
        ] {
            let console = Arc::clone(&console);
            std::thread::spawn(move || {
                let reader = BufReader::new(stream);
                for line in reader.split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_string();
                    let (lock, cv) = &*console;
                    lock.lock().unwrap().lines.push(format!("{tag}{text}"));
                    cv.notify_all();
                }
                if tag.is_empty() {
                    let (lock, cv) = &*console;
                    lock.lock().unwrap().closed = true;
                    cv.notify_all();
                }
            });
        }
        let stdin = child.stdin.take();
        Ok(Appliance {
            child,
            stdin,
            console,
            started,
        })
    }

    /// Waits until a console line satisfies `pred` and returns it; fails with
    /// the whole console after `timeout` or if QEMU exits first.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        self.wait_for_after(0, what, timeout, pred)
    }

    /// The number of console lines so far: a mark for [`Self::wait_for_after`].
    pub fn mark(&self) -> usize {
        self.console.0.lock().unwrap().lines.len()
    }

    /// As [`Self::wait_for`], looking only at lines after `mark` (the answer
    /// to a command typed after the mark was taken).
    pub fn wait_for_after(
        &self,
        mark: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.console;
        let mut seen = lock.lock().unwrap();
        let mut from = mark.min(seen.lines.len());
        loop {
            if let Some(line) = seen.lines[from..].iter().find(|l| pred(l)) {
                return Ok(line.clone());
            }
            from = seen.lines.len();
            let now = Instant::now();
            if seen.closed || now >= deadline {
                let why = if seen.closed {
                    "QEMU exited"
                } else {
                    "timed out"
                };
                bail!(
                    "{why} waiting for {what}; console:\n{}",
                    seen.lines.join("\n")
                );
            }
            seen = cv.wait_timeout(seen, deadline - now).unwrap().0;
        }
    }

    /// Waits for the `ready` line and returns the milliseconds it reports.
    pub fn wait_ready(&self, timeout: Duration) -> Result<f64> {
        let line = self.wait_for("the ready line", timeout, |l| l.starts_with("ready"))?;
        parse_ready_ms(&line).with_context(|| format!("no milliseconds in {line:?}"))
    }

    /// Everything the console printed so far.
    pub fn console(&self) -> String {
        self.console.0.lock().unwrap().lines.join("\n")
    }

    /// Types a line at the serial console.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("console input closed")?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\r")?;
        stdin.flush()?;
        Ok(())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Appliance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ready in 12.345 ms since kernel entry` -> 12.345
pub fn parse_ready_ms(line: &str) -> Option<f64> {
    let rest = line.strip_prefix("ready in ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ready_line() {
        assert_eq!(
            super::parse_ready_ms("ready in 12.5 ms since kernel entry"),
            Some(12.5)
        );
        assert_eq!(super::parse_ready_ms("ready"), None);
    }
}
