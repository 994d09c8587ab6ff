//! The health-check dialogs against real peers on loopback, over std sockets:
//! dcmtk's storescp / dcmqrscp (DICOM), the PyPI `hl7` package's MLLP server
//! (tests/peers/hl7_mllp_server.py), `python3 -m http.server` and Debian's
//! nginx with TLS 1.2-only, TLS 1.3-only and RSA-key-exchange-only sites
//! (tests/peers/nginx_tls.sh).
//!
//! A test whose peer is not installed fails under `tools test` (which sets
//! `LBMED_REQUIRE_PEERS=1` after installing them); a plain `cargo test` on a
//! machine without them skips it with a printed note instead.
//! Every process started here is killed by its handle when the test ends.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration as StdDuration;

use lb_core::health::{
    Action, CheckKind, CheckParams, ConnectError, Dialog, DicomFailure, DicomParams, FailReason,
    Hl7Failure, Hl7Params, HttpFailure, HttpParams, Phase, StatusAccept, TlsFailure, TlsParams,
    TlsVerify, Verdict, ca_from_pem, pin_from_hex,
};
use lb_core::time::{Duration, Instant};

/// A child process killed when dropped.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether a test may run without `what`: not under `tools test`, which
/// installs every peer and requires them. Panics there; prints a note and
/// returns true elsewhere (the caller then skips).
fn missing(what: &str) -> bool {
    if std::env::var_os("LBMED_REQUIRE_PEERS").is_some_and(|v| v == "1") {
        panic!("{what} is required (tools test installs it) but was not found");
    }
    eprintln!("SKIP: {what} not available");
    true
}

fn have_python_hl7() -> bool {
    Command::new("python3")
        .args(["-c", "import hl7.mllp"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port no other test of this run is handed: each call takes the next one
/// from a range chosen by the process id (the kernel's ephemeral choice may
/// give two parallel tests the same just-released port), skipping busy ones.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 200) as u16 * 100;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn wait_listening(port: u16) {
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(StdDuration::from_millis(50));
    }
    panic!("peer did not listen on port {port}");
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::ops::Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.0
    }
}

fn scratch(name: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("lb-health-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/health")
        .join(rel)
}

fn peers(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers")
        .join(rel)
}

/// Runs one check to its verdict over a real TCP connection, driving the
/// dialog exactly as the kernel task will: events in, actions out.
fn run(params: &CheckParams, seq: u32, port: u16) -> Verdict {
    let t0 = std::time::Instant::now();
    let now = || Instant(t0.elapsed().as_millis() as u64);
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut d = Dialog::new(params, seq).unwrap().with_wall_clock(unix);
    assert_eq!(d.start(now()), Action::Connect);
    let deadline = d.deadline().unwrap();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let left = |n: Instant| StdDuration::from_millis(deadline.since(n).millis().max(1));
    let mut stream = match TcpStream::connect_timeout(&addr, left(now())) {
        Ok(s) => s,
        Err(e) => match d.on_connect_failed(
            match e.kind() {
                ErrorKind::ConnectionRefused => ConnectError::Refused,
                _ => ConnectError::Failed,
            },
            now(),
        ) {
            Action::Done(v) => return v,
            a => panic!("connect failure gave {a:?}"),
        },
    };
    let mut action = d.on_connected(now());
    let mut buf = [0u8; 1500];
    loop {
        action = match action {
            Action::Done(v) => return v,
            Action::Connect => panic!("second Connect"),
            Action::Send(bytes) => match stream.write_all(&bytes) {
                Ok(()) => Action::Wait,
                Err(_) => d.on_closed(now()),
            },
            Action::Wait => {
                let n = now();
                if n >= deadline {
                    d.on_timeout(n)
                } else {
                    stream.set_read_timeout(Some(left(n))).unwrap();
                    match stream.read(&mut buf) {
                        Ok(0) => d.on_closed(now()),
                        Ok(k) => d.on_data(&buf[..k], now()),
                        Err(e)
                            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
                        {
                            d.on_timeout(now())
                        }
                        Err(_) => d.on_closed(now()),
                    }
                }
            }
        }
    }
}

