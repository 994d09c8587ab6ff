//! The L4 scenario shared by the DR, NAT and SNAT end-to-end tests: two
//! modalities (clients), two PACS real servers running `storescp`, and the
//! booted appliance between them with a compiled config as its boot module.

use crate::dicom::{Study, received, studies, write_studies};
use crate::peers::{Process, TempDir};
use anyhow::{Result, bail};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tools::console::Appliance;
use tools::lab::{Host, Lab};
use tools::qemu::{Backend, Nic};

/// Port of the bulk transfer service.
pub const BULK_PORT: u16 = 5201;

/// Layer 4 forwarding method under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Dr,
    Nat,
    Snat,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Dr => "dr",
            Method::Nat => "nat",
            Method::Snat => "snat",
        }
    }
}

/// Addresses of one scenario: `net` is the first three octets of the
/// external subnet; NAT's internal subnet is the next /24.
pub struct Plan {
    pub method: Method,
    pub ext: String,
    pub int: String,
    /// Also an HL7 (MLLP, port 2575) virtual service, with the `hl7`
    /// library's MLLP server on each real server.
    pub hl7: bool,
    /// Health checks every second, down after two failures (to see
    /// failover quickly); else the product's defaults (10 s, 5 s timeout,
    /// down after three failures).
    pub fast_checks: bool,
}

impl Plan {
    pub fn new(method: Method, third_octet: u8) -> Plan {
        Plan {
            method,
            ext: format!("10.230.{third_octet}"),
            int: format!("10.230.{}", third_octet + 1),
            hl7: false,
            fast_checks: true,
        }
    }
    /// VIP of the HL7 service (with [`Plan::hl7`]).
    pub fn vip_hl7(&self) -> String {
        format!("{}.103", self.ext)
    }
    /// An address on the external subnet for a host that is neither client
    /// nor server (e.g. a flooder).
    pub fn other(&self, i: usize) -> String {
        format!("{}.{}", self.ext, 41 + i)
    }
    pub fn appliance(&self) -> String {
        format!("{}.2", self.ext)
    }
    pub fn appliance_internal(&self) -> String {
        format!("{}.1", self.int)
    }
    /// VIP of the DICOM service with persistence (ports 104 and 11112).
    pub fn vip_persistent(&self) -> String {
        format!("{}.100", self.ext)
    }
    /// VIP of the DICOM service without persistence (weighted round robin).
    pub fn vip_spread(&self) -> String {
        format!("{}.101", self.ext)
    }
    /// VIP of the UDP service.
    pub fn vip_udp(&self) -> String {
        format!("{}.102", self.ext)
    }
    /// VIP of the bulk TCP service (`peers/bulk.py` on PACS1).
    pub fn vip_bulk(&self) -> String {
        format!("{}.104", self.ext)
    }
    /// Every VIP of the plan.
    pub fn vips(&self) -> [String; 5] {
        [
            self.vip_persistent(),
            self.vip_spread(),
            self.vip_udp(),
            self.vip_hl7(),
            self.vip_bulk(),
        ]
    }
    pub fn client(&self, i: usize) -> String {
        format!("{}.{}", self.ext, 11 + i)
    }
    /// Real servers sit on the internal subnet in NAT mode, else beside the clients.
    pub fn server(&self, i: usize) -> String {
        let net = if self.method == Method::Nat {
            &self.int
        } else {
            &self.ext
        };
        format!("{net}.{}", 21 + i)
    }

