//! Protocol-aware layer 7 services (issue 14) end to end: one booted
//! appliance and the layer 7 lab (three real servers running storescp and
//! the `hl7` library's MLLP server), with dcmtk and the `hl7` library as
//! clients.
//!
//! 1. DICOM routing by called AE: `storescu -aec PACS_A` lands only on RS0,
//!    `-aec PACS_B` only on RS1/RS2; studies byte-identical, exactly once.
//! 2. An unknown called AE gets the A-ASSOCIATE-RJ dcmtk prints as
//!    "Called AE Title Not Recognized" (no server sees it).
//! 3. Persistence by calling AE: two modalities behind one address
//!    (`-aet MOD1`, `-aet MOD2`), three associations each, spread over
//!    RS1 and RS2 and each staying on its node.
//! 4. HL7 routing by MSH-5: LAB lands on RS0, RIS on RS1; an unrouted
//!    PHARM gets an AR with an ERR segment from the appliance and reaches
//!    no server.
//! 5. An association idle past a 5 s client/server timeout ends with an
//!    A-ABORT to both peers: the client reads the A-ABORT PDU, storescp
//!    logs "Association Aborted" (no reset).
//! 6. `status` counts the pairs (routed and refused) and the clean abort.
//!
//! A second lab of its own (`outbound_snat_drain_halt_and_poweroff_during_a_transfer`):
//!
//! 7. Outbound SNAT: dcmqrscp on RS2 behind a NAT service with
//!    `outbound_snat`; studies stored into it through the VIP, then
//!    `movescu` asks it to move them to a storescp on a client. They arrive
//!    byte-identical, and the destination saw every association come from
//!    the VIP (its record of each caller's address), never from RS2.
//! 8. Drain and halt during a 30-study association (the modality's link
//!    shaped to 8 Mbit/s so the association lasts): drained, it completes
//!    byte-identical on its server while `status` shows it remaining
//!    (`active=1`); halted, it ends at the next PDU boundary with an
//!    A-ABORT that storescu and storescp both log — no reset.
//! 9. `poweroff` during a 30-study association: the console says one
//!    association is open and waits; it completes byte-identical, nothing
//!    is aborted, and then QEMU ends by ACPI power-off.

use std::time::Duration;
use tests::dicom::{received, studies, write_studies};
use tests::l4::{check_sent, holder};
use tests::l7::{L7Lab, Plan, script};

/// The aware services, on the layer 7 lab's servers.
fn services(plan: &Plan) -> String {
    let checks = "check_type = \"connect\"\ncheck_interval = 1\ncheck_timeout = 1\ncheck_rise = 1\ncheck_fall = 2\n";
    let servers: String = (0..3)
        .map(|i| {
            format!(
                "[[virtual_service.real_server]]\nlabel = \"RS{i}\"\nip = \"{}\"\n",
                plan.server(i)
            )
        })
        .collect();
    format!(
        r#"
[[virtual_service]]
label = "PACS-Aware"
vip = "{pacs}"
ports = "104"
forwarding = "layer7"
scheduler = "rr"
protocol_aware = "dicom"
persistence = "calling_ae"
persistence_timeout = 3600
{checks}
[[virtual_service.ae_route]]
called_ae = "PACS_A"
servers = ["RS0"]
[[virtual_service.ae_route]]
called_ae = "PACS_B"
servers = ["RS1", "RS2"]
{servers}
[[virtual_service]]
label = "HL7-Aware"
vip = "{hl7}"
ports = "2575"
forwarding = "layer7"
protocol_aware = "hl7"
{checks}
[[virtual_service.hl7_route]]
receiving_application = "LAB"
servers = ["RS0"]
[[virtual_service.hl7_route]]
receiving_application = "RIS"
servers = ["RS1"]
{servers}
[[virtual_service]]
label = "PACS-Short"
vip = "{short}"
ports = "104"
forwarding = "layer7"
protocol_aware = "dicom"
client_timeout = 5
server_timeout = 5
{checks}
[[virtual_service.real_server]]
label = "RS2"
ip = "{rs2}"

[[virtual_service]]
label = "QR-NAT"
vip = "{qr}"
ports = "{QR_PORT}"
forwarding = "nat"
outbound_snat = true
check_type = "dicom_echo"
check_called_ae = "QRSCP"
check_interval = 1
check_timeout = 1
check_rise = 1
check_fall = 2
[[virtual_service.real_server]]
label = "RS2"
ip = "{rs2}"
"#,
        qr = qr_vip(plan),
        pacs = pacs_vip(plan),
        hl7 = hl7_vip(plan),
        short = short_vip(plan),
        rs2 = plan.server(2),
    )
}

