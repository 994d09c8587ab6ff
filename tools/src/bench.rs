//! Boot benchmark: the appliance against a stock Debian kernel, booted the
//! same way (same QEMU machine, NIC model, accelerator and memory), in one run.

use crate::console::Appliance;
use crate::debian::{self, DebianGuest};
use crate::lab::{Host, Lab};
use crate::qemu::{Accel, Backend, Boot, Machine, Nic};
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which guest is booted.
pub enum Guest {
    Appliance { elf: PathBuf },
    Debian(DebianGuest),
}

impl Guest {
    fn name(&self) -> &'static str {
        match self {
            Guest::Appliance { .. } => "appliance",
            Guest::Debian(_) => "debian",
        }
    }

    fn boot(&self, addr: &str) -> Boot {
        match self {
            Guest::Appliance { elf } => Boot::Kernel {
                elf: elf.clone(),
                cmdline: format!("ip={addr}/24"),
                module: None,
            },
            Guest::Debian(d) => Boot::Kernel {
                elf: d.vmlinuz.clone(),
                cmdline: format!("console=ttyS0 quiet panic=-1 bench_ip={addr}/24"),
                module: Some(d.initramfs.clone()),
            },
        }
    }

    /// Milliseconds from kernel entry to `ready`, from the guest's own clock.
    fn ready_ms(&self, line: &str) -> Option<f64> {
        match self {
            Guest::Appliance { .. } => crate::console::parse_ready_ms(line),
            Guest::Debian(_) => {
                let inner = line.split_once('[')?.1.split_once(']')?.0;
                inner.trim().parse::<f64>().ok().map(|s| s * 1000.0)
            }
        }
    }

    fn is_ready_line(&self, line: &str) -> bool {
        match self {
            Guest::Appliance { .. } => line.starts_with("ready"),
            Guest::Debian(_) => line.trim_end().ends_with("] ready"),
        }
    }

    /// Bytes of everything the guest boots from.
    pub fn image_bytes(&self) -> Result<u64> {
        Ok(match self {
            Guest::Appliance { elf } => std::fs::metadata(elf)?.len(),
            Guest::Debian(d) => {
                std::fs::metadata(&d.vmlinuz)?.len() + std::fs::metadata(&d.initramfs)?.len()
            }
        })
    }
}

/// One boot's figures.
pub struct BootFigures {
    pub ready_ms: f64,
    pub first_ping_ms: f64,
}

/// A lab with one client and one tap, reused across boots.
pub struct Bench {
    lab: Lab,
    tap: String,
    client: Host,
}

const GUEST_ADDR: &str = "10.209.0.2";

impl Bench {
    pub fn new() -> Result<Bench> {
        let mut lab = Lab::new()?;
        let tap = lab.tap("br0")?;
        let client = lab.host("client", "br0", "10.209.0.1/24", None)?;
        // Re-ask ARP every 10 ms, so the first reply is not held back by the
        // default 1 s retransmit time while the guest is still booting.
        client.exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.neigh.eth0.retrans_time_ms=10",
        ])?;
        client.exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.neigh.eth0.mcast_solicit=100",
        ])?;
        Ok(Bench { lab, tap, client })
    }

    /// Boots `guest` once; the time to the first ping reply is measured from
    /// just before QEMU starts, by a pinger already running in the client.
    pub fn boot_once(
        &self,
        guest: &Guest,
        accel: Accel,
        memory_mib: u32,
        timeout: Duration,
    ) -> Result<BootFigures> {
        let _ = self.client.exec(&["ip", "neigh", "flush", "dev", "eth0"]);
        let deadline = timeout.as_secs().max(1).to_string();
        let mut pinger = self
            .client
            .command(&["python3", "-c", PINGER, GUEST_ADDR, &deadline])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the pinger")?;
        // The pinger prints `start` once its socket is open.
        let mut lines = BufReader::new(pinger.stdout.take().context("pinger stdout")?).lines();
        let _ = lines.next();
        let mut machine = Machine::new(guest.boot(GUEST_ADDR));
        machine.accel = accel;
        machine.memory_mib = memory_mib;
        machine.nics.push(Nic::virtio(Backend::Tap {
            ifname: self.tap.clone(),
        }));
        let t0 = epoch_secs();
        let vm = Appliance::boot(&machine, Some(&self.lab))?;
        let first_reply = lines
            .next()
            .and_then(|l| l.ok())
            .and_then(|l| l.trim().parse::<f64>().ok());
        let _ = pinger.kill();
        let _ = pinger.wait();
        let first_reply = match first_reply {
            Some(t) => t,
            None => bail!(
                "{} did not answer ping within {timeout:?}; console:\n{}",
                guest.name(),
                vm.console()
            ),
        };
        let line = vm.wait_for("ready", Duration::from_secs(5), |l| guest.is_ready_line(l))?;
        let ready_ms = guest
            .ready_ms(&line)
            .with_context(|| format!("no time in {line:?}"))?;
        Ok(BootFigures {
            ready_ms,
            first_ping_ms: (first_reply - t0) * 1000.0,
        })
    }
}

fn epoch_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Sends an ICMP echo request every 2 ms (bounded by a deadline in
/// seconds) and prints the wall-clock time of the first reply. iputils ping
/// backs off while ARP fails, which would hide when the guest came up.
const PINGER: &str = r#"
import socket, struct, sys, time
addr, deadline = sys.argv[1], time.time() + float(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
s.setblocking(False)
def csum(b):
    t = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    t = (t >> 16) + (t & 0xffff); t += t >> 16
    return ~t & 0xffff
ident, seq = 0x4c42, 0
print("start", flush=True)
while time.time() < deadline:
    seq = (seq + 1) & 0xffff
    body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"appliance-bench!"
    pkt = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    try: s.sendto(pkt, (addr, 0))
    except OSError: pass
    until = time.time() + 0.002
    while time.time() < until:
        try: data = s.recv(2048)
        except BlockingIOError: time.sleep(0.0002); continue
        ihl = (data[0] & 15) * 4
        if data[ihl] == 0 and struct.unpack("!H", data[ihl+4:ihl+6])[0] == ident:
            print("%.6f" % time.time(), flush=True); sys.exit(0)
sys.exit(1)
"#;

/// min, median, max
pub fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (v[0], median, v[n - 1])
}

/// Prepares the Debian guest under `target/bench/debian`.
pub fn debian_guest() -> Result<Guest> {
    let dir = crate::workspace::root()
        .join("target")
        .join("bench")
        .join("debian");
    Ok(Guest::Debian(debian::prepare(&dir)?))
}