    /// The appliance's config, in the TOML the host tool compiles.
    pub fn config_toml(&self) -> String {
        let mut t = format!(
            "[network]\nhostname = \"lbtest\"\n\n[[network.interface]]\nname = \"eth0\"\naddress = \"{}\"\nprefix = 24\nrole = \"external\"\n",
            self.appliance()
        );
        if self.method == Method::Nat {
            t += &format!(
                "\n[[network.interface]]\nname = \"eth1\"\naddress = \"{}\"\nprefix = 24\nrole = \"internal\"\n",
                self.appliance_internal()
            );
        }
        let m = self.method.name();
        let checks = if self.fast_checks {
            "check_type = \"connect\"\ncheck_interval = 1\ncheck_timeout = 1\ncheck_rise = 1\ncheck_fall = 2\n"
        } else {
            "check_type = \"connect\"\n"
        };
        t += &format!(
            "\n[[virtual_service]]\nlabel = \"DICOM-Persistent\"\nvip = \"{}\"\nports = \"104,11112\"\nprotocol = \"tcp\"\nforwarding = \"{m}\"\npersistence_timeout = 3600\ncheck_port = 104\n{checks}",
            self.vip_persistent()
        );
        for i in 0..2 {
            t += &format!(
                "\n[[virtual_service.real_server]]\nlabel = \"PACS{}\"\nip = \"{}\"\n",
                i + 1,
                self.server(i)
            );
        }
        t += &format!(
            "\n[[virtual_service]]\nlabel = \"DICOM-Spread\"\nvip = \"{}\"\nports = \"104\"\nprotocol = \"tcp\"\nforwarding = \"{m}\"\nscheduler = \"wrr\"\ncheck_port = 104\n{checks}",
            self.vip_spread()
        );
        for (i, w) in [2, 1].iter().enumerate() {
            t += &format!(
                "\n[[virtual_service.real_server]]\nlabel = \"PACS{}\"\nip = \"{}\"\nweight = {w}\n",
                i + 1,
                self.server(i)
            );
        }
        t += &format!(
            "\n[[virtual_service]]\nlabel = \"UDP-Echo\"\nvip = \"{}\"\nports = \"7777\"\nprotocol = \"udp\"\nforwarding = \"{m}\"\ncheck_type = \"none\"\n",
            self.vip_udp()
        );
        for i in 0..2 {
            t += &format!(
                "\n[[virtual_service.real_server]]\nlabel = \"ECHO{}\"\nip = \"{}\"\n",
                i + 1,
                self.server(i)
            );
        }
        if self.hl7 {
            t += &format!(
                "\n[[virtual_service]]\nlabel = \"HL7\"\nvip = \"{}\"\nports = \"2575\"\nprotocol = \"tcp\"\nforwarding = \"{m}\"\npersistence_timeout = 3600\n{checks}",
                self.vip_hl7()
            );
            for i in 0..2 {
                t += &format!(
                    "\n[[virtual_service.real_server]]\nlabel = \"HL7{}\"\nip = \"{}\"\n",
                    i + 1,
                    self.server(i)
                );
            }
        }
        t += &format!(
            "\n[[virtual_service]]\nlabel = \"Bulk\"\nvip = \"{}\"\nports = \"{}\"\nprotocol = \"tcp\"\nforwarding = \"{m}\"\ncheck_type = \"none\"\n\n[[virtual_service.real_server]]\nlabel = \"BULK1\"\nip = \"{}\"\n",
            self.vip_bulk(),
            BULK_PORT,
            self.server(0)
        );
        t
    }
}

/// A PACS real server: storescp on 104 and 11112, a UDP echo on 7777, and a
/// record of the peer address of every stored file.
pub struct Pacs {
    pub host: Host,
    pub dir: PathBuf,
    pub peers_log: PathBuf,
    pub storescp: Vec<Process>,
    _udp: Process,
    /// The HL7 MLLP server on port 2575 (with [`Plan::hl7`]); it logs each
    /// message received under `hl7-log`.
    pub hl7: Option<Process>,
    pub hl7_log: PathBuf,
    _bulk: Option<Process>,
}

/// A running scenario. Field order is drop order: peers and QEMU end before
/// the namespaces go.
pub struct Scenario {
    pub pacs: Vec<Pacs>,
    pub clients: Vec<Host>,
    pub vm: Appliance,
    pub plan: Plan,
    pub tmp: TempDir,
    pub lab: Lab,
}

pub fn peers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("peers")
}

/// Starts storescp on `port` recording each stored file's peer address.
pub fn storescp_recording(
    host: &Host,
    port: u16,
    dir: &Path,
    peers_log: &Path,
    log: &Path,
) -> Result<Process> {
    let record = format!("echo #r #f >> {}", peers_log.display());
    let port_s = port.to_string();
    let dir_s = dir.display().to_string();
    // Like a real PACS: one process per association (`--fork`), so the idle
    // association does not block the others, and no 60 s default socket
    // timeout (`-ts`) that would end it before the appliance's does. No
    // reverse DNS of callers (`-dhl`): the lab has no resolver.
    let p = Process::spawn(
        host,
        &[
            "storescp", "-v", "--fork", "-ts", "600", "-dhl", "-aet", "PACS", "+B", "-od", &dir_s,
            "-xcr", &record, "-xs", &port_s,
        ],
        log,
    )?;
    crate::peers::wait_listening(host, port, Duration::from_secs(10))?;
    Ok(p)
}

