//! Health checks end to end: one booted appliance, one lab, real servers.
//!
//! - HTTPS negotiate checks against Debian's nginx (tests/peers/nginx_tls.sh):
//!   TLS 1.2-only with ECDHE-RSA and with ECDHE-ECDSA, TLS 1.3-only with `ca`
//!   verification by name, `pin` right and wrong, the wrong CA, a site with
//!   only AES256-SHA256 (down: no cipher suite in common) and a page without
//!   the expected text (down with that reason);
//! - DICOM: dcmqrscp refusing the called AE title (down: the decoded
//!   A-ASSOCIATE-RJ); HL7: the `hl7` library's MLLP server answering AE with
//!   an ERR segment (down: the code and the ERR text);
//! - ping to a live and a dead address; `check_type = "off"`;
//! - fallback: both real servers stopped, new connections reach the fallback
//!   server; one back, new connections go to it;
//! - feedback agent: "50%", then "drain", then "up ready 100%": the share of
//!   new connections follows, measured through the VIP with curl.
//!
//! Every reason is read from the console log and from `status`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tests::lab::{Host, Lab};
use tests::peers::{Process, TempDir, wait_listening};
use tools::console::Appliance;
use tools::qemu::{Backend, Boot, Machine, Nic};

const NET: &str = "10.231.0";
const WEB_BASE: u16 = 8440;
/// Interval and fall of the fallback service's checks (seconds, count).
const FB_INTERVAL: u64 = 1;
const FB_FALL: u64 = 1;
/// The body of WEB-PAGE's `fallback = { page = ... }` (TOML-safe).
const MAINTENANCE_PAGE: &str =
    "<html><body><h1>PACS viewer: planned maintenance</h1><p>Back at 06:00.</p></body></html>";

fn peers(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
        .display()
        .to_string()
}

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lb-core/testdata/health")
        .join(name)
}

fn addr(host: u8) -> String {
    format!("{NET}.{host}")
}

/// One SNAT service with one real server and its check settings.
fn service(label: &str, vip: u8, port: u16, rs: (u8, u16), check: &str) -> String {
    format!(
        "\n[[virtual_service]]\nlabel = \"{label}\"\nvip = \"{}\"\nports = {port}\nforwarding = \"snat\"\n{check}\n\n[[virtual_service.real_server]]\nlabel = \"RS\"\nip = \"{}\"\nport = {}\n",
        addr(vip),
        addr(rs.0),
        rs.1
    )
}

