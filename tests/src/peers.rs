//! Real protocol peers run inside lab namespaces: dcmtk's `storescp` as a
//! PACS real server, `storescu`/`echoscu` as modalities, and small Python
//! services. Every process started here is killed by its PID when its guard
//! drops.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tools::lab::Host;

/// A background process; killed (by PID) and reaped on drop.
pub struct Process {
    child: Child,
    pub what: String,
}

impl Process {
    pub fn spawn(host: &Host, argv: &[&str], log: &Path) -> Result<Process> {
        Self::spawn_with(host, argv, std::fs::File::create(log)?)
    }

    /// [`Process::spawn`] appending to `log` (a restarted peer keeps the
    /// first one's record).
    pub fn spawn_appending(host: &Host, argv: &[&str], log: &Path) -> Result<Process> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        Self::spawn_with(host, argv, file)
    }

    fn spawn_with(host: &Host, argv: &[&str], file: std::fs::File) -> Result<Process> {
        let child = host
            .command(argv)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {argv:?} in {}", host.ns))?;
        Ok(Process {
            child,
            what: argv.join(" "),
        })
    }

    /// Ends the process now (by its PID).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits (bounded) for the process to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                bail!("{} still running after {timeout:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The process's PID (`ip netns exec` execs the command: it is the
    /// command's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Sends SIGINT to `pid` (a process a test started), e.g. so that hping3
/// stops and prints its statistics.
pub fn interrupt(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status();
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A scratch folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lbtest-{}-{n}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn sub(&self, name: &str) -> Result<PathBuf> {
        let p = self.0.join(name);
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits until something listens on `port` in `host` (TCP), bounded.
pub fn wait_listening(host: &Host, port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let want = format!(":{port} ");
    while Instant::now() < deadline {
        let out = host.exec(&["ss", "-Htln"])?;
        if String::from_utf8_lossy(&out.stdout).contains(&want) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on port {port} in {}", host.ns)
}

/// A PACS real server: `storescp` (AE title `PACS`) writing what it
/// receives, bit-preserving, into `dir`; verbose log in `log`.
pub fn storescp(host: &Host, port: u16, dir: &Path, log: &Path) -> Result<Process> {
    let port_s = port.to_string();
    let dir_s = dir.display().to_string();
    let p = Process::spawn(
        host,
        &[
            "storescp", "-v", "-aet", "PACS", "+B", "-od", &dir_s, &port_s,
        ],
        log,
    )?;
    wait_listening(host, port, Duration::from_secs(10))?;
    Ok(p)
}

/// Sends `files` in one association with `storescu`; returns its output.
pub fn storescu(host: &Host, addr: &str, port: u16, files: &[PathBuf]) -> Result<Output> {
    let port_s = port.to_string();
    let mut argv: Vec<String> = [
        "storescu", "-aet", "MODALITY", "-aec", "PACS", "-to", "30", "-ta", "30", "-td", "60",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.push(addr.into());
    argv.push(port_s);
    argv.extend(files.iter().map(|f| f.display().to_string()));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    Ok(host.command(&refs).output()?)
}

/// One C-ECHO association with `echoscu`; true when it succeeded.
pub fn echoscu(host: &Host, addr: &str, port: u16) -> Result<bool> {
    let port_s = port.to_string();
    let out = host
        .command(&[
            "echoscu", "-aet", "MODALITY", "-aec", "PACS", "-to", "10", "-ta", "10", addr, &port_s,
        ])
        .output()?;
    Ok(out.status.success())
}