/// dcmqrscp's port on RS2 (NAT service `QR-NAT`) and the move
/// destination's on client 2.
const QR_PORT: u16 = 11113;
const DEST_PORT: u16 = 11114;

/// Layer 4 NAT with outbound SNAT: dcmqrscp on RS2.
fn qr_vip(plan: &Plan) -> String {
    format!("{}.113", plan.ext)
}

/// DICOM-aware with 5 s timeouts, RS2 only.
fn short_vip(plan: &Plan) -> String {
    format!("{}.112", plan.ext)
}

fn pacs_vip(plan: &Plan) -> String {
    format!("{}.110", plan.ext)
}

fn hl7_vip(plan: &Plan) -> String {
    format!("{}.111", plan.ext)
}

/// storescu with the given AE titles; its output.
fn store(
    lab: &L7Lab,
    called: &str,
    calling: &str,
    files: &[std::path::PathBuf],
) -> std::process::Output {
    storescu(lab, called, calling, files).output().unwrap()
}

/// storescu (verbose) on client 0 to the DICOM-aware VIP.
fn storescu(
    lab: &L7Lab,
    called: &str,
    calling: &str,
    files: &[std::path::PathBuf],
) -> std::process::Command {
    let mut argv: Vec<String> = [
        "storescu", "-v", "-aet", calling, "-aec", called, "-to", "30", "-ta", "30", "-td", "60",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.push(pacs_vip(&lab.plan));
    argv.push("104".into());
    argv.extend(files.iter().map(|f| f.display().to_string()));
    let refs: Vec<&str> = argv.iter().map(String::as_str).collect();
    lab.clients[0].command(&refs)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn hl7_route(lab: &L7Lab, app: &str, cid: &str) -> String {
    let out = lab.clients[1]
        .command(&[
            "python3",
            &script("hl7_route.py"),
            &hl7_vip(&lab.plan),
            "2575",
            "--app",
            app,
            "--cid",
            cid,
            "--timeout",
            "10",
        ])
        .output()
        .unwrap();
    text(&out)
}

#[test]
fn dicom_and_hl7_awareness() {
    let mut plan = Plan::new(44);
    plan.extra = services(&plan);
    let mut lab = L7Lab::start(plan).unwrap();
    // The HL7 service is up once a RIS message is acknowledged.
    lab.wait_service(&hl7_vip(&lab.plan)).unwrap();
    let tmp = lab.tmp.path().to_path_buf();

    // Readiness of the DICOM service: one study to PACS_A, retried while
    // the checks bring servers up.
    let warm = studies(1, 0, 90);
    let warm_files = write_studies(&tmp.join("warm"), &warm).unwrap();
    let mut up = false;
    for _ in 0..30 {
        if store(&lab, "PACS_A", "WARMUP", &warm_files)
            .status
            .success()
        {
            up = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        up,
        "no association through the DICOM-aware VIP\n{}",
        lab.context()
    );

    // 1. Routing by called AE.
    let a = studies(6, 3, 91);
    let fa = write_studies(&tmp.join("a"), &a).unwrap();
    check_sent(store(&lab, "PACS_A", "MOD0", &fa), "storescu -aec PACS_A").unwrap();

    // 3. Two modalities behind one address, three associations each.
    let mut per_ae = Vec::new();
    for round in 0..3 {
        for (k, calling) in ["MOD1", "MOD2"].iter().enumerate() {
            let st = studies(2, 0, 100 + round * 2 + k as u64);
            let f = write_studies(&tmp.join(format!("b{round}{k}")), &st).unwrap();
            check_sent(store(&lab, "PACS_B", calling, &f), "storescu -aec PACS_B").unwrap();
            per_ae.push((k, st));
        }
    }

    // 2. Unknown called AE: rejected by the appliance.
    let none = studies(1, 0, 95);
    let fnone = write_studies(&tmp.join("none"), &none).unwrap();
    let out = store(&lab, "NOBODY", "MOD0", &fnone);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("Called AE Title Not Recognized") && said.contains("Rejected Permanent"),
        "dcmtk should print the reject: {said}"
    );

    let arrivals: Vec<_> = lab
        .servers
        .iter()
        .map(|s| received(&[&s.dicom]).unwrap())
        .collect();
    for st in a.iter().chain(&warm) {
        assert_eq!(holder(&arrivals, st).unwrap(), 0, "PACS_A lands on RS0");
    }
    let mut node = [None, None];
    for (k, sts) in &per_ae {
        for st in sts {
            let h = holder(&arrivals, st).unwrap();
            assert!(h == 1 || h == 2, "PACS_B lands on RS1/RS2, got RS{h}");
            assert_eq!(*node[*k].get_or_insert(h), h, "MOD{} keeps its node", k + 1);
        }
    }
    assert_ne!(node[0], node[1], "two modalities spread over the nodes");
    assert!(
        arrivals.iter().all(|m| !m.contains_key(&none[0].dataset)),
        "the rejected study reached a server"
    );

    // 4. HL7 routing by MSH-5, AR when unrouted.
    let lab_ack = hl7_route(&lab, "LAB", "AW-LAB-1");
    assert!(lab_ack.contains("ack=AA cid=AW-LAB-1"), "{lab_ack}");
    let ris_ack = hl7_route(&lab, "RIS", "AW-RIS-1");
    assert!(ris_ack.contains("ack=AA cid=AW-RIS-1"), "{ris_ack}");
    let ar = hl7_route(&lab, "PHARM", "AW-PHARM-1");
    assert!(ar.contains("ack=AR cid=AW-PHARM-1"), "{ar}");
    assert!(ar.contains("ERR|") && ar.contains("103"), "{ar}");
    let ids = |i: usize| -> Vec<String> {
        lab.hl7_messages(i)
            .into_iter()
            .map(|(_, id)| id)
            .filter(|id| id.starts_with("AW-"))
            .collect()
    };
    assert_eq!(ids(0), ["AW-LAB-1"]);
    assert_eq!(ids(1), ["AW-RIS-1"]);
    assert!(ids(2).is_empty());

    // 5. Idle past the timeouts: A-ABORT to both peers.
    let storescp_log = lab.tmp.path().join("rs2-storescp-104.log");
    let aborted_before = std::fs::read_to_string(&storescp_log)
        .unwrap_or_default()
        .matches("Association Aborted")
        .count();
    let out = lab.clients[2]
        .command(&[
            "python3",
            &script("dicom_idle_echo.py"),
            &short_vip(&lab.plan),
            "104",
            "--idle",
            "12",
            "--timeout",
            "20",
        ])
        .output()
        .unwrap();
    let said = text(&out);
    assert!(said.contains("echo 1: PDU 0x4 status 0"), "{said}");
    assert!(
        said.contains("echo 2: PDU 0x7"),
        "the client reads an A-ABORT, not a reset: {said}"
    );
    let mut aborted = 0;
    for _ in 0..20 {
        aborted = std::fs::read_to_string(&storescp_log)
            .unwrap_or_default()
            .matches("Association Aborted")
            .count();
        if aborted > aborted_before {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(aborted, aborted_before + 1, "storescp logs the abort");

    // 6. The counters.
    lab.vm.send_line("status").unwrap();
    let t = Duration::from_secs(20);
    let line = lab
        .vm
        .wait_for("aware pair line", t, |l| {
            l.starts_with("aware pair: PACS-Aware called=NOBODY calling=MOD0")
        })
        .unwrap();
    assert!(line.contains(" routed=0 refused=1 bytes=0"), "{line}");
    let line = lab
        .vm
        .wait_for("aware pair line", t, |l| {
            l.starts_with("aware pair: PACS-Aware called=PACS_B calling=MOD1")
        })
        .unwrap();
    assert!(line.contains(" routed=3 refused=0 bytes="), "{line}");
    let bytes: u64 = line.rsplit("bytes=").next().unwrap().parse().unwrap();
    let mod1: usize = per_ae
        .iter()
        .filter(|(k, _)| *k == 0)
        .flat_map(|(_, sts)| sts.iter().map(|st| st.dataset.len()))
        .sum();
    assert!(
        bytes > mod1 as u64,
        "MOD1's {mod1} bytes of data sets: {line}"
    );
    let line = lab
        .vm
        .wait_for("aware pair line", t, |l| {
            l.starts_with("aware pair: HL7-Aware called=PHARM")
        })
        .unwrap();
    assert!(line.contains(" routed=0 refused=1 bytes=0"), "{line}");
    let line = lab
        .vm
        .wait_for("aware line", t, |l| l.starts_with("aware: "))
        .unwrap();
    assert!(line.contains(" aborts-sent=1 "), "{line}");
}

/// Scenarios 7, 8 and 9 on a lab of their own (about 90 s, beside the
/// first); 9 switches the appliance off, so it comes last.
#[test]
fn outbound_snat_drain_halt_and_poweroff_during_a_transfer() {
    let mut plan = Plan::new(46);
    plan.extra = services(&plan);
    let mut lab = L7Lab::start(plan).unwrap();
    let tmp = lab.tmp.path().to_path_buf();

    // 7. C-MOVE through outbound SNAT.
    let moved = c_move(&lab);

    // The DICOM-aware service is up once a study to PACS_A goes through.
    let warm = studies(1, 0, 92);
    let warm_files = write_studies(&tmp.join("warm"), &warm).unwrap();
    let up = (0..30).any(|_| {
        let ok = store(&lab, "PACS_A", "WARMUP", &warm_files)
            .status
            .success();
        if !ok {
            std::thread::sleep(Duration::from_millis(500));
        }
        ok
    });
    assert!(
        up,
        "no association through the DICOM-aware VIP\n{}",
        lab.context()
    );

    // 8. Drain, then halt, during a 30-study association.
    drain_and_halt(&mut lab);

    let from = lab.vm.mark();
    lab.vm.send_line("status").unwrap();
    let t = Duration::from_secs(20);
    let line = lab
        .vm
        .wait_from(from, "aware line", t, |l| l.starts_with("aware: "))
        .unwrap();
    assert!(line.contains(" aborts-sent=1 "), "the halt's abort: {line}");
    let line = lab
        .vm
        .wait_from(from, "outbound line", t, |l| {
            l.starts_with("outbound: QR-NAT")
        })
        .unwrap();
    let flows: usize = line
        .split(" flows=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        flows >= moved,
        "one sub-association per move at least: {line}"
    );

    // 9. Poweroff drains first; the appliance is gone after this.
    poweroff_drains(&mut lab);
}

/// Slows client 0's uplink to 8 Mbit/s, so a 30-study association lasts
/// long enough to act on while it runs.
fn shape_client(lab: &L7Lab) {
    let shape = [
        "tc", "qdisc", "add", "dev", "eth0", "root", "tbf", "rate", "8mbit", "burst", "32kbit",
        "latency", "400ms",
    ];
    lab.clients[0].exec(&shape).unwrap();
}

/// Scenario 9: `poweroff` during a 30-study association waits for it
/// (the drain), so every study arrives once and nothing is aborted; then
/// the appliance switches itself off.
fn poweroff_drains(lab: &mut L7Lab) {
    shape_client(lab);
    wait_active_zero(lab);
    let (long, running) = long_store(lab, "long-poweroff", 170);
    let from = lab.vm.mark();
    lab.vm.send_line("poweroff").unwrap();
    let line = lab
        .vm
        .wait_from(from, "the poweroff's drain", Duration::from_secs(20), |l| {
            l.starts_with("poweroff: ")
        })
        .unwrap();
    assert!(
        line.contains("1 association(s) open") && !running.is_finished(),
        "poweroff waits for the running association: {line}"
    );
    completed_on_rs0(lab, running, &long, "storescu during the poweroff");
    let status = lab.vm.wait_exit(Duration::from_secs(40)).unwrap();
    let console = lab.vm.console();
    assert!(status.success(), "ACPI power-off ends QEMU: {status}");
    let said: Vec<&str> = console.lines().skip(from).collect();
    assert!(
        said.iter().any(|l| l.contains("powering off"))
            && !said.iter().any(|l| l.contains("aborting")),
        "the association ended before the power went, nothing aborted: {}",
        said.join("\n")
    );
}

/// Associations RS0's storescp on port 104 has accepted (a health
/// check's bare connection is logged as received, never acknowledged).
fn associations_rs0(lab: &L7Lab) -> usize {
    std::fs::read_to_string(lab.tmp.path().join("rs0-storescp-104.log"))
        .unwrap_or_default()
        .matches("Association Acknowledged")
        .count()
}

/// The `rs SERVER` line of `vs SERVICE` in a fresh `status`.
fn rs_line(lab: &mut L7Lab, service: &str, server: &str) -> String {
    let from = lab.vm.mark();
    lab.vm.send_line("status").unwrap();
    lab.vm
        .wait_from(from, "status", Duration::from_secs(20), |l| {
            l.starts_with("conntrack:")
        })
        .unwrap();
    let text = lab.vm.console();
    let lines: Vec<&str> = text.lines().skip(from).collect();
    let vs = lines
        .iter()
        .position(|l| l.starts_with(&format!("vs {service} ")))
        .unwrap_or_else(|| panic!("no vs {service} line: {text}"));
    lines[vs + 1..]
        .iter()
        .take_while(|l| !l.starts_with("vs "))
        .find(|l| l.trim_start().starts_with(&format!("rs {server} ")))
        .unwrap_or_else(|| panic!("no rs {server} line under {service}"))
        .to_string()
}

/// Waits (bounded) until RS0 of PACS-Aware has no connection left.
fn wait_active_zero(lab: &mut L7Lab) {
    let mut line = String::new();
    for _ in 0..15 {
        line = rs_line(lab, "PACS-Aware", "RS0");
        if line.contains(" active=0 ") {
            return;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    panic!("RS0 keeps connections: {line}");
}

/// Runs a 30-study storescu to PACS_A (RS0) in the background; returns
/// once RS0 has logged its association.
fn long_store(
    lab: &L7Lab,
    dir: &str,
    seed: u64,
) -> (
    Vec<tests::dicom::Study>,
    std::thread::JoinHandle<std::process::Output>,
) {
    let long = studies(30, 3, seed);
    let files = write_studies(&lab.tmp.path().join(dir), &long).unwrap();
    let before = associations_rs0(lab);
    let mut cmd = storescu(lab, "PACS_A", "MODLONG", &files);
    let running = std::thread::spawn(move || cmd.output().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while associations_rs0(lab) == before {
        assert!(
            std::time::Instant::now() < deadline && !running.is_finished(),
            "the long store never reached RS0"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (long, running)
}

/// Waits for the long store and checks it succeeded and every study
/// reached RS0 once, byte for byte.
fn completed_on_rs0(
    lab: &L7Lab,
    running: std::thread::JoinHandle<std::process::Output>,
    long: &[tests::dicom::Study],
    what: &str,
) {
    check_sent(running.join().unwrap(), what).unwrap();
    let got = received(&[&lab.servers[0].dicom]).unwrap();
    for s in long {
        assert_eq!(
            got.get(&s.dataset),
            Some(&1),
            "study {} on RS0 once, byte for byte",
            s.sop_instance_uid
        );
    }
}

/// Scenario 8.
fn drain_and_halt(lab: &mut L7Lab) {
    shape_client(lab);

    // Drain: the association runs to its end while status shows it.
    // Earlier associations' entries linger 10 s after they close: start
    // from none.
    wait_active_zero(lab);
    let (long, running) = long_store(lab, "long-drain", 150);
    lab.vm.send_line("drain PACS-Aware/RS0").unwrap();
    let line = rs_line(lab, "PACS-Aware", "RS0");
    assert!(
        !running.is_finished(),
        "the association outlived the status"
    );
    assert!(
        line.contains(" drain ") && line.contains(" active=1 "),
        "status shows the drained server's remaining association: {line}"
    );
    completed_on_rs0(lab, running, &long, "storescu during the drain");
    // A closed connection's entry lingers (10 s) before the count drops.
    wait_active_zero(lab);
    lab.vm.send_line("online PACS-Aware/RS0").unwrap();

    // Halt: an A-ABORT at the next PDU boundary, to both peers.
    let log = lab.tmp.path().join("rs0-storescp-104.log");
    let aborted = |log: &std::path::Path| {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .matches("Association Aborted")
            .count()
    };
    let before = aborted(&log);
    // Every reset either peer receives, captured where it arrives.
    // The association's resets only: port 104, and at RS0 the appliance's
    // side from its layer 7 port range (its health checks come from the
    // stack's ports, 49152 and up).
    let capture = |host: &tools::lab::Host, name: &str, rst: &str| {
        let file = lab.tmp.path().join(format!("{name}-rst.pcap"));
        let p = tests::peers::Process::spawn(
            host,
            &[
                "tcpdump",
                "-U",
                "-ni",
                "eth0",
                "-w",
                &file.display().to_string(),
                rst,
            ],
            &lab.tmp.path().join(format!("{name}-tcpdump.log")),
        )
        .unwrap();
        (p, file)
    };
    let mut captures = [
        capture(
            &lab.clients[0],
            "client",
            "tcp[tcpflags] & tcp-rst != 0 and tcp port 104",
        ),
        capture(
            &lab.servers[0].host,
            "rs0",
            "tcp[tcpflags] & tcp-rst != 0 and tcp port 104 and portrange 1024-49151",
        ),
    ];
    std::thread::sleep(Duration::from_millis(500));
    let (_, running) = long_store(lab, "long-halt", 160);
    std::thread::sleep(Duration::from_millis(500));
    lab.vm.send_line("halt PACS-Aware/RS0").unwrap();
    let out = running.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for (p, file) in captures.iter_mut() {
        p.stop();
        let read = std::process::Command::new("tcpdump")
            .args(["-nr", &file.display().to_string()])
            .output()
            .unwrap();
        let resets = String::from_utf8_lossy(&read.stdout).to_string();
        assert!(
            resets.trim().is_empty(),
            "no reset reaches either peer ({}): {resets}",
            file.display()
        );
    }
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("Peer aborted Association") && !said.to_lowercase().contains("reset"),
        "storescu reads an A-ABORT, not a reset: {said}"
    );
    let mut now = before;
    for _ in 0..40 {
        now = aborted(&log);
        if now > before {
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(now, before + 1, "storescp logs the abort");
    lab.vm.send_line("online PACS-Aware/RS0").unwrap();
    lab.clients[0]
        .exec(&["tc", "qdisc", "del", "dev", "eth0", "root"])
        .unwrap();
}

/// Scenario 7: stores studies into dcmqrscp (RS2, through the NAT VIP),
/// moves each to a storescp on client 2 and checks what arrived and from
/// where. Returns the number of moves.
fn c_move(lab: &L7Lab) -> usize {
    use tests::peers::{Process, wait_listening};
    let tmp = lab.tmp.path();
    let (vip, dest) = (qr_vip(&lab.plan), lab.plan.client(2));
    let db = tmp.join("qr-db");
    let out = tmp.join("move-dest");
    std::fs::create_dir_all(&db).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let cfg = tmp.join("dcmqrscp.cfg");
    std::fs::write(
        &cfg,
        format!(
            "NetworkTCPPort = {QR_PORT}\nMaxPDUSize = 16384\nMaxAssociations = 16\n\
             HostTable BEGIN\nmovedest = (MOVEDEST, {dest}, {DEST_PORT})\nHostTable END\n\
             VendorTable BEGIN\nVendorTable END\n\
             AETable BEGIN\nQRSCP {} RW (20, 200mb) ANY\nAETable END\n",
            db.display()
        ),
    )
    .unwrap();
    let rs2 = &lab.servers[2].host;
    // No reverse DNS of callers (`-dhl`): the lab has no resolver, and a
    // lookup per association (health checks every second) stalls
    // dcmqrscp until its listen queue overflows.
    let _qr = Process::spawn(
        rs2,
        &["dcmqrscp", "-v", "-dhl", "-c", &cfg.display().to_string()],
        &tmp.join("dcmqrscp.log"),
    )
    .unwrap();
    wait_listening(rs2, QR_PORT, Duration::from_secs(10)).unwrap();
    let peers = tmp.join("move-dest-peers.txt");
    let record = format!("echo #r #f >> {}", peers.display());
    let client = &lab.clients[2];
    let _dest = Process::spawn(
        client,
        &[
            "storescp",
            "-v",
            "-dhl",
            "-aet",
            "MOVEDEST",
            "+B",
            "-od",
            &out.display().to_string(),
            "-xcr",
            &record,
            &DEST_PORT.to_string(),
        ],
        &tmp.join("move-dest.log"),
    )
    .unwrap();
    wait_listening(client, DEST_PORT, Duration::from_secs(10)).unwrap();

    // Into the archive through the VIP (inbound NAT), retried while the
    // check brings RS2 up in this service.
    let st = studies(3, 2, 130);
    let files = write_studies(&tmp.join("qr-in"), &st).unwrap();
    let mut argv = vec!["storescu", "-aec", "QRSCP", "-to", "5", "-ta", "30"];
    argv.push(&vip);
    let port = QR_PORT.to_string();
    argv.push(&port);
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    argv.extend(names.iter().map(String::as_str));
    let mut stored = None;
    for _ in 0..20 {
        let o = client.command(&argv).output().unwrap();
        if o.status.success() {
            stored = Some(o);
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    check_sent(
        stored.unwrap_or_else(|| panic!("storescu to dcmqrscp via NAT\n{}", lab.context())),
        "storescu -aec QRSCP",
    )
    .unwrap();

    // Each study moved to MOVEDEST: dcmqrscp opens the association back
    // to client 2 itself, through the appliance.
    for s in &st {
        let uid = study_uid(&s.dataset);
        let o = client
            .command(&[
                "movescu",
                "-v",
                "-aet",
                "MOVESCU",
                "-aec",
                "QRSCP",
                "-aem",
                "MOVEDEST",
                "-to",
                "30",
                "-S",
                "-k",
                "QueryRetrieveLevel=STUDY",
                "-k",
                &format!("StudyInstanceUID={uid}"),
                &vip,
                &port,
            ])
            .output()
            .unwrap();
        let said = text(&o);
        assert!(
            o.status.success() && said.contains("Final Move Response (Success)"),
            "movescu {uid}: {said}\n{}",
            std::fs::read_to_string(tmp.join("dcmqrscp.log")).unwrap_or_default()
        );
    }
    let arrived = received(&[&out]).unwrap();
    for s in &st {
        assert_eq!(
            arrived.get(&s.dataset),
            Some(&1),
            "study {} arrives once, byte-identical",
            s.sop_instance_uid
        );
    }
    assert_eq!(arrived.values().sum::<usize>(), st.len());
    let callers = std::fs::read_to_string(&peers).unwrap();
    let lines: Vec<&str> = callers.lines().collect();
    assert_eq!(lines.len(), st.len(), "{callers}");
    assert!(
        lines
            .iter()
            .all(|l| l.split(' ').next() == Some(vip.as_str())),
        "the destination sees only the VIP, never {}: {callers}",
        lab.plan.server(2)
    );
    st.len()
}

/// The Study Instance UID (0020,000D) of a data set written by
/// [`tests::dicom::Study`] (explicit VR little endian).
fn study_uid(ds: &[u8]) -> String {
    let tag = [0x20, 0x00, 0x0D, 0x00, b'U', b'I'];
    let at = ds
        .windows(tag.len())
        .position(|w| w == tag)
        .expect("a Study Instance UID");
    let len = usize::from(u16::from_le_bytes([ds[at + 6], ds[at + 7]]));
    String::from_utf8_lossy(&ds[at + 8..at + 8 + len])
        .trim_end_matches('\0')
        .to_string()
}
