//! The layer 7 lab shared by the L7 end-to-end scenarios: three clients on
//! the external subnet, three real servers on the internal subnet (their
//! gateway is the appliance, so a transparent service works too), each
//! running the real peers of the guide's services — storescp on 104 and
//! 11112, an HL7 MLLP interface engine (the `hl7` library) on 2575, an
//! XDS-like HTTP endpoint on 17035, an HTTPS server with its own certificate
//! on 443 — plus nginx with the PROXY protocol on 8080 (rs0) and a
//! half-close/reset probe on 7000 (rs1).

use crate::l4::{peers_dir, storescp_recording};
use crate::peers::{Process, TempDir, wait_listening};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tools::console::Appliance;
use tools::lab::{Host, Lab};
use tools::qemu::{Backend, Boot, Machine, Nic};

/// Addresses: external `10.232.N.0/24`, internal the next /24.
#[derive(Clone)]
pub struct Plan {
    pub ext: String,
    pub int: String,
    /// More services (TOML) after the layer 7 test's own.
    pub extra: String,
}

impl Plan {
    pub fn new(third_octet: u8) -> Plan {
        Plan {
            ext: format!("10.232.{third_octet}"),
            int: format!("10.232.{}", third_octet + 1),
            extra: String::new(),
        }
    }
    pub fn appliance(&self) -> String {
        format!("{}.2", self.ext)
    }
    pub fn appliance_internal(&self) -> String {
        format!("{}.1", self.int)
    }
    pub fn client(&self, i: usize) -> String {
        format!("{}.{}", self.ext, 11 + i)
    }
    pub fn server(&self, i: usize) -> String {
        format!("{}.{}", self.int, 21 + i)
    }
    /// The guide's services on one VIP, source-IP persistence of 1 h.
    pub fn vip_med(&self) -> String {
        format!("{}.100", self.ext)
    }
    /// HL7 without persistence, weights 2:1:1.
    pub fn vip_spread(&self) -> String {
        format!("{}.101", self.ext)
    }
    /// HTTP to nginx on rs0 with PROXY v2.
    pub fn vip_proxy(&self) -> String {
        format!("{}.102", self.ext)
    }
    /// HL7, transparent, rs0.
    pub fn vip_transparent(&self) -> String {
        format!("{}.103", self.ext)
    }
    /// HL7 with 5 s client/server timeouts, rs0.
    pub fn vip_short(&self) -> String {
        format!("{}.104", self.ext)
    }
    /// The half-close/reset probe on rs1.
    pub fn vip_probe(&self) -> String {
        format!("{}.105", self.ext)
    }
    /// HL7 whose only real server (rs0, port 2576) never answers: the
    /// fallback server (rs1's HL7 on the client's port) takes everything.
    pub fn vip_fallback(&self) -> String {
        format!("{}.106", self.ext)
    }

    pub fn config_toml(&self) -> String {
        let checks = "check_type = \"connect\"\ncheck_interval = 1\ncheck_timeout = 1\ncheck_rise = 1\ncheck_fall = 2\n";
        let mut t = format!(
            "[network]\nhostname = \"lbl7\"\n\n[[network.interface]]\nname = \"eth0\"\naddress = \"{}\"\nprefix = 24\n\n[[network.interface]]\nname = \"eth1\"\naddress = \"{}\"\nprefix = 24\nrole = \"internal\"\n",
            self.appliance(),
            self.appliance_internal()
        );
        let service = |label: &str, vip: &str, ports: &str, extra: &str| {
            format!(
                "\n[[virtual_service]]\nlabel = \"{label}\"\nvip = \"{vip}\"\nports = \"{ports}\"\nforwarding = \"layer7\"\n{extra}"
            )
        };
        let server = |i: usize, extra: &str| {
            format!(
                "\n[[virtual_service.real_server]]\nlabel = \"RS{i}\"\nip = \"{}\"\n{extra}",
                self.server(i)
            )
        };
        t += &service(
            "MED",
            &self.vip_med(),
            "104,11112,2575,17035,443",
            &format!("persistence_timeout = 3600\ncheck_port = 2575\n{checks}"),
        );
        for i in 0..3 {
            t += &server(i, "");
        }
        t += &service(
            "HL7-Spread",
            &self.vip_spread(),
            "2575",
            &format!("scheduler = \"wrr\"\n{checks}"),
        );
        for (i, w) in [2, 1, 1].iter().enumerate() {
            t += &server(i, &format!("weight = {w}\n"));
        }
        t += &service(
            "HTTP-Proxy",
            &self.vip_proxy(),
            "8080",
            "check_type = \"none\"\n",
        );
        t += &server(0, "send_proxy = \"v2\"\n");
        t += &service(
            "HL7-Transparent",
            &self.vip_transparent(),
            "2575",
            &format!("l7_transparent = true\n{checks}"),
        );
        t += &server(0, "");
        t += &service(
            "HL7-Short",
            &self.vip_short(),
            "2575",
            &format!("client_timeout = 5\nserver_timeout = 5\n{checks}"),
        );
        t += &server(0, "");
        t += &service(
            "Probe",
            &self.vip_probe(),
            "7000",
            "check_type = \"none\"\n",
        );
        t += &server(1, "");
        t += &service(
            "HL7-Fallback",
            &self.vip_fallback(),
            "2575",
            &format!("fallback = {{ ip = \"{}\" }}\n{checks}", self.server(1)),
        );
        t += &server(0, "port = 2576\n");
        t += &self.extra;
        t
    }
}

