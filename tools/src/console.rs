//! A booted appliance: the QEMU process and its serial console.

use crate::lab::Lab;
use crate::qemu::Machine;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Console lines seen so far, shared with the reader thread.
#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    /// The line being written (a prompt waiting for input has no newline).
    partial: Vec<u8>,
    closed: bool,
}

/// What a terminal shows for one line of output: `\r` returns to the
/// start, `\u{8}` moves one left, other bytes overwrite (the console redraws
/// its prompt this way around other output).
pub fn render(raw: &[u8]) -> String {
    let mut cells: Vec<u8> = Vec::new();
    let mut col = 0;
    for &b in raw {
        match b {
            b'\r' => col = 0,
            8 => col = usize::saturating_sub(col, 1),
            b => {
                if col < cells.len() {
                    cells[col] = b;
                } else {
                    cells.push(b);
                }
                col += 1;
            }
        }
    }
    String::from_utf8_lossy(&cells).trim_end().to_string()
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
        {
            let console = Arc::clone(&console);
            std::thread::spawn(move || {
                let mut stdout = stdout;
                let mut buf = [0u8; 4096];
                loop {
                    let n = match stdout.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let (lock, cv) = &*console;
                    let mut seen = lock.lock().unwrap();
                    for &b in &buf[..n] {
                        if b == b'\n' {
                            let line = render(&std::mem::take(&mut seen.partial));
                            seen.lines.push(line);
                        } else {
                            seen.partial.push(b);
                        }
                    }
                    cv.notify_all();
                }
                let (lock, cv) = &*console;
                lock.lock().unwrap().closed = true;
                cv.notify_all();
            });
        }
        {
            let console = Arc::clone(&console);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).split(b'\n') {
                    let Ok(line) = line else { break };
                    let text = String::from_utf8_lossy(&line)
                        .trim_end_matches('\r')
                        .to_string();
                    let (lock, cv) = &*console;
                    lock.lock().unwrap().lines.push(format!("qemu: {text}"));
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
        self.wait_from(0, what, timeout, pred)
    }

    /// Like [`wait_for`](Self::wait_for), looking only at lines from
    /// number `from` on (see [`mark`](Self::mark)).
    pub fn wait_from(
        &self,
        mut from: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.console;
        let mut seen = lock.lock().unwrap();
        loop {
            if let Some(line) = seen
                .lines
                .get(from..)
                .unwrap_or(&[])
                .iter()
                .find(|l| pred(l))
            {
                return Ok(line.clone());
            }
            from = from.max(seen.lines.len());
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
        let seen = self.console.0.lock().unwrap();
        let mut all = seen.lines.join("\n");
        all.push('\n');
        all.push_str(&render(&seen.partial));
        all
    }

    /// The number of complete lines so far: later waits can start there.
    pub fn mark(&self) -> usize {
        self.console.0.lock().unwrap().lines.len()
    }

    /// Waits until the line being written (a prompt, which has no
    /// newline yet) ends with `prompt`; fails after `timeout`.
    pub fn wait_prompt(&self, prompt: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let (lock, cv) = &*self.console;
        let mut seen = lock.lock().unwrap();
        loop {
            if render(&seen.partial).ends_with(prompt.trim_end()) {
                return Ok(());
            }
            let now = Instant::now();
            if seen.closed || now >= deadline {
                bail!(
                    "no prompt {prompt:?}; console:\n{}\n{}",
                    seen.lines.join("\n"),
                    render(&seen.partial)
                );
            }
            seen = cv.wait_timeout(seen, deadline - now).unwrap().0;
        }
    }

    /// Types bytes at the serial console as they are (no Enter added).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("console input closed")?;
        stdin.write_all(bytes)?;
        stdin.flush()?;
        Ok(())
    }

    /// Waits (bounded) for QEMU to exit by itself; its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!(
                    "QEMU still running after {timeout:?}; console:\n{}",
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
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
    fn terminal_rendering() {
        assert_eq!(
            super::render(b"lb> \r      \rready in 1 ms\r"),
            "ready in 1 ms"
        );
        assert_eq!(super::render(b"lb> stat\x08\x08at"), "lb> stat");
        assert_eq!(super::render(b"ab\x08\x08\x08X"), "Xb");
    }

    #[test]
    fn ready_line() {
        assert_eq!(
            super::parse_ready_ms("ready in 12.5 ms since kernel entry"),
            Some(12.5)
        );
        assert_eq!(super::parse_ready_ms("ready"), None);
    }
}