fn config() -> String {
    let ca = std::fs::read_to_string(testdata("tls/ca.pem")).unwrap();
    let other = std::fs::read_to_string(testdata("tls/other-ca.pem")).unwrap();
    let pin = std::fs::read_to_string(testdata("tls/rsa.sha256")).unwrap();
    let pin = pin.trim();
    let https = |extra: &str| {
        format!(
            "check_type = \"https\"\ncheck_request = \"/health.html\"\ncheck_expect = \"OK-HEALTHY\"\ncheck_interval = 3\ncheck_timeout = 3\ncheck_rise = 1\ncheck_fall = 1\n{extra}"
        )
    };
    let web = |i: u16| (30, WEB_BASE + i);
    let mut t = format!(
        "[network]\nhostname = \"lbhealth\"\n\n[[network.interface]]\nname = \"eth0\"\naddress = \"{}\"\nprefix = 24\n",
        addr(2)
    );
    t += &service("TLS12-RSA", 101, 443, web(0), &https(""));
    t += &service("TLS12-ECDSA", 102, 443, web(1), &https(""));
    t += &service(
        "TLS13-CA",
        103,
        443,
        web(2),
        &https(&format!(
            "check_tls_verify = \"ca\"\ncheck_tls_name = \"viewer.test\"\ncheck_tls_ca = '''\n{ca}'''\n"
        )),
    );
    t += &service("TLS12-CBC-ONLY", 104, 443, web(3), &https(""));
    t += &service("TLS13-DEGRADED", 105, 443, web(4), &https(""));
    t += &service(
        "TLS-WRONG-CA",
        106,
        443,
        web(0),
        &https(&format!(
            "check_tls_verify = \"ca\"\ncheck_tls_name = \"viewer.test\"\ncheck_tls_ca = '''\n{other}'''\n"
        )),
    );
    t += &service(
        "TLS-PIN",
        107,
        443,
        web(0),
        &https(&format!(
            "check_tls_verify = \"pin\"\ncheck_tls_pin = \"{pin}\"\n"
        )),
    );
    t += &service(
        "TLS-PIN-WRONG",
        108,
        443,
        web(1),
        &https(&format!(
            "check_tls_verify = \"pin\"\ncheck_tls_pin = \"{pin}\"\n"
        )),
    );
    let quick = "check_interval = 2\ncheck_timeout = 2\ncheck_rise = 1\ncheck_fall = 1\n";
    t += &service(
        "DICOM-AE",
        110,
        104,
        (40, 11112),
        &format!("check_type = \"dicom_echo\"\ncheck_called_ae = \"WRONGAE\"\n{quick}"),
    );
    t += &service(
        "HL7-AE",
        111,
        2575,
        (50, 2575),
        &format!("check_type = \"hl7\"\ncheck_hl7_control_id_prefix = \"LBMON\"\n{quick}"),
    );
    t += &service(
        "PING-LIVE",
        112,
        80,
        (61, 80),
        &format!("check_type = \"ping\"\n{quick}"),
    );
    t += &service(
        "PING-DEAD",
        113,
        80,
        (99, 80),
        &format!("check_type = \"ping\"\n{quick}"),
    );
    t += &service("MAINT", 114, 80, (62, 80), "check_type = \"off\"\n");
    // Fallback page: the only real server is an address nobody holds.
    t += &service(
        "WEB-PAGE",
        122,
        80,
        (98, 80),
        &format!(
            "check_type = \"connect\"\n{quick}fallback = {{ page = \"{MAINTENANCE_PAGE}\" }}\n"
        ),
    );
    // Fallback: two real servers on 8081, the fallback server on .70.
    t += &format!(
        "\n[[virtual_service]]\nlabel = \"WEB-FALLBACK\"\nvip = \"{}\"\nports = 8081\nforwarding = \"snat\"\ncheck_interval = {FB_INTERVAL}\ncheck_timeout = 1\ncheck_rise = 1\ncheck_fall = {FB_FALL}\nfallback = {{ ip = \"{}\", port = 80 }}\n",
        addr(120),
        addr(70)
    );
    for (label, host) in [("RS1", 61), ("RS2", 62)] {
        t += &format!(
            "\n[[virtual_service.real_server]]\nlabel = \"{label}\"\nip = \"{}\"\n",
            addr(host)
        );
    }
    // Agent: RS1 has a feedback agent; weighted round robin shows the shares.
    t += &format!(
        "\n[[virtual_service]]\nlabel = \"WEB-AGENT\"\nvip = \"{}\"\nports = 80\nforwarding = \"snat\"\nscheduler = \"wrr\"\ncheck_interval = 1\ncheck_timeout = 1\n",
        addr(121)
    );
    t += &format!(
        "\n[[virtual_service.real_server]]\nlabel = \"RS1\"\nip = \"{}\"\nagent_port = 3333\n",
        addr(61)
    );
    t += &format!(
        "\n[[virtual_service.real_server]]\nlabel = \"RS2\"\nip = \"{}\"\n",
        addr(62)
    );
    t
}

/// A web server answering `GET /` with `name`.
fn web(host: &Host, dir: &Path, name: &str, port: u16, log: &Path) -> Process {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("index.html"), format!("{name}\n")).unwrap();
    let p = Process::spawn(
        host,
        &[
            "python3",
            "-m",
            "http.server",
            "--bind",
            &host.addr,
            "--directory",
            &dir.display().to_string(),
            &port.to_string(),
        ],
        log,
    )
    .unwrap();
    wait_listening(host, port, Duration::from_secs(10)).unwrap();
    p
}

