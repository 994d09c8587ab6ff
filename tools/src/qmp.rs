//! A minimal QMP (QEMU Machine Protocol) client: enough to pull a virtual
//! cable (`set_link`), as an administrator does in VMware or Hyper-V.
//!
//! QEMU's tap backend does not watch the host side of the tap, so
//! `ip link set tapN down` is invisible to the guest; `set_link` is how a
//! hypervisor tells the virtual NIC its link went down.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A connected QMP session in command mode.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects to the socket QEMU listens on (`-qmp unix:PATH,server=on,
    /// wait=off`), retrying while QEMU starts.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e)
                        .with_context(|| format!("connecting to QMP at {}", path.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = q.line()?;
        if !greeting.contains("\"QMP\"") {
            bail!("not a QMP greeting: {greeting}");
        }
        q.execute("qmp_capabilities", "{}")?;
        Ok(q)
    }

    fn line(&mut self) -> Result<String> {
        let mut l = String::new();
        if self.reader.read_line(&mut l)? == 0 {
            bail!("QMP connection closed");
        }
        Ok(l)
    }

    /// Runs `command` with JSON `arguments` and returns its `return` line
    /// (events that arrive first are skipped).
    pub fn execute(&mut self, command: &str, arguments: &str) -> Result<String> {
        writeln!(
            self.writer,
            "{{\"execute\": \"{command}\", \"arguments\": {arguments}}}"
        )?;
        loop {
            let l = self.line()?;
            if l.contains("\"return\"") {
                return Ok(l);
            }
            if l.contains("\"error\"") {
                bail!("QMP {command}: {}", l.trim());
            }
        }
    }

    /// Sets the link of the NIC on netdev `netdev` (e.g. `n0`) up or down.
    pub fn set_link(&mut self, netdev: &str, up: bool) -> Result<()> {
        self.execute(
            "set_link",
            &format!("{{\"name\": \"{netdev}\", \"up\": {up}}}"),
        )?;
        Ok(())
    }
}
