//! Management over the network, end to end, on one booted appliance: the
//! host tool's signed commands from an administrator's namespace, every
//! way a request is rejected (the running config serving on, untouched),
//! the allow list, `/metrics` read with Prometheus's own parser and
//! matching `status`, syslog parsed as RFC 5424, the System Overview read
//! by headless Chromium while a real server dies, and a reboot that keeps
//! what was applied.

use lb_core::config::AdminState;
use lb_core::mgmt::keys::SigningKey;
use lb_core::mgmt::request::{Action, Request};
use lb_core::mgmt::status::{self, Status};
use lb_core::mgmt::wire::Reply;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tests::console::Appliance;
use tests::lab::{Host, Lab};
use tests::peers::{Process, TempDir, wait_listening};
use tests::{images, tools_bin};
use tools::qemu::{Backend, Boot, Machine, Nic};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const APPLIANCE: &str = "10.30.0.1";
const VIP: &str = "10.30.0.100";
const DICOM_VIP: &str = "10.30.0.101";
/// The service an upload adds.
const NEW_VIP: &str = "10.30.0.102";
/// Health checks: every second, down after two failures.
const INTERVAL_S: u64 = 1;
const FALL: u64 = 2;

fn peer(name: &str) -> String {
    tools::workspace::root()
        .join("tests/peers")
        .join(name)
        .display()
        .to_string()
}

/// The appliance's config: a web service, a DICOM service, and `extra`
/// (more TOML after the services); WEB1 with `web1` settings added (e.g.
/// its weight).
fn config(admin_pub: &str, web1: &str, extra: &str) -> String {
    format!(
        r#"
[network]
hostname = "lbtest"

[[network.interface]]
name = "eth0"
address = "{APPLIANCE}"
prefix = 24

[[virtual_service]]
label = "WEB"
vip = "{VIP}"
ports = 80
forwarding = "snat"
check_port = 8080
check_interval = {INTERVAL_S}
check_timeout = 1
check_rise = 1
check_fall = {FALL}

[[virtual_service.real_server]]
label = "WEB1"
ip = "10.30.0.21"
port = 8080
{web1}

[[virtual_service.real_server]]
label = "WEB2"
ip = "10.30.0.22"
port = 8080

[[virtual_service]]
label = "DICOM"
vip = "{DICOM_VIP}"
ports = 104
forwarding = "snat"
check_type = "dicom_echo"
check_called_ae = "PACS"
check_interval = 2
check_timeout = 2

[[virtual_service.real_server]]
label = "PACS1"
ip = "10.30.0.21"
port = 11112
{extra}
[management]
allow = ["10.30.0.0/28"]
admin_keys = ["{admin_pub}"]
syslog = "10.30.0.10:5514"
"#
    )
}

/// The lab: the appliance, an administrator (inside the allow list), an
/// outsider (not), two web real servers.
struct Rig {
    lab: Lab,
    admin: Host,
    outsider: Host,
    rs: Vec<Host>,
    web: Vec<Option<Process>>,
    tmp: TempDir,
    key: PathBuf,
    admin_pub: String,
    _pacs: Process,
    disk: PathBuf,
    module: PathBuf,
    vm: Option<Appliance>,
}

impl Rig {
    fn boot(&mut self) {
        let tap = self.lab.tap("br0").unwrap();
        let mut m = Machine::new(Boot::Kernel {
            elf: images().kernel.clone(),
            cmdline: format!("ip={APPLIANCE}/24"),
            module: Some(self.module.clone()),
        });
        m.memory_mib = 128;
        m.nics.push(Nic::virtio(Backend::Tap { ifname: tap }));
        m.disks.push(self.disk.clone());
        let vm = Appliance::boot(&m, Some(&self.lab)).unwrap();
        vm.wait_ready(BOOT_TIMEOUT).unwrap();
        self.vm = Some(vm);
    }

    fn vm(&mut self) -> &mut Appliance {
        self.vm.as_mut().unwrap()
    }