/// One real server and what runs on it.
pub struct Server {
    pub host: Host,
    pub dicom: PathBuf,
    pub dicom_peers: PathBuf,
    pub hl7: PathBuf,
    pub hl7_log: PathBuf,
    pub hl7_server: Option<Process>,
    pub label: String,
    _procs: Vec<Process>,
}

/// The running lab. Field order is drop order.
pub struct L7Lab {
    pub servers: Vec<Server>,
    pub clients: Vec<Host>,
    pub vm: Appliance,
    pub plan: Plan,
    pub tmp: TempDir,
    pub lab: Lab,
}

pub fn script(name: &str) -> String {
    peers_dir().join(name).display().to_string()
}

fn spawn(host: &Host, argv: &[&str], log: &Path) -> Result<Process> {
    Process::spawn(host, argv, log)
}

impl L7Lab {
    pub fn start(plan: Plan) -> Result<L7Lab> {
        // Built first: the peers live a bounded time (--lifetime), which a
        // first build of the images must not use up.
        let kernel = crate::images().kernel.clone();
        let tmp = TempDir::new("l7")?;
        let mut lab = Lab::new()?;
        let ext_tap = lab.tap("ext")?;
        let int_tap = lab.tap("int")?;
        let mut clients = Vec::new();
        for i in 0..3 {
            clients.push(lab.host(
                &format!("c{i}"),
                "ext",
                &format!("{}/24", plan.client(i)),
                None,
            )?);
        }
        let mut servers = Vec::new();
        for i in 0..3 {
            let host = lab.host(
                &format!("rs{i}"),
                "int",
                &format!("{}/24", plan.server(i)),
                Some(&plan.appliance_internal()),
            )?;
            servers.push(Self::start_server(&tmp, host, i)?);
        }
        let toml = tmp.path().join("config.toml");
        std::fs::write(&toml, plan.config_toml())?;
        let blob = tmp.path().join("config.bin");
        tools::config_cmd::compile(&toml, &blob)?;
        let mut machine = Machine::new(Boot::Kernel {
            elf: kernel,
            cmdline: String::new(),
            module: Some(blob),
        });
        machine
            .nics
            .push(Nic::virtio(Backend::Tap { ifname: ext_tap }));
        machine
            .nics
            .push(Nic::virtio(Backend::Tap { ifname: int_tap }));
        let vm = Appliance::boot(&machine, Some(&lab))?;
        vm.wait_ready(Duration::from_secs(90))?;
        Ok(L7Lab {
            servers,
            clients,
            vm,
            plan,
            tmp,
            lab,
        })
    }