/// The `hl7` library's MLLP server on port 2575, writing each message it
/// receives (and each ACK) into `dir`; its own output goes to `log`.
pub fn hl7_mllp_server(host: &Host, dir: &Path, log: &Path) -> Result<Process> {
    let dir = dir.display().to_string();
    let p = Process::spawn(
        host,
        &[
            "python3",
            &peers_dir().join("hl7_mllp_server.py").display().to_string(),
            "--host",
            "0.0.0.0",
            "--port",
            "2575",
            "--lifetime",
            "900",
            "--max-connections",
            "100000",
            "--log",
            &dir,
            "--in-namespace",
        ],
        log,
    )?;
    crate::peers::wait_listening(host, 2575, Duration::from_secs(10))?;
    Ok(p)
}

impl Scenario {
    /// Starts PACS `i`'s storescp again (after a test stopped it); its logs
    /// go to `pacs{i}-{port}.restarted.log`.
    pub fn restart_storescp(&mut self, i: usize) -> Result<()> {
        let p = &mut self.pacs[i];
        p.storescp.clear();
        for port in [104u16, 11112] {
            let log = self
                .tmp
                .path()
                .join(format!("pacs{i}-{port}.restarted.log"));
            p.storescp.push(storescp_recording(
                &p.host,
                port,
                &p.dir,
                &p.peers_log,
                &log,
            )?);
        }
        Ok(())
    }

    pub fn start(plan: Plan) -> Result<Scenario> {
        let tmp = TempDir::new(plan.method.name())?;
        let mut lab = Lab::new()?;
        let ext_tap = lab.tap("ext")?;
        let int_tap = if plan.method == Method::Nat {
            Some(lab.tap("int")?)
        } else {
            None
        };
        let mut clients = Vec::new();
        for i in 0..2 {
            clients.push(lab.host(
                &format!("c{i}"),
                "ext",
                &format!("{}/24", plan.client(i)),
                None,
            )?);
        }
        let mut pacs = Vec::new();
        for i in 0..2 {
            let (bridge, gw) = match plan.method {
                Method::Nat => ("int", Some(plan.appliance_internal())),
                _ => ("ext", None),
            };
            let host = lab.host(
                &format!("rs{i}"),
                bridge,
                &format!("{}/24", plan.server(i)),
                gw.as_deref(),
            )?;
            if plan.method == Method::Dr {
                // Solve the ARP problem: the VIPs on loopback, never answered for on eth0.
                for vip in plan.vips() {
                    host.exec(&["ip", "addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
                }
                for (k, v) in [("arp_ignore", "1"), ("arp_announce", "2")] {
                    for dev in ["all", "eth0"] {
                        host.exec(&[
                            "sysctl",
                            "-q",
                            "-w",
                            &format!("net.ipv4.conf.{dev}.{k}={v}"),
                        ])?;
                    }
                }
            }
            let dir = tmp.sub(&format!("pacs{i}"))?;
            let peers_log = tmp.path().join(format!("pacs{i}-peers.txt"));
            let mut procs = Vec::new();
            for port in [104u16, 11112] {
                let log = tmp.path().join(format!("pacs{i}-{port}.log"));
                procs.push(storescp_recording(&host, port, &dir, &peers_log, &log)?);
            }
            let udp = Process::spawn(
                &host,
                &[
                    "python3",
                    &peers_dir().join("udp_echo.py").display().to_string(),
                    "--port",
                    "7777",
                    "--label",
                    &format!("ECHO{}", i + 1),
                    "--lifetime",
                    "900",
                ],
                &tmp.path().join(format!("udp{i}.log")),
            )?;
            let hl7_log = tmp.sub(&format!("hl7-{i}"))?;
            let hl7 = if plan.hl7 {
                let log = tmp.path().join(format!("hl7-{i}.log"));
                Some(hl7_mllp_server(&host, &hl7_log, &log)?)
            } else {
                None
            };
            let bulk = if i == 0 {
                let port = BULK_PORT.to_string();
                let p = Process::spawn(
                    &host,
                    &[
                        "python3",
                        &peers_dir().join("bulk.py").display().to_string(),
                        "serve",
                        "--port",
                        &port,
                    ],
                    &tmp.path().join("bulk.log"),
                )?;
                crate::peers::wait_listening(&host, BULK_PORT, Duration::from_secs(10))?;
                Some(p)
            } else {
                None
            };
            pacs.push(Pacs {
                host,
                dir,
                peers_log,
                storescp: procs,
                _udp: udp,
                hl7,
                hl7_log,
                _bulk: bulk,
            });
        }
        let mut machine = crate::machine_with_config(tmp.path(), &plan.config_toml())?;
        machine
            .nics
            .push(Nic::virtio(Backend::Tap { ifname: ext_tap }));
        if let Some(t) = int_tap {
            // The internal arm has no offloads at all: the TCP super-frames
            // the client side hands over must be cut into segments and
            // checksummed by the appliance on their way to the servers.
            machine
                .nics
                .push(Nic::virtio_without_offloads(Backend::Tap { ifname: t }));
        }
        let vm = Appliance::boot(&machine, Some(&lab))?;
        vm.wait_ready(Duration::from_secs(90))?;
        Ok(Scenario {
            pacs,
            clients,
            vm,
            plan,
            tmp,
            lab,
        })
    }

    /// Waits (bounded) until an association through `vip:port` succeeds, i.e.
    /// the health checks have brought the real servers up.
    pub fn wait_service(&self, vip: &str, port: u16) -> Result<()> {
        for _ in 0..60 {
            if crate::peers::echoscu(&self.clients[0], vip, port)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        bail!(
            "no association through {vip}:{port}; console:\n{}",
            self.vm.console()
        )
    }

    /// Which PACS (index) stored each data set, with how often.
    pub fn arrivals(&self) -> Result<Vec<HashMap<Vec<u8>, usize>>> {
        self.pacs.iter().map(|p| received(&[&p.dir])).collect()
    }

    /// Peer addresses storescp recorded for stored files, per PACS.
    pub fn peer_addresses(&self) -> Result<Vec<Vec<String>>> {
        self.pacs
            .iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p.peers_log).unwrap_or_default();
                Ok(text
                    .lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .map(str::to_string)
                    .collect())
            })
            .collect()
    }