    /// Runs the host tool in the administrator's namespace.
    fn tool(&self, host: &Host, args: &[&str]) -> (bool, String) {
        let bin = tools_bin().display().to_string();
        let mut argv = vec![bin.as_str()];
        argv.extend_from_slice(args);
        let out = host.command(&argv).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn rs(&self, state: &str, server: &str) -> (bool, String) {
        let key = self.key.display().to_string();
        self.tool(
            &self.admin,
            &["rs", state, "--to", APPLIANCE, "--key", &key, server],
        )
    }

    /// Signs a request with `key` into a file, as `--sign-only` does.
    fn signed(&self, name: &str, key: &SigningKey, serial: u64, action: Action) -> PathBuf {
        let req = Request {
            serial,
            appliance: "lbtest".into(),
            action,
        };
        let path = self.tmp.path().join(name);
        std::fs::write(&path, tools::mgmt_cmd::signed_frame(key, &req)).unwrap();
        path
    }

    fn send(&self, file: &Path) -> (bool, String) {
        let f = file.display().to_string();
        self.tool(&self.admin, &["send", "--to", APPLIANCE, &f])
    }

    fn curl(&self, host: &Host, url: &str) -> Option<String> {
        let out = host
            .command(&["curl", "-s", "-f", "-m", "3", url])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).to_string())
    }

    fn status(&self) -> Status {
        let body = self
            .curl(&self.admin, &format!("http://{APPLIANCE}:9080/api/status"))
            .expect("/api/status answers the administrator");
        status::from_json(body.as_bytes()).expect("a status document")
    }

    /// `/metrics`, parsed by the Prometheus client library's parser.
    fn metrics(&self) -> Vec<Value> {
        let out = self
            .admin
            .command(&[
                "python3",
                &peer("metrics_parse.py"),
                &format!("http://{APPLIANCE}:9080/metrics"),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The VIP still serves (the data path was not disturbed).
    fn vip_serves(&self) -> bool {
        self.curl(&self.admin, &format!("http://{VIP}/"))
            .is_some_and(|b| b.contains("served by"))
    }

    fn server<'a>(st: &'a Status, label: &str) -> &'a status::ServerStatus {
        st.services[0]
            .servers
            .iter()
            .find(|s| s.label == label)
            .unwrap()
    }

    fn wait_health(&mut self, server: &str, word: &str) {
        let want = format!("WEB/{server} ");
        self.vm()
            .wait_for(&format!("{server} {word}"), Duration::from_secs(30), |l| {
                l.starts_with("health: ") && l.contains(&want) && l.contains(word)
            })
            .unwrap();
    }

    fn start_web(&mut self, i: usize) {
        let dir = self.tmp.sub(&format!("www{i}")).unwrap();
        std::fs::write(dir.join("index.html"), format!("served by WEB{}\n", i + 1)).unwrap();
        let d = dir.display().to_string();
        let log = self.tmp.path().join(format!("web{i}.log"));
        self.web[i] = Some(
            Process::spawn(
                &self.rs[i],
                &["python3", "-m", "http.server", "8080", "--directory", &d],
                &log,
            )
            .unwrap(),
        );
        wait_listening(&self.rs[i], 8080, Duration::from_secs(10)).unwrap();
    }
}

fn rig() -> Rig {
    let tmp = TempDir::new("mgmt").unwrap();
    let mut lab = Lab::new().unwrap();
    let admin = lab.host("admin", "br0", "10.30.0.10/24", None).unwrap();
    let outsider = lab.host("outsider", "br0", "10.30.0.40/24", None).unwrap();
    let rs = vec![
        lab.host("rs1", "br0", "10.30.0.21/24", None).unwrap(),
        lab.host("rs2", "br0", "10.30.0.22/24", None).unwrap(),
    ];
    let (key, public) = tools::mgmt_cmd::keygen(&tmp.path().join("admin")).unwrap();
    let admin_pub = std::fs::read_to_string(&public).unwrap();
    let toml = tmp.path().join("lbtest.toml");
    std::fs::write(&toml, config(admin_pub.trim(), "", "")).unwrap();
    let module = tmp.path().join("lbtest.bin");
    tools::config_cmd::compile(&toml, &module).unwrap();
    let disk = tmp.path().join("config.img");
    tools::disk_cmd::create(&disk, 4).unwrap();
    let store = tmp.sub("pacs").unwrap();
    let pacs = tests::peers::storescp(&rs[0], 11112, &store, &tmp.path().join("pacs.log")).unwrap();
    let mut rig = Rig {
        lab,
        admin,
        outsider,
        rs,
        web: vec![None, None],
        tmp,
        key,
        admin_pub: admin_pub.trim().to_string(),
        _pacs: pacs,
        disk,
        module,
        vm: None,
    };
    rig.start_web(0);
    rig.start_web(1);
    rig
}

