//! iperf3 as a peer: a server in a real server's namespace and bounded
//! client runs whose JSON report is read, shared by `tools bench l4` and the
//! end-to-end tests (which check exact byte counts through the VIPs).

use crate::lab::Host;
use anyhow::{Context, Result, bail};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// iperf3's default port: the TCP control connection and the data stream use it.
pub const PORT: u16 = 5201;

/// `iperf3 -s` in the real server's namespace, killed (by PID) on drop.
pub struct Server {
    child: Child,
}

impl Server {
    pub fn start(server: &Host, bind: Option<&str>) -> Result<Server> {
        let port = PORT.to_string();
        let mut argv = vec!["iperf3", "-s", "-p", &port];
        if let Some(addr) = bind {
            argv.extend(["-B", addr]);
        }
        let child = server
            .command(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        Ok(Server { child })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one iperf3 client test (for `seconds`, unless `args` give a byte
/// count with `-n`), killed if it runs 20 s past `seconds`, and returns its
/// JSON report.
pub fn client(client: &Host, args: &[&str], seconds: u32, scratch: &Path) -> Result<String> {
    let out = std::fs::File::create(scratch)?;
    let secs = seconds.to_string();
    let port = PORT.to_string();
    let mut argv = vec!["iperf3", "-J", "-p", &port, "--connect-timeout", "3000"];
    if !args.contains(&"-n") {
        argv.extend(["-t", &secs]);
    }
    argv.extend_from_slice(args);
    let mut child = client
        .command(&argv)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(Stdio::null())
        .spawn()
        .context("starting iperf3 -c")?;
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds) + 20);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("iperf3 {} did not finish in time", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let json = std::fs::read_to_string(scratch)?;
    // iperf3 3.12 exits 0 with `-J` when it cannot connect: its report's
    // "error" is what says the test failed.
    if let Some(why) = json_string(&json, "error") {
        bail!("iperf3 {}: {why}", args.join(" "));
    }
    if !status.success() {
        bail!("iperf3 {}: {status}", args.join(" "));
    }
    Ok(json)
}

/// The number at `"key":` in the flat object that follows `"section":` in
/// iperf3's JSON (enough for its report; no JSON crate needed).
pub fn json_number(json: &str, section: &str, key: &str) -> Option<f64> {
    let at = json.find(&format!("\"{section}\""))?;
    let open = at + json[at..].find('{')?;
    let close = open + json[open..].find('}')?;
    let object = &json[open..close];
    let k = object.find(&format!("\"{key}\""))?;
    let rest = object[k + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// The string at top-level-ish `"key":` (iperf3's `"error"`).
pub fn json_string(json: &str, key: &str) -> Option<String> {
    let k = json.find(&format!("\"{key}\""))?;
    let rest = json[k + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start()
        .strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UDP_REPORT: &str = r#"{"start":{},"intervals":[{"sum":{"bytes":1}}],
      "end":{"sum":{"bytes":12303360,"packets":192240},
      "sum_sent":{"start":0,"bytes":12303360,"seconds":2.000095},
      "sum_received":{"start":0,"end":2.000202,"seconds":2.000202,"bytes":5456832,"bits_per_second":2.1825123e7,"sender":false}}}"#;

    #[test]
    fn iperf3_report_numbers() {
        assert_eq!(
            json_number(UDP_REPORT, "sum_received", "bytes"),
            Some(5456832.0)
        );
        assert_eq!(
            json_number(UDP_REPORT, "sum_received", "seconds"),
            Some(2.000202)
        );
        assert_eq!(
            json_number(UDP_REPORT, "sum_received", "bits_per_second"),
            Some(2.1825123e7)
        );
        assert_eq!(json_number(UDP_REPORT, "sum_received", "missing"), None);
        assert_eq!(json_number("{}", "sum_received", "bytes"), None);
        assert_eq!(
            json_number("\"sum_received\"", "sum_received", "bytes"),
            None
        );
    }

    #[test]
    fn iperf3_error() {
        let j = r#"{"start":{}, "error": "unable to connect to server: Connection refused"}"#;
        assert_eq!(
            json_string(j, "error").as_deref(),
            Some("unable to connect to server: Connection refused")
        );
        assert_eq!(json_string("{}", "error"), None);
    }
}
