//! `tools keygen|upload|rollback|rs|status|logs`: the management plane from
//! the administrator's machine. Requests are signed here with the private
//! key (which never leaves this machine) and sent to the appliance's
//! command port; status and logs are read from its HTTP port.

use anyhow::{Context, Result, bail};
use lb_core::config::AdminState;
use lb_core::mgmt::events::Event;
use lb_core::mgmt::keys::SigningKey;
use lb_core::mgmt::request::{Action, Request, sign};
use lb_core::mgmt::status::{self, Status};
use lb_core::mgmt::wire::{FrameReader, Progress, REPLY_MAGIC, REQUEST_MAGIC, Reply, frame};
use lb_core::mgmt::{COMMAND_PORT, HTTP_PORT};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long one exchange with the appliance may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// `HOST[:PORT]` with `default_port` when none is given.
pub fn address(to: &str, default_port: u16) -> Result<SocketAddr> {
    let with_port = if to
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        to.to_string()
    } else {
        format!("{to}:{default_port}")
    };
    with_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {with_port}"))?
        .next()
        .with_context(|| format!("{with_port} has no address"))
}

/// Writes `PREFIX.key` (private, mode 0600) and `PREFIX.pub`. Refuses to
/// overwrite an existing key.
pub fn keygen(prefix: &Path) -> Result<(PathBuf, PathBuf)> {
    use std::os::unix::fs::OpenOptionsExt;
    let private = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom")?;
    let key = SigningKey::from_seed(seed);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&private)
        .with_context(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                private.display()
            )
        })?;
    f.write_all(key.to_text().as_bytes())?;
    std::fs::write(&public, format!("{}\n", key.public()))
        .with_context(|| format!("writing {}", public.display()))?;
    Ok((private, public))
}

/// Reads a private key file written by [`keygen`].
pub fn load_key(path: &Path) -> Result<SigningKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    SigningKey::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// `GET path` on the appliance's HTTP port; the body of a 200 answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<Vec<u8>> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading {path} from {addr}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .with_context(|| format!("{addr}{path}: no HTTP header in the answer"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status_line = head.lines().next().unwrap_or("");
    if status_line.split_whitespace().nth(1) != Some("200") {
        bail!("{addr}{path}: {status_line}");
    }
    Ok(raw[split + 4..].to_vec())
}

/// The appliance's status (`/api/status`).
pub fn fetch_status(http: SocketAddr) -> Result<Status> {
    let body = http_get(http, "/api/status")?;
    status::from_json(&body).with_context(|| format!("{http}/api/status is not a status document"))
}

/// Sends a request frame's payload and returns the appliance's reply.
pub fn send(addr: SocketAddr, payload: &[u8]) -> Result<Reply> {
    send_raw(addr, &frame(REQUEST_MAGIC, payload))
}

/// Sends any bytes as they are and reads a reply frame.
pub fn send_raw(addr: SocketAddr, bytes: &[u8]) -> Result<Reply> {
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(TIMEOUT))?;
    s.set_write_timeout(Some(TIMEOUT))?;
    // The appliance may answer (a rejection) before taking everything.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    read_reply(&mut s)
}

/// Reads one reply frame from `s`.
pub fn read_reply(s: &mut TcpStream) -> Result<Reply> {
    let mut reader = FrameReader::new(REPLY_MAGIC, 1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).context("reading the appliance's reply")?;
        let p = if n == 0 {
            reader.end()
        } else {
            reader.feed(&buf[..n])
        };
        match p {
            Progress::NeedMore => continue,
            Progress::Failed(e) => bail!("the appliance's reply: {e}"),
            Progress::Done { .. } => break,
        }
    }
    Reply::decode(reader.payload().unwrap_or_default())
        .context("the appliance's reply does not decode")
}

/// Where and how to send signed requests.
pub struct Target {
    /// The command port.
    pub command: SocketAddr,
    /// The HTTP port (serial and hostname come from its status).
    pub http: SocketAddr,
    /// Use this serial instead of max(now in µs, running + 1).
    pub serial: Option<u64>,
}