/// Rejection counters by kind, from `/metrics` parsed by Prometheus's parser.
fn metric(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s["name"] == name
                && labels
                    .iter()
                    .all(|(k, v)| s["labels"][*k].as_str() == Some(*v))
        })
        .and_then(|s| s["value"].as_f64())
}

#[test]
fn management_plane_end_to_end() {
    let mut r = rig();
    let sink_log = r.tmp.path().join("syslog.txt");
    let sink_out = r.tmp.path().join("sink.log");
    let sink_path = sink_log.display().to_string();
    let _sink = Process::spawn(
        &r.admin,
        &["python3", &peer("syslog_sink.py"), "5514", &sink_path],
        &sink_out,
    )
    .unwrap();
    r.boot();
    r.wait_health("WEB1", "up");
    r.wait_health("WEB2", "up");

    // Traffic through the VIP, so the counters are not all zero.
    for _ in 0..6 {
        assert!(r.vip_serves(), "the VIP serves before any management");
    }

    // --- /metrics parsed by Prometheus's parser agrees with status -------
    let samples = r.metrics();
    let st = r.status();
    let mut total = 0.0;
    for s in &st.services[0].servers {
        let l = [("service", "WEB"), ("server", s.label.as_str())];
        let conns = metric(&samples, "lbmed_server_connections_total", &l).unwrap();
        assert_eq!(conns, s.connections as f64, "{}", s.label);
        total += conns;
        assert_eq!(metric(&samples, "lbmed_server_up", &l), Some(1.0));
        assert_eq!(
            metric(&samples, "lbmed_server_bytes_total", &l).unwrap(),
            s.bytes as f64
        );
    }
    assert_eq!(total, 6.0, "six connections through the VIP");
    assert_eq!(
        metric(
            &samples,
            "lbmed_service_connections_total",
            &[("service", "WEB")]
        ),
        Some(6.0)
    );
    assert!(metric(&samples, "lbmed_uptime_seconds", &[]).unwrap() >= 0.0);
    let families: Vec<&str> = samples.iter().filter_map(|s| s["type"].as_str()).collect();
    assert!(families.contains(&"counter") && families.contains(&"gauge"));
    // The console's status shows the same numbers, and so does the tool.
    r.vm().send_line("status").unwrap();
    for s in &st.services[0].servers {
        let want = format!(
            "  rs {} {}:8080 up online weight=100 active={} conns={} ",
            s.label, s.ip, s.active, s.connections
        );
        r.vm()
            .wait_for(&want, Duration::from_secs(10), |l| l.starts_with(&want))
            .unwrap();
    }
    let (ok, text) = r.tool(&r.admin, &["status", "--to", APPLIANCE]);
    assert!(ok, "{text}");
    assert!(text.contains("lbtest 0.1.0"), "{text}");
    assert!(text.contains("vs WEB 10.30.0.100:80 snat conns="), "{text}");
    assert!(
        text.contains("\n  rs WEB1 10.30.0.21:8080 up online"),
        "{text}"
    );

    // --- outside the allow list: nothing comes back -----------------------
    assert!(
        r.curl(&r.outsider, &format!("http://{APPLIANCE}:9080/"))
            .is_none()
    );
    let out = r
        .outsider
        .command(&[
            "python3",
            "-c",
            &format!("import socket; socket.create_connection(('{APPLIANCE}', 9081), timeout=3)"),
        ])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "the outsider reached the command port"
    );
    // Ping still works from there: only management is locked down.
    assert_eq!(r.outsider.ping_loss(APPLIANCE, 3, "0.2").unwrap(), 0.0);

    // --- a signed command is applied, stored and logged --------------------
    let (ok, text) = r.rs("drain", "WEB/WEB1");
    assert!(ok, "{text}");
    assert!(text.starts_with("applied (serial "), "{text}");
    assert!(text.contains("WEB/WEB1 set drain"), "{text}");
    let st = r.status();
    assert_eq!(Rig::server(&st, "WEB1").admin, "drain");
    let serial = st.serial;
    assert!(serial > 0);

    // --- every rejection: reason printed, nothing changed, still serving --
    let admin_key = tools::mgmt_cmd::load_key(&r.key).unwrap();
    let stranger = SigningKey::from_seed([0x5a; 32]);
    let halt = |server: &str| Action::SetState {
        service: "WEB".into(),
        server: server.into(),
        state: AdminState::Halt,
    };
    // A bare config blob: unsigned.
    let (ok, text) = r.send(&r.module);
    assert!(!ok && text.contains("rejected: unsigned"), "{text}");
    // Signed by a key the appliance does not know.
    let f = r.signed("stranger.req", &stranger, serial + 10, halt("WEB2"));
    let (ok, text) = r.send(&f);
    assert!(!ok && text.contains("signed by unknown key"), "{text}");
    // Applied once, then replayed byte for byte.
    let online = Action::SetState {
        service: "WEB".into(),
        server: "WEB2".into(),
        state: AdminState::Online,
    };
    let once = r.signed("once.req", &admin_key, serial + 100, online);
    let (ok, text) = r.send(&once);
    assert!(ok, "{text}");
    let (ok, text) = r.send(&once);
    assert!(!ok && text.contains("replayed: serial"), "{text}");
    // An older serial (a recorded request from before).
    let older = r.signed("older.req", &admin_key, serial + 50, halt("WEB1"));
    let (ok, text) = r.send(&older);
    assert!(!ok && text.contains("old serial"), "{text}");
    // A body corrupted on the way.
    let mut bytes =
        std::fs::read(r.signed("c.req", &admin_key, serial + 200, halt("WEB1"))).unwrap();
    let n = bytes.len();
    bytes[n - 2] ^= 0x20;
    let corrupt = r.tmp.path().join("corrupt.req");
    std::fs::write(&corrupt, &bytes).unwrap();
    let (ok, text) = r.send(&corrupt);
    assert!(!ok && text.contains("bad signature"), "{text}");
    // Truncated: the sender stops halfway.
    let truncated = r.tmp.path().join("truncated.req");
    std::fs::write(&truncated, &bytes[..n / 2]).unwrap();
    let (ok, text) = r.send(&truncated);
    assert!(!ok && text.contains("truncated"), "{text}");
    // Oversized: claims 64 MiB and streams on; cut off after the header.
    let out = r
        .admin
        .command(&[
            "python3",
            &peer("mgmt_abuse.py"),
            "oversized",
            APPLIANCE,
            "9081",
            "64",
        ])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reply = hex(v["reply"].as_str().unwrap());
    let reply = Reply::decode(reply.get(10..).unwrap_or_default()).expect("a reply frame");
    assert!(
        !reply.applied && reply.message.starts_with("oversized"),
        "{reply:?}"
    );
    assert!(v["sent"].as_u64().unwrap() < 64 << 20, "{v}");
    // Nothing of it was applied, and everything still serves.
    let st = r.status();
    assert_eq!(st.serial, serial + 100);
    assert_eq!(Rig::server(&st, "WEB1").admin, "drain");
    assert_eq!(Rig::server(&st, "WEB2").admin, "online");
    assert!(r.vip_serves());

    // Fifty uploads that never finish: an administrator still gets in,
    // and the console and the data path do not notice.
    let abuse_log = r.tmp.path().join("slow.log");
    let mut slow = Process::spawn(
        &r.admin,
        &[
            "python3",
            &peer("mgmt_abuse.py"),
            "slow",
            APPLIANCE,
            "9081",
            "50",
            "20",
        ],
        &abuse_log,
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let (ok, text) = r.rs("online", "WEB/WEB2");
    assert!(ok, "a valid command during 50 stalled uploads: {text}");
    assert!(r.vip_serves());
    r.vm().send_line("status").unwrap();
    r.vm()
        .wait_for("console status", Duration::from_secs(10), |l| {
            l.starts_with("  rs WEB2 10.30.0.22:8080 up online")
        })
        .unwrap();
    slow.wait_timeout(Duration::from_secs(60)).unwrap();
    let v: Value =
        serde_json::from_str(std::fs::read_to_string(&abuse_log).unwrap().trim()).unwrap();
    assert!(
        v["cut"].as_u64().unwrap() + v["refused"].as_u64().unwrap() >= 45,
        "{v}"
    );

    // --- an upload while a DICOM association sits idle ----------------------
    r.vm()
        .wait_for("PACS1 up", Duration::from_secs(30), |l| {
            l.starts_with("health: DICOM/PACS1 ") && l.contains(" up")
        })
        .unwrap();
    let idle_log = r.tmp.path().join("idle.log");
    let mut idle = Process::spawn(
        &r.admin,
        &[
            "python3",
            &peer("dicom_idle_echo.py"),
            DICOM_VIP,
            "104",
            "--idle",
            "20",
        ],
        &idle_log,
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let upload = r.tmp.path().join("changed.toml");
    let new_service = format!(
        r#"
[[virtual_service]]
label = "WEB-NEW"
vip = "{NEW_VIP}"
ports = 80
forwarding = "snat"
check_port = 8080
check_interval = {INTERVAL_S}
check_timeout = 1

[[virtual_service.real_server]]
label = "NEW1"
ip = "10.30.0.21"
port = 8080
"#
    );
    std::fs::write(
        &upload,
        config(
            &r.admin_pub,
            "weight = 200\nstate = \"drain\"",
            &new_service,
        ),
    )
    .unwrap();
    let key = r.key.display().to_string();
    let up = upload.display().to_string();
    let (ok, text) = r.tool(&r.admin, &["upload", "--to", APPLIANCE, "--key", &key, &up]);
    assert!(ok, "{text}");
    assert!(text.contains("WEB/WEB1: weight 100 -> 200"), "{text}");
    assert!(
        text.contains("virtual service WEB-NEW added (10.30.0.102:80)"),
        "{text}"
    );
    let st = r.status();
    assert_eq!(Rig::server(&st, "WEB1").weight, 200);
    assert_eq!(st.services.len(), 3);
    // The new service answers once its server is checked.
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.curl(&r.admin, &format!("http://{NEW_VIP}/")).is_none() {
        assert!(
            Instant::now() < deadline,
            "the uploaded service never answered"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // The idle association on the unchanged service still works.
    let status = idle.wait_timeout(Duration::from_secs(60)).unwrap();
    assert!(
        status.success(),
        "the idle association did not survive the upload: {}",
        std::fs::read_to_string(&idle_log).unwrap_or_default()
    );

    // Every rejection was counted under its reason.
    let samples = r.metrics();
    let rejected = |kind| {
        metric(
            &samples,
            "lbmed_management_rejected_total",
            &[("reason", kind)],
        )
    };
    for kind in [
        "not_signed",
        "unknown_key",
        "replay",
        "old_serial",
        "bad_signature",
        "oversized",
    ] {
        assert_eq!(rejected(kind), Some(1.0), "{kind}");
    }
    // Ours, and any stalled upload still open when its client gave up.
    assert!(rejected("truncated").unwrap() >= 1.0);
    assert!(metric(&samples, "lbmed_management_not_allowed_total", &[]).unwrap() > 0.0);
    assert!(metric(&samples, "lbmed_management_evicted_total", &[]).unwrap() > 0.0);

    // --- the System Overview in a real browser ----------------------------
    let shot = tools::workspace::root().join("target/artifacts/system-overview.png");
    std::fs::create_dir_all(shot.parent().unwrap()).unwrap();
    let trigger = r.tmp.path().join("stop-now");
    let browser_log = r.tmp.path().join("browser.log");
    let refresh = u64::from(lb_core::mgmt::page::REFRESH_S);
    // interval × fall + refresh, plus one check timeout and slack for a
    // loaded machine.
    let bound = INTERVAL_S * FALL + refresh + 1 + 8;
    let mut browser = Process::spawn(
        &r.admin,
        &[
            "python3",
            &peer("overview_browser.py"),
            &format!("http://{APPLIANCE}:9080/"),
            &shot.display().to_string(),
            &trigger.display().to_string(),
            "WEB2",
            "down",
            &(bound + 20).to_string(),
        ],
        &browser_log,
    )
    .unwrap();
    let first = wait_json_line(&browser_log, 0, Duration::from_secs(90));
    let rows = first["rows"].as_array().expect("rows on the page").clone();
    let state = |rows: &[Value], s: &str| {
        rows.iter()
            .find(|r| r["server"] == s)
            .map(|r| {
                (
                    r["state"].as_str().unwrap().to_string(),
                    r["colour"].as_str().unwrap().to_string(),
                )
            })
            .unwrap()
    };
    assert_eq!(state(&rows, "WEB1").0, "drain", "{first}");
    assert_eq!(state(&rows, "WEB2").0, "up", "{first}");
    assert_eq!(state(&rows, "WEB2").1, "rgba(200, 230, 201, 1)", "green");
    assert_eq!(state(&rows, "WEB1").1, "rgba(187, 222, 251, 1)", "blue");
    // Stop a real server: its row turns red by itself.
    r.web[1].take();
    std::fs::write(&trigger, b"").unwrap();
    browser
        .wait_timeout(Duration::from_secs(bound + 60))
        .unwrap();
    let last = wait_json_line(&browser_log, 1, Duration::from_secs(5));
    let elapsed = last["elapsed"].as_f64();
    assert!(
        elapsed.is_some_and(|e| e <= bound as f64),
        "WEB2 never turned red in time: {last}"
    );
    let rows = last["rows"].as_array().unwrap().clone();
    assert_eq!(state(&rows, "WEB2").1, "rgba(255, 205, 210, 1)", "red");
    let reason = rows.iter().find(|r| r["server"] == "WEB2").unwrap()["reason"].clone();
    assert_eq!(reason, "connection refused", "{last}");
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);

    // --- syslog, parsed as RFC 5424 by an independent parser ---------------
    let deadline = Instant::now() + Duration::from_secs(10);
    let parsed = loop {
        let out = r
            .admin
            .command(&["python3", &peer("rfc5424.py"), &sink_path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
        let seen = |msgid: &str, text: &str| {
            v.iter()
                .any(|m| m["msgid"] == msgid && m["msg"].as_str().unwrap_or("").contains(text))
        };
        if seen(
            "health",
            "WEB/WEB2 10.30.0.22:8080 down (connection refused)",
        ) || Instant::now() > deadline
        {
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let has = |msgid: &str, text: &str| {
        parsed
            .iter()
            .any(|m| m["msgid"] == msgid && m["msg"].as_str().unwrap_or("").contains(text))
    };
    assert!(
        has(
            "health",
            "WEB/WEB2 10.30.0.22:8080 down (connection refused)"
        ),
        "{parsed:?}"
    );
    assert!(has("admin", "WEB/WEB1 set drain"), "{parsed:?}");
    assert!(has("config", "rejected: replayed"), "{parsed:?}");
    for m in &parsed {
        assert_eq!(m["hostname"], "lbtest");
        assert_eq!(m["app"], "lbmed");
        assert_eq!(m["facility"], 16);
        assert!(m["params"]["sequenceId"].as_str().is_some());
    }

    // The same events through the host tool.
    let (ok, text) = r.tool(&r.admin, &["logs", "--from", APPLIANCE]);
    assert!(ok, "{text}");
    assert!(text.contains("admin  WEB/WEB1 set drain"), "{text}");
    assert!(
        text.contains("health WEB/WEB2 10.30.0.22:8080 down (connection refused)"),
        "{text}"
    );

    // --- a reboot keeps what was applied, and the serial -------------------
    r.vm.take();
    r.boot();
    let st = r.status();
    assert_eq!(Rig::server(&st, "WEB1").admin, "drain");
    assert_eq!(Rig::server(&st, "WEB2").admin, "online");
    assert!(st.serial > serial + 100);
    assert_eq!(Rig::server(&st, "WEB1").weight, 200, "the uploaded config");
    assert!(st.services.iter().any(|s| s.label == "WEB-NEW"));
    let (ok, text) = r.send(&once);
    assert!(
        !ok && text.contains("old serial"),
        "a replay after reboot: {text}"
    );

    // Rollback: the config stored before the upload, applied again.
    let key = r.key.display().to_string();
    let (ok, text) = r.tool(&r.admin, &["rollback", "--to", APPLIANCE, "--key", &key]);
    assert!(ok, "{text}");
    assert!(text.contains("virtual service WEB-NEW removed"), "{text}");
    let st = r.status();
    assert_eq!(st.services.len(), 2);
    assert_eq!(Rig::server(&st, "WEB1").weight, 100);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len() / 2)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// The `n`th JSON line a peer wrote to `log`, waiting for it (bounded).
fn wait_json_line(log: &Path, n: usize, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('{')).collect();
        if let Some(l) = lines.get(n) {
            return serde_json::from_str(l).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no JSON line {n} in {}:\n{text}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