    /// Writes `count` studies for client `c` under the scratch folder.
    pub fn studies_for(
        &self,
        c: usize,
        count: u32,
        seed: u64,
    ) -> Result<(Vec<Study>, Vec<PathBuf>)> {
        let s = studies(count, 5, seed);
        let files = write_studies(&self.tmp.path().join(format!("client{c}-{seed}")), &s)?;
        Ok((s, files))
    }

    pub fn peers_script(name: &str) -> String {
        peers_dir().join(name).display().to_string()
    }

    pub fn context(&self) -> String {
        format!("console:\n{}", self.vm.console())
    }

    /// Runs `status` on the console and returns NIC `i`'s counters line
    /// (`nic ethI rx=... rx-super=... ...`) as name/value pairs.
    pub fn nic_counters(&mut self, i: usize) -> Result<HashMap<String, u64>> {
        self.vm.send_line("status")?;
        let prefix = format!("nic eth{i} ");
        let line =
            self.vm
                .wait_for("the NIC counters in status", Duration::from_secs(10), |l| {
                    l.starts_with(&prefix)
                })?;
        Ok(line
            .split_whitespace()
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect())
    }
}

/// Moves `bytes` through `vip` from `client` to the bulk server (or from
/// it, `reverse`) with `peers/bulk.py`, which checks count and SHA-256 end
/// to end.
pub fn bulk_transfer(client: &Host, vip: &str, bytes: u64, reverse: bool) -> Result<()> {
    let port = BULK_PORT.to_string();
    let n = bytes.to_string();
    let script = peers_dir().join("bulk.py").display().to_string();
    let mut argv = vec!["timeout", "180", "python3", &script, "send", vip, &port, &n];
    if reverse {
        argv.push("--reverse");
    }
    let out = client.command(&argv).output()?;
    if !out.status.success() {
        bail!(
            "bulk transfer of {bytes} bytes (reverse {reverse}) failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Checks storescu's exit; the output goes into the error.
pub fn check_sent(out: std::process::Output, what: &str) -> Result<()> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The index of the PACS that holds `study`, requiring exactly one copy overall.
pub fn holder(arrivals: &[HashMap<Vec<u8>, usize>], study: &Study) -> Result<usize> {
    let copies: Vec<(usize, usize)> = arrivals
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.get(&study.dataset).map(|n| (i, *n)))
        .collect();
    match copies.as_slice() {
        [(i, 1)] => Ok(*i),
        [] => bail!(
            "study {} never arrived byte-identical",
            study.sop_instance_uid
        ),
        other => bail!(
            "study {} arrived more than once: {other:?}",
            study.sop_instance_uid
        ),
    }
}

/// The one PACS that holds every study of `studies`, each exactly once and
/// byte-identical (persistence kept the client on one server).
pub fn single_holder(arrivals: &[HashMap<Vec<u8>, usize>], studies: &[Study]) -> Result<usize> {
    let holders = studies
        .iter()
        .map(|st| holder(arrivals, st))
        .collect::<Result<Vec<usize>>>()?;
    match holders.first() {
        Some(&h) if holders.iter().all(|&x| x == h) => Ok(h),
        Some(_) => bail!("the studies went to more than one PACS: {holders:?}"),
        None => bail!("no studies"),
    }
}