impl Target {
    /// `--to HOST[:PORT]` (the command port) and the HTTP port.
    pub fn new(to: &str, http_port: Option<u16>, serial: Option<u64>) -> Result<Target> {
        let command = address(to, COMMAND_PORT)?;
        let mut http = command;
        http.set_port(http_port.unwrap_or(HTTP_PORT));
        Ok(Target {
            command,
            http,
            serial,
        })
    }

    /// Signs `action` for the appliance (its hostname, a serial above its
    /// running one) and sends it.
    pub fn request(&self, key: &SigningKey, action: Action) -> Result<Reply> {
        let st = fetch_status(self.http)?;
        let serial = self.serial.unwrap_or(now_serial().max(st.serial + 1));
        let req = Request {
            serial,
            appliance: st.hostname,
            action,
        };
        send(self.command, &sign(key, &req))
    }
}

/// The default serial: the time in microseconds since 1970, so requests
/// from one machine increase without the appliance being asked.
pub fn now_serial() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A whole request frame, signed: what `--sign-only` writes.
pub fn signed_frame(key: &SigningKey, req: &Request) -> Vec<u8> {
    frame(REQUEST_MAGIC, &sign(key, req))
}

/// The upload action for a TOML config file (checked and compiled here).
pub fn upload_action(config: &Path) -> Result<Action> {
    let cfg = crate::config_cmd::load(config)?;
    let blob = lb_core::envelope::encode(&cfg)
        .map_err(|e| anyhow::anyhow!("{}: {e}", config.display()))?;
    Ok(Action::Upload(blob))
}

/// `SERVICE/SERVER` and a state for `tools rs`.
pub fn state_action(state: &str, which: &str) -> Result<Action> {
    let state = match state {
        "online" => AdminState::Online,
        "drain" => AdminState::Drain,
        "halt" => AdminState::Halt,
        other => bail!("unknown state {other:?} (online, drain or halt)"),
    };
    let Some((service, server)) = which.split_once('/') else {
        bail!("name the real server as SERVICE/SERVER, e.g. DICOM-Modalities/DICOM1");
    };
    Ok(Action::SetState {
        service: service.into(),
        server: server.into(),
        state,
    })
}

/// Prints a reply and says whether it was applied.
pub fn report(reply: &Reply) -> bool {
    if reply.applied {
        println!("applied (serial {}): {}", reply.serial, reply.message);
    } else {
        println!(
            "rejected: {} (running serial {})",
            reply.message, reply.serial
        );
    }
    reply.applied
}

/// `tools status`: the same text as the console's `status`, with a header.
pub fn status_text(st: &Status) -> String {
    format!(
        "{} {} up {} s, config serial {}\n{}",
        st.hostname,
        st.version,
        st.uptime_s,
        st.serial,
        st.to_text()
    )
}

/// `tools logs`: the appliance's recent events (`/api/events`).
pub fn fetch_events(http: SocketAddr) -> Result<Vec<Event>> {
    let body = http_get(http, "/api/events")?;
    serde_json::from_slice(&body).with_context(|| format!("{http}/api/events is not an event list"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_take_a_default_port() {
        assert_eq!(address("127.0.0.1", 9081).unwrap().port(), 9081);
        assert_eq!(address("127.0.0.1:7000", 9081).unwrap().port(), 7000);
    }

    #[test]
    fn keygen_writes_a_private_key_only_its_owner_reads() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lbmed-keygen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (private, public) = keygen(&dir.join("admin")).unwrap();
        let mode = std::fs::metadata(&private).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = load_key(&private).unwrap();
        let text = std::fs::read_to_string(&public).unwrap();
        assert_eq!(text.trim(), key.public().to_string());
        assert!(keygen(&dir.join("admin")).is_err(), "must not overwrite");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn state_actions_name_a_server() {
        assert!(matches!(
            state_action("drain", "DICOM/PACS1").unwrap(),
            Action::SetState {
                state: AdminState::Drain,
                ..
            }
        ));
        assert!(state_action("pause", "DICOM/PACS1").is_err());
        assert!(state_action("drain", "PACS1").is_err());
    }
}
