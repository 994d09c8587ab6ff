//! A small QMP (QEMU Machine Protocol) client: typing on the VM's PS/2
//! keyboard and taking screenshots of its screen, as the tests of the
//! screen console need, and pulling a virtual cable (`set_link`), as an
//! administrator does in VMware or Hyper-V.
//!
//! QEMU's tap backend does not watch the host side of the tap, so
//! `ip link set tapN down` is invisible to the guest; `set_link` is how a
//! hypervisor tells the virtual NIC its link went down.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

/// A QMP connection in command mode.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Pause after each key: the appliance polls its keyboard every 20 ms and
/// the emulated controller queues only a few bytes.
const KEY_GAP: Duration = Duration::from_millis(40);

fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The QEMU key code and whether Shift is needed, for a character on a US
/// keyboard.
fn qcode(c: char) -> Option<(String, bool)> {
    let plain = |s: &str| Some((s.to_string(), false));
    let shifted = |s: &str| Some((s.to_string(), true));
    match c {
        'a'..='z' | '0'..='9' => plain(&c.to_string()),
        'A'..='Z' => shifted(&c.to_ascii_lowercase().to_string()),
        ' ' => plain("spc"),
        '\n' => plain("ret"),
        '.' => plain("dot"),
        ',' => plain("comma"),
        '/' => plain("slash"),
        '-' => plain("minus"),
        '=' => plain("equal"),
        ';' => plain("semicolon"),
        ':' => shifted("semicolon"),
        '_' => shifted("minus"),
        _ => None,
    }
}

impl Qmp {
    /// Connects to the socket at `path` (waiting up to `timeout` for QEMU
    /// to create it) and enters command mode.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("connecting to {}", path.display()));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut q = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let mut greeting = String::new();
        q.reader.read_line(&mut greeting)?;
        if !greeting.contains("\"QMP\"") {
            bail!("not a QMP greeting: {greeting}");
        }
        q.execute("qmp_capabilities", None)?;
        Ok(q)
    }

    /// Runs a command (`arguments` is a JSON object or nothing) and returns
    /// its reply line; a QMP error is an error.
    pub fn execute(&mut self, command: &str, arguments: Option<&str>) -> Result<String> {
        let msg = match arguments {
            Some(a) => format!("{{\"execute\": {}, \"arguments\": {a}}}\n", quote(command)),
            None => format!("{{\"execute\": {}}}\n", quote(command)),
        };
        self.writer.write_all(msg.as_bytes())?;
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("QMP connection closed during {command}");
            }
            if line.contains("\"event\"") {
                continue;
            }
            if line.contains("\"error\"") {
                bail!("QMP {command}: {line}");
            }
            return Ok(line);
        }
    }

    fn key_event(&mut self, qcode: &str, down: bool) -> Result<()> {
        let args = format!(
            "{{\"events\": [{{\"type\": \"key\", \"data\": {{\"down\": {down}, \"key\": {{\"type\": \"qcode\", \"data\": {}}}}}}}]}}",
            quote(qcode)
        );
        self.execute("input-send-event", Some(&args))?;
        Ok(())
    }

    /// Presses and releases one key (with Shift if asked).
    pub fn press(&mut self, qcode: &str, shift: bool) -> Result<()> {
        if shift {
            self.key_event("shift", true)?;
        }
        self.key_event(qcode, true)?;
        self.key_event(qcode, false)?;
        if shift {
            self.key_event("shift", false)?;
        }
        std::thread::sleep(KEY_GAP);
        Ok(())
    }

    /// Types `text` on the keyboard (`\n` is Enter).
    pub fn type_text(&mut self, text: &str) -> Result<()> {
        for c in text.chars() {
            let (code, shift) = qcode(c).with_context(|| format!("no key for {c:?}"))?;
            self.press(&code, shift)?;
        }
        Ok(())
    }

    /// Sets the link of the NIC on netdev `netdev` (e.g. `n0`) up or down.
    pub fn set_link(&mut self, netdev: &str, up: bool) -> Result<()> {
        let args = format!("{{\"name\": {}, \"up\": {up}}}", quote(netdev));
        self.execute("set_link", Some(&args))?;
        Ok(())
    }

    /// Saves the screen to `path` (`format`: "ppm" or "png").
    pub fn screendump(&mut self, path: &Path, format: &str) -> Result<()> {
        let args = format!(
            "{{\"filename\": {}, \"format\": {}}}",
            quote(&path.display().to_string()),
            quote(format)
        );
        self.execute("screendump", Some(&args))?;
        Ok(())
    }
}

/// Width, height and RGB bytes of a binary PPM (P6, maxval 255) image.
pub fn read_ppm(bytes: &[u8]) -> Result<(usize, usize, &[u8])> {
    let mut fields = Vec::new();
    let mut at = 0;
    while fields.len() < 4 {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if bytes.get(at) == Some(&b'#') {
            while at < bytes.len() && bytes[at] != b'\n' {
                at += 1;
            }
            continue;
        }
        let start = at;
        while at < bytes.len() && !bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        if start == at {
            bail!("truncated PPM header");
        }
        fields.push(String::from_utf8_lossy(&bytes[start..at]).to_string());
    }
    if fields[0] != "P6" || fields[3] != "255" {
        bail!("not a P6 PPM with maxval 255: {fields:?}");
    }
    let (w, h): (usize, usize) = (fields[1].parse()?, fields[2].parse()?);
    let data = bytes.get(at + 1..).context("no PPM data")?;
    if data.len() < w * h * 3 {
        bail!(
            "PPM data is {} bytes, {w}x{h} needs {}",
            data.len(),
            w * h * 3
        );
    }
    Ok((w, h, &data[..w * h * 3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_for_a_wizard_answer() {
        assert_eq!(qcode('1'), Some(("1".into(), false)));
        assert_eq!(qcode('/'), Some(("slash".into(), false)));
        assert_eq!(qcode('L'), Some(("l".into(), true)));
        assert_eq!(qcode('\u{e9}'), None);
    }

    #[test]
    fn ppm_header() {
        let mut img = b"P6\n# comment\n2 1\n255\n".to_vec();
        img.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let (w, h, data) = read_ppm(&img).unwrap();
        assert_eq!((w, h, data), (2, 1, &[1u8, 2, 3, 4, 5, 6][..]));
        assert!(read_ppm(b"P5\n1 1\n255\n\0").is_err());
    }
}