fn dicom(calling: &str, called: &str) -> CheckParams {
    CheckParams {
        kind: CheckKind::Dicom(DicomParams {
            calling_ae: calling.into(),
            called_ae: called.into(),
        }),
        timeout: Duration::from_secs(10),
    }
}

fn storescp(extra: &[&str]) -> (Peer, u16, Scratch) {
    let port = free_port();
    let dir = scratch(&format!("storescp-{port}"));
    let child = Command::new("storescp")
        .args(["-aet", "STORESCP", "--ignore", "-od"])
        .arg(&*dir)
        .args(extra)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let peer = Peer(child);
    wait_listening(port);
    (peer, port, dir)
}

#[test]
fn dicom_echo_against_storescp() {
    if !have("storescp", "--version") && missing("storescp (dcmtk)") {
        return;
    }
    let (_peer, port, _dir) = storescp(&[]);
    // Several checks on the same server, as the scheduler would run them.
    for seq in 0..3 {
        assert_eq!(
            run(&dicom("LBHEALTH", "STORESCP"), seq, port),
            Verdict::Pass
        );
    }
}

#[test]
fn dicom_echo_refused_by_storescp() {
    if !have("storescp", "--version") && missing("storescp (dcmtk)") {
        return;
    }
    let (_peer, port, _dir) = storescp(&["--refuse"]);
    let v = run(&dicom("LBHEALTH", "STORESCP"), 0, port);
    let e = DicomFailure::AssociateRejected {
        result: 1,
        source: 1,
        reason: 1,
    };
    assert_eq!(v, Verdict::Fail(FailReason::Dicom(e)));
}

#[test]
fn dicom_verification_not_offered_by_storescp() {
    if !have("storescp", "--version") && missing("storescp (dcmtk)") {
        return;
    }
    let cfg = testdata("dicom/storescp-no-verification.cfg");
    let cfg = cfg.to_str().unwrap();
    let (_peer, port, _dir) = storescp(&["-xf", cfg, "NoVerification"]);
    let v = run(&dicom("LBHEALTH", "STORESCP"), 0, port);
    let e = DicomFailure::ContextRejected { result: 3 };
    assert_eq!(v, Verdict::Fail(FailReason::Dicom(e)));
    // Verification offered with Explicit VR LE only: our Implicit VR LE is refused.
    let (_peer, port, _dir) = storescp(&["-xf", cfg, "VerificationExplicitOnly"]);
    let v = run(&dicom("LBHEALTH", "STORESCP"), 0, port);
    let e = DicomFailure::ContextRejected { result: 4 };
    assert_eq!(v, Verdict::Fail(FailReason::Dicom(e)));
}