/// `GET /` through `vip:port` from the client: the body (the server's name).
fn get(client: &Host, vip: &str, port: u16) -> String {
    let out = client
        .command(&[
            "curl",
            "-s",
            "--max-time",
            "3",
            &format!("http://{vip}:{port}/"),
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Waits for a console line containing every one of `parts`.
fn wait_line(vm: &Appliance, parts: &[&str], secs: u64) -> String {
    vm.wait_for(&parts.join(" ... "), Duration::from_secs(secs), |l| {
        parts.iter().all(|p| l.contains(p))
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Types `status` and returns the console lines it printed (up to its
/// `conntrack:` line).
fn status(vm: &mut Appliance) -> String {
    let before = vm.console().lines().count();
    vm.send_line("status").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let lines: Vec<String> = vm
            .console()
            .lines()
            .skip(before)
            .map(String::from)
            .collect();
        if let Some(end) = lines.iter().position(|l| l.starts_with("conntrack:")) {
            return lines[..=end].join("\n");
        }
        assert!(
            Instant::now() < deadline,
            "no status output:\n{}",
            vm.console()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The status line of real server `rs` of service `vs`.
fn rs_line<'a>(status: &'a str, vs: &str, rs: &str) -> &'a str {
    let mut in_vs = false;
    for line in status.lines() {
        if line.starts_with("vs ") {
            in_vs = line.starts_with(&format!("vs {vs} "));
        } else if in_vs && line.trim_start().starts_with(&format!("rs {rs} ")) {
            return line;
        }
    }
    panic!("no line for {vs}/{rs} in:\n{status}")
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

#[test]
fn health_checks_end_to_end() {
    let images = tests::images();
    let tmp = TempDir::new("health").unwrap();
    let mut lab = Lab::new().unwrap();
    let tap = lab.tap("ext").unwrap();
    let mut host = |name: &str, n: u8| {
        lab.host(name, "ext", &format!("{}/24", addr(n)), None)
            .unwrap()
    };
    let client = host("c0", 11);
    let webh = host("web", 30);
    let pacs = host("pacs", 40);
    let hl7h = host("hl7", 50);
    let rs1 = host("rs1", 61);
    let rs2 = host("rs2", 62);
    let fb = host("fb", 70);
    let log = |n: &str| tmp.path().join(n);

    // Real servers.
    let _nginx = Process::spawn(
        &webh,
        &[
            "sh",
            &peers("nginx_tls.sh"),
            &tmp.sub("nginx").unwrap().display().to_string(),
            &webh.addr,
            &WEB_BASE.to_string(),
        ],
        &log("nginx.log"),
    )
    .unwrap();
    wait_listening(&webh, WEB_BASE + 4, Duration::from_secs(10)).unwrap();
    let qr = tmp.sub("qr").unwrap();
    let template = std::fs::read_to_string(testdata("dicom/dcmqrscp.cfg")).unwrap();
    let qr_cfg = qr.join("qr.cfg");
    std::fs::write(
        &qr_cfg,
        template.replace("@STORAGE@", &qr.display().to_string()),
    )
    .unwrap();
    let _qr = Process::spawn(
        &pacs,
        &[
            "dcmqrscp",
            "-c",
            &qr_cfg.display().to_string(),
            "--single-process",
            "11112",
        ],
        &log("dcmqrscp.log"),
    )
    .unwrap();
    wait_listening(&pacs, 11112, Duration::from_secs(10)).unwrap();
    let hl7_log = tmp.sub("hl7-messages").unwrap();
    let _hl7 = Process::spawn(
        &hl7h,
        &[
            "python3",
            &peers("hl7_mllp_server.py"),
            "--in-namespace",
            "--host",
            &hl7h.addr,
            "--port",
            "2575",
            "--ack",
            "AE",
            "--err",
            "Unknown patient",
            "--lifetime",
            "600",
            "--max-connections",
            "10000",
            "--log",
            &hl7_log.display().to_string(),
        ],
        &log("hl7.log"),
    )
    .unwrap();
    wait_listening(&hl7h, 2575, Duration::from_secs(10)).unwrap();
    let _web1 = web(
        &rs1,
        &tmp.path().join("rs1-80"),
        "RS1",
        80,
        &log("rs1-80.log"),
    );
    let _web2 = web(
        &rs2,
        &tmp.path().join("rs2-80"),
        "RS2",
        80,
        &log("rs2-80.log"),
    );
    let mut fb1 = web(
        &rs1,
        &tmp.path().join("rs1-8081"),
        "RS1",
        8081,
        &log("rs1-8081.log"),
    );
    let mut fb2 = web(
        &rs2,
        &tmp.path().join("rs2-8081"),
        "RS2",
        8081,
        &log("rs2-8081.log"),
    );
    let _fallback = web(&fb, &tmp.path().join("fb"), "FALLBACK", 80, &log("fb.log"));
    let reply = tmp.path().join("agent-reply");
    std::fs::write(&reply, "100%\n").unwrap();
    let _agent = Process::spawn(
        &rs1,
        &[
            "python3",
            &peers("feedback_agent.py"),
            "--port",
            "3333",
            "--reply-file",
            &reply.display().to_string(),
            "--lifetime",
            "600",
        ],
        &log("agent.log"),
    )
    .unwrap();
    wait_listening(&rs1, 3333, Duration::from_secs(10)).unwrap();

    // The appliance.
    let toml = tmp.path().join("config.toml");
    std::fs::write(&toml, config()).unwrap();
    let blob = tmp.path().join("config.bin");
    tools::config_cmd::compile(&toml, &blob).unwrap();
    let mut machine = Machine::new(Boot::Kernel {
        elf: images.kernel.clone(),
        cmdline: String::new(),
        module: Some(blob),
    });
    machine.nics.push(Nic::virtio(Backend::Tap { ifname: tap }));
    let mut vm = Appliance::boot(&machine, Some(&lab)).unwrap();
    vm.wait_ready(Duration::from_secs(90)).unwrap();

    // HTTPS: up where the server speaks TLS 1.2 (RSA, ECDSA) or 1.3, with ca and pin.
    for vs in ["TLS12-RSA", "TLS12-ECDSA", "TLS13-CA", "TLS-PIN"] {
        wait_line(&vm, &["health:", &format!("{vs}/RS"), " up"], 60);
    }
    // ... down, each with its reason.
    // (The first check of a server may time out while ARP settles; the log
    // prints a down server again whenever its reason changes.)
    let cbc = wait_line(
        &vm,
        &[
            "health: TLS12-CBC-ONLY/RS",
            "down",
            "alert handshake_failure",
        ],
        60,
    );
    assert!(cbc.contains("no cipher suite in common"), "{cbc}");
    assert!(cbc.contains("CBC"), "{cbc}");
    wait_line(
        &vm,
        &[
            "health: TLS13-DEGRADED/RS",
            "down (HTTP body does not contain the expected text)",
        ],
        60,
    );
    wait_line(
        &vm,
        &[
            "health: TLS-WRONG-CA/RS",
            "down (TLS certificate refused: not issued by the configured CA)",
        ],
        60,
    );
    wait_line(
        &vm,
        &["health: TLS-PIN-WRONG/RS", "down", "does not match the pin"],
        60,
    );
    // DICOM: the reject decoded; HL7: the code and the ERR text.
    wait_line(
        &vm,
        &[
            "health: DICOM-AE/RS",
            "down (DICOM A-ASSOCIATE-RJ",
            "called AE title not recognized",
        ],
        60,
    );
    wait_line(
        &vm,
        &[
            "health: HL7-AE/RS",
            "down (HL7 ACK MSA-1=AE (application error)",
            "Unknown patient",
        ],
        60,
    );
    // Ping and off.
    wait_line(&vm, &["health: PING-LIVE/RS", " up"], 60);
    wait_line(
        &vm,
        &[
            "health: PING-DEAD/RS",
            "down (timeout waiting for ICMP echo reply)",
        ],
        60,
    );
    wait_line(
        &vm,
        &["health: MAINT/RS", "down (check_type off (maintenance))"],
        60,
    );

    // The same reasons in `status`, and the check of each service.
    let st = status(&mut vm);
    for (vs, up) in [
        ("TLS12-RSA", true),
        ("TLS13-CA", true),
        ("TLS12-CBC-ONLY", false),
        ("TLS-PIN-WRONG", false),
        ("DICOM-AE", false),
        ("HL7-AE", false),
        ("MAINT", false),
    ] {
        let line = rs_line(&st, vs, "RS");
        if up {
            assert!(line.contains(" up ") && !line.contains(" ("), "{line}");
        } else {
            assert!(line.contains(" down ") && line.contains(" ("), "{line}");
        }
    }
    assert!(
        rs_line(&st, "HL7-AE", "RS").contains("Unknown patient"),
        "{st}"
    );
    assert!(st.contains("check=https tls-verify=ca"), "{st}");
    assert!(st.contains("check=https tls-verify=none"), "{st}");
    // The HL7 server saw our control-ID prefix in MSH-10.
    let first = std::fs::read(hl7_log.join("1.rx.bin")).unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(first.contains("|LBMON0000000"), "{first}");

    // Fallback page: the appliance itself answers 503 with the page, byte
    // for byte, to several clients in a row, and counts them.
    wait_line(&vm, &["health: WEB-PAGE/RS", " down"], 60);
    let expected = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nRetry-After: 60\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{MAINTENANCE_PAGE}",
        MAINTENANCE_PAGE.len()
    );
    for _ in 0..3 {
        let out = client
            .command(&[
                "curl",
                "-s",
                "-i",
                "--max-time",
                "5",
                &format!("http://{}/", addr(122)),
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
        assert!(out.status.success(), "curl: {:?}", out.status);
    }
    let st = status(&mut vm);
    assert!(st.contains("fallback page handshakes=3 answered=3"), "{st}");

    // Fallback: both real servers stop; new connections reach the fallback.
    let vip = addr(120);
    wait_line(&vm, &["health: WEB-FALLBACK/RS1", " up"], 60);
    wait_line(&vm, &["health: WEB-FALLBACK/RS2", " up"], 60);
    let before: Vec<String> = (0..4).map(|_| get(&client, &vip, 8081)).collect();
    assert!(
        before.iter().all(|n| n == "RS1" || n == "RS2"),
        "{before:?}"
    );
    fb1.stop();
    fb2.stop();
    let stopped = Instant::now();
    let mut reached = None;
    while stopped.elapsed() < Duration::from_secs(30) {
        if get(&client, &vip, 8081) == "FALLBACK" {
            reached = Some(stopped.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let reached = reached.unwrap_or_else(|| panic!("fallback never answered\n{}", vm.console()));
    eprintln!(
        "fallback answered {:.1} s after the real servers stopped (interval {FB_INTERVAL} s x fall {FB_FALL})",
        reached.as_secs_f64()
    );
    for _ in 0..5 {
        assert_eq!(get(&client, &vip, 8081), "FALLBACK");
    }
    let st = status(&mut vm);
    assert!(st.contains(&format!("fallback {}:80", addr(70))), "{st}");
    // One real server back: new connections go to it again.
    let _fb1 = web(
        &rs1,
        &tmp.path().join("rs1-8081"),
        "RS1",
        8081,
        &log("rs1-8081b.log"),
    );
    wait_line(&vm, &["health: WEB-FALLBACK/RS1", "up (recovered)"], 30);
    for _ in 0..5 {
        assert_eq!(get(&client, &vip, 8081), "RS1");
    }

    // Feedback agent: 50% of RS1's weight, then drain, then back.
    let vip = addr(121);
    wait_line(&vm, &["health: WEB-AGENT/RS2", " up"], 60);
    let shares = |n: usize| -> Vec<String> { (0..n).map(|_| get(&client, &vip, 80)).collect() };
    std::fs::write(&reply, "50%\n").unwrap();
    wait_line(&vm, &["health: WEB-AGENT/RS1 agent weight 50"], 30);
    let got = shares(30);
    let (a, b) = (count(&got, "RS1"), count(&got, "RS2"));
    eprintln!("agent 50%: RS1 {a}, RS2 {b} of 30 new connections");
    assert_eq!(a + b, 30, "{got:?}");
    assert!(
        (8..=12).contains(&a),
        "RS1 at half weight takes a third: {a}:{b}"
    );
    std::fs::write(&reply, "drain # backup window\n").unwrap();
    wait_line(&vm, &["health: WEB-AGENT/RS1 agent drain"], 30);
    let got = shares(10);
    eprintln!("agent drain: {got:?}");
    assert_eq!(count(&got, "RS2"), 10, "{got:?}");
    let st = status(&mut vm);
    let line = rs_line(&st, "WEB-AGENT", "RS1");
    assert!(
        line.contains(" drain ") && line.contains("agent=50%,drain (backup window)"),
        "{line}"
    );
    std::fs::write(&reply, "up ready 100%\n").unwrap();
    wait_line(&vm, &["health: WEB-AGENT/RS1 agent online"], 30);
    wait_line(&vm, &["health: WEB-AGENT/RS1 agent weight 100"], 30);
    let got = shares(20);
    let (a, b) = (count(&got, "RS1"), count(&got, "RS2"));
    eprintln!("agent up ready 100%: RS1 {a}, RS2 {b} of 20");
    assert!((8..=12).contains(&a) && a + b == 20, "{a}:{b}");
}