    fn start_server(tmp: &TempDir, host: Host, i: usize) -> Result<Server> {
        let label = format!("RS{i}");
        let mut procs = Vec::new();
        let dicom = tmp.sub(&format!("rs{i}-dicom"))?;
        let dicom_peers = tmp.path().join(format!("rs{i}-dicom-peers.txt"));
        for port in [104u16, 11112] {
            let log = tmp.path().join(format!("rs{i}-storescp-{port}.log"));
            procs.push(storescp_recording(&host, port, &dicom, &dicom_peers, &log)?);
        }
        let hl7 = tmp.sub(&format!("rs{i}-hl7"))?;
        let hl7_log = tmp.path().join(format!("rs{i}-hl7.log"));
        let hl7_server = Some(Self::hl7_server(&host, &hl7, &hl7_log)?);
        procs.push(spawn(
            &host,
            &[
                "python3",
                &script("http_store_server.py"),
                "--port",
                "17035",
                "--label",
                &label,
            ],
            &tmp.path().join(format!("rs{i}-http.log")),
        )?);
        // HTTPS with this server's own self-signed certificate (CN = label).
        let cert = tmp.path().join(format!("rs{i}.crt"));
        let key = tmp.path().join(format!("rs{i}.key"));
        let out = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            ])
            .arg("-subj")
            .arg(format!("/CN={label}"))
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()?;
        if !out.status.success() {
            bail!("openssl: {}", String::from_utf8_lossy(&out.stderr));
        }
        procs.push(spawn(
            &host,
            &[
                "python3",
                &script("http_store_server.py"),
                "--port",
                "443",
                "--label",
                &label,
                "--cert",
                &cert.display().to_string(),
                "--key",
                &key.display().to_string(),
            ],
            &tmp.path().join(format!("rs{i}-https.log")),
        )?);
        if i == 0 {
            procs.push(Self::nginx_proxy_protocol(tmp, &host)?);
        }
        if i == 1 {
            procs.push(spawn(
                &host,
                &[
                    "python3",
                    &script("tcp_halfclose.py"),
                    "server",
                    "--port",
                    "7000",
                ],
                &tmp.path().join("probe.log"),
            )?);
        }
        for port in [2575u16, 17035, 443] {
            wait_listening(&host, port, Duration::from_secs(20))?;
        }
        Ok(Server {
            host,
            dicom,
            dicom_peers,
            hl7,
            hl7_log,
            hl7_server,
            label,
            _procs: procs,
        })
    }

    pub fn hl7_server(host: &Host, dir: &Path, log: &Path) -> Result<Process> {
        // Appends: a restarted server keeps the log of the first one.
        let p = Process::spawn_appending(
            host,
            &[
                "python3",
                &script("hl7_store_server.py"),
                "--port",
                "2575",
                "--dir",
                &dir.display().to_string(),
            ],
            log,
        )?;
        wait_listening(host, 2575, Duration::from_secs(20))?;
        Ok(p)
    }

    /// nginx as a PROXY-protocol-aware real server: it answers with the
    /// client address the PROXY header told it.
    fn nginx_proxy_protocol(tmp: &TempDir, host: &Host) -> Result<Process> {
        let dir = tmp.sub("nginx")?;
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log {d}/access.log;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n  server {{\n    listen 8080 proxy_protocol;\n    location / {{ return 200 \"client=$proxy_protocol_addr:$proxy_protocol_port peer=$remote_addr\\n\"; }}\n  }}\n}}\n",
                d = dir.display()
            ),
        )?;
        let p = spawn(
            host,
            &[
                "nginx",
                "-c",
                &conf.display().to_string(),
                "-p",
                &dir.display().to_string(),
            ],
            &dir.join("stdout.log"),
        )?;
        wait_listening(host, 8080, Duration::from_secs(20)).context("nginx")?;
        Ok(p)
    }

    /// Runs a peer script on client `c`; returns (success, stdout+stderr).
    pub fn run_client(&self, c: usize, argv: &[&str]) -> Result<(bool, String)> {
        let out = self.clients[c].command(argv).output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// HL7 exchange through `vip:2575` from client `c` (see hl7_client.py).
    pub fn hl7(&self, c: usize, vip: &str, tag: &str, args: &[&str]) -> Result<(bool, String)> {
        let script = script("hl7_client.py");
        let mut argv = vec!["python3", &script, vip, "2575", "--tag", tag];
        argv.extend_from_slice(args);
        self.run_client(c, &argv)
    }

    /// `msg <peer> <control id>` lines each server logged, as (peer, id).
    pub fn hl7_messages(&self, server: usize) -> Vec<(String, String)> {
        std::fs::read_to_string(&self.servers[server].hl7_log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                (f.next() == Some("msg")).then(|| {
                    (
                        f.next().unwrap_or("").to_string(),
                        f.next().unwrap_or("").to_string(),
                    )
                })
            })
            .collect()
    }

    /// Waits (bounded) until an HL7 message through `vip` is acknowledged.
    pub fn wait_service(&self, vip: &str) -> Result<()> {
        // Control IDs unique per VIP and try: each message is stored once.
        let host = vip.rsplit('.').next().unwrap_or(vip);
        for i in 0..60 {
            let tag = format!("W{host}x{i}-");
            if self
                .hl7(0, vip, &tag, &["--short", "1", "--timeout", "3"])?
                .0
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        bail!("no HL7 exchange through {vip}; {}", self.context())
    }

    /// The `drops:` and `l7:` lines of the console's answer to `status`.
    pub fn status(&mut self) -> Result<String> {
        let mark = self.vm.mark();
        self.vm.send_line("status")?;
        let t = Duration::from_secs(20);
        let drops = self
            .vm
            .wait_from(mark, "status drops line", t, |l| l.starts_with("drops:"))?;
        let l7 = self
            .vm
            .wait_from(mark, "status l7 line", t, |l| l.starts_with("l7:"))?;
        Ok(format!("{drops}\n{l7}"))
    }

    pub fn context(&self) -> String {
        format!("console:\n{}", self.vm.console())
    }
}

/// The `name=N` counters of a status line, e.g. `drops: no-flow=3 ...`.
pub fn counters(line: &str) -> std::collections::BTreeMap<String, u64> {
    line.split_whitespace()
        .filter_map(|w| {
            let (k, v) = w.split_once('=')?;
            Some((k.to_string(), v.trim_end_matches(',').parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod unit {
    #[test]
    fn the_lab_config_validates() {
        let toml = super::Plan::new(40).config_toml();
        let c = lb_core::config::from_toml(&toml).unwrap();
        assert_eq!(c.virtual_services.len(), 7);
    }

    #[test]
    fn counters_of_a_status_line() {
        let c = super::counters("drops: bad-ihl=3 no-flow=12 arp-full=0");
        assert_eq!(c.get("bad-ihl"), Some(&3));
        assert_eq!(c.get("no-flow"), Some(&12));
        assert_eq!(c.len(), 3);
    }
}