#[test]
fn dicom_called_ae_checked_by_dcmqrscp() {
    if !have("dcmqrscp", "--version") && missing("dcmqrscp (dcmtk)") {
        return;
    }
    let port = free_port();
    let dir = scratch("dcmqrscp");
    let template = std::fs::read_to_string(testdata("dicom/dcmqrscp.cfg")).unwrap();
    let cfg = template
        .replace("@STORAGE@", dir.to_str().unwrap())
        .replace(
            "NetworkTCPPort  = 11112",
            &format!("NetworkTCPPort  = {port}"),
        );
    let cfg_path = dir.join("qr.cfg");
    std::fs::write(&cfg_path, cfg).unwrap();
    let child = Command::new("dcmqrscp")
        .arg("-c")
        .arg(&cfg_path)
        .args(["--single-process", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _peer = Peer(child);
    wait_listening(port);
    let v = run(&dicom("LBHEALTH", "WRONGAE"), 0, port);
    let e = DicomFailure::AssociateRejected {
        result: 1,
        source: 1,
        reason: 7,
    };
    assert_eq!(v, Verdict::Fail(FailReason::Dicom(e)));
    assert_eq!(
        v.to_string(),
        "fail: DICOM A-ASSOCIATE-RJ result=1 source=1 reason=7 (called AE title not recognized, permanent)"
    );
    assert_eq!(run(&dicom("LBHEALTH", "QRSCP"), 1, port), Verdict::Pass);
}

/// Starts the MLLP server with `flags`; returns it and its port.
fn hl7_server(flags: &[&str]) -> (Peer, u16) {
    let mut child = Command::new("python3")
        .arg(peers("hl7_mllp_server.py"))
        .args(["--lifetime", "60"])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("MLLP server said {line:?}"));
    (Peer(child), port)
}

fn hl7(timeout_ms: u64) -> CheckParams {
    CheckParams {
        kind: CheckKind::Hl7(Hl7Params::default()),
        timeout: Duration::from_millis(timeout_ms),
    }
}

#[test]
fn hl7_against_library_mllp_server() {
    if !have_python_hl7() && missing("python3 with the `hl7` package") {
        return;
    }
    let (_peer, port) = hl7_server(&[]);
    for seq in 0..3 {
        assert_eq!(run(&hl7(5000), seq, port), Verdict::Pass);
    }
    let (_peer, port) = hl7_server(&["--ack", "CA"]);
    assert_eq!(run(&hl7(5000), 9, port), Verdict::Pass);
}

#[test]
fn hl7_failures_against_library_mllp_server() {
    if !have_python_hl7() && missing("python3 with the `hl7` package") {
        return;
    }
    let hl7_fail = |e| Verdict::Fail(FailReason::Hl7(e));
    let (_p, port) = hl7_server(&["--ack", "AE"]);
    let v = run(&hl7(5000), 1, port);
    let e = Hl7Failure::NegativeAck {
        code: "AE".into(),
        text: String::new(),
    };
    assert_eq!(v, hl7_fail(e));
    let (_p, port) = hl7_server(&["--ack", "AR"]);
    assert!(matches!(
        run(&hl7(5000), 1, port),
        Verdict::Fail(FailReason::Hl7(Hl7Failure::NegativeAck { .. }))
    ));
    let (_p, port) = hl7_server(&["--wrong-control-id"]);
    let e = Hl7Failure::ControlIdMismatch {
        expected: "LBHC0000000005".into(),
        got: "NOT-LBHC0000000005".into(),
    };
    assert_eq!(run(&hl7(5000), 5, port), hl7_fail(e));
    let (_p, port) = hl7_server(&["--close"]);
    assert_eq!(
        run(&hl7(5000), 1, port),
        Verdict::Fail(FailReason::Closed(Phase::Hl7Ack))
    );
    let (_p, port) = hl7_server(&["--garbage"]);
    assert_eq!(run(&hl7(5000), 1, port), hl7_fail(Hl7Failure::NoStartBlock));
    let (_p, port) = hl7_server(&["--delay", "3"]);
    assert_eq!(
        run(&hl7(800), 1, port),
        Verdict::Fail(FailReason::Timeout(Phase::Hl7Ack))
    );
}

fn http(path: &str, expect: &str) -> CheckParams {
    CheckParams {
        kind: CheckKind::Http(HttpParams {
            host: "127.0.0.1".into(),
            path: path.into(),
            accept: StatusAccept::Success,
            expect: expect.into(),
        }),
        timeout: Duration::from_secs(5),
    }
}

#[test]
fn http_against_python_http_server() {
    if !have("python3", "--version") && missing("python3") {
        return;
    }
    let dir = scratch("www");
    std::fs::write(
        dir.join("health.html"),
        "<html><body>status: OK-HEALTHY</body></html>\n",
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(&*dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _peer = Peer(child);
    wait_listening(port);
    assert_eq!(
        run(&http("/health.html", "OK-HEALTHY"), 0, port),
        Verdict::Pass
    );
    assert_eq!(
        run(&http("/health.html", "DEGRADED"), 0, port),
        Verdict::Fail(FailReason::Http(HttpFailure::ExpectedTextMissing))
    );
    assert_eq!(
        run(&http("/missing.html", "OK"), 0, port),
        Verdict::Fail(FailReason::Http(HttpFailure::Status(404)))
    );
}

#[test]
fn connect_check_against_open_and_closed_ports() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let tcp = CheckParams {
        kind: CheckKind::Tcp,
        timeout: Duration::from_secs(2),
    };
    assert_eq!(run(&tcp, 0, port), Verdict::Pass);
    drop(listener);
    // A closed port: tcpmux's, which nothing here listens on. (The port just
    // dropped is no good: a test running beside this one may take it.)
    let closed = 1;
    assert_eq!(run(&tcp, 1, closed), Verdict::Fail(FailReason::Refused));
    // Same for the protocol checks: a closed port is refused.
    assert_eq!(
        run(&dicom("LBHEALTH", "STORESCP"), 0, closed),
        Verdict::Fail(FailReason::Refused)
    );
}

fn https(verify: TlsVerify, name: &str, expect: &str) -> CheckParams {
    CheckParams {
        kind: CheckKind::Https(
            HttpParams {
                host: "viewer.test".into(),
                path: "/health.html".into(),
                accept: StatusAccept::Success,
                expect: expect.into(),
            },
            TlsParams {
                verify,
                server_name: name.into(),
            },
        ),
        timeout: Duration::from_secs(5),
    }
}

fn run_at(params: &CheckParams, port: u16) -> Verdict {
    run(params, 0, port)
}

#[test]
fn https_against_nginx() {
    if !have("nginx", "-v") && missing("nginx (apt-get install nginx-light)") {
        return;
    }
    let dir = scratch("nginx");
    // Five consecutive free ports for the five sites.
    let base = loop {
        let b = free_port();
        if (1..5).all(|i| TcpListener::bind(("127.0.0.1", b + i)).is_ok()) {
            break b;
        }
    };
    let child = Command::new("sh")
        .arg(peers("nginx_tls.sh"))
        .arg(&*dir)
        .arg("127.0.0.1")
        .arg(base.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _peer = Peer(child);
    wait_listening(base + 4);
    let none = || https(TlsVerify::None, "127.0.0.1", "OK-HEALTHY");
    // TLS 1.2 ECDHE-RSA, TLS 1.2 ECDHE-ECDSA, TLS 1.3.
    for port in [base, base + 1, base + 2] {
        assert_eq!(run_at(&none(), port), Verdict::Pass, "site {}", port - base);
    }
    // Only AES256-SHA256: nginx refuses our hello; the reason says why.
    let v = run_at(&none(), base + 3);
    assert_eq!(
        v,
        Verdict::Fail(FailReason::Tls(TlsFailure::Alert(
            "handshake_failure".into()
        )))
    );
    assert!(v.to_string().contains("no cipher suite in common"), "{v}");
    // The page without the expected text.
    assert_eq!(
        run_at(&none(), base + 4),
        Verdict::Fail(FailReason::Http(HttpFailure::ExpectedTextMissing))
    );
    // CA verification: right CA by name and by address, wrong CA.
    let ca = |f: &str| ca_from_pem(&std::fs::read_to_string(testdata(f)).unwrap()).unwrap();
    let with_ca = |file: &str, name: &str| https(TlsVerify::Ca(ca(file)), name, "OK-HEALTHY");
    assert_eq!(
        run_at(&with_ca("tls/ca.pem", "viewer.test"), base),
        Verdict::Pass
    );
    assert_eq!(
        run_at(&with_ca("tls/ca.pem", "127.0.0.1"), base + 2),
        Verdict::Pass
    );
    assert!(matches!(
        run_at(&with_ca("tls/other-ca.pem", "viewer.test"), base),
        Verdict::Fail(FailReason::Tls(TlsFailure::Certificate(_)))
    ));
    // Pins: the RSA leaf's on the RSA site; the ECDSA leaf's is wrong there.
    let pin = |f: &str| pin_from_hex(std::fs::read_to_string(testdata(f)).unwrap().trim()).unwrap();
    let pinned = |f: &str| https(TlsVerify::Pin(pin(f)), "127.0.0.1", "OK-HEALTHY");
    assert_eq!(run_at(&pinned("tls/rsa.sha256"), base), Verdict::Pass);
    assert!(matches!(
        run_at(&pinned("tls/ecdsa.sha256"), base),
        Verdict::Fail(FailReason::Tls(TlsFailure::PinMismatch(_)))
    ));
}
