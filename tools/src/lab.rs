//! A test lab made of network namespaces: one "lab" namespace holding the
//! bridges and the appliance's taps (QEMU runs inside it), and one namespace
//! per client or real server, wired to a bridge by a veth pair.

use anyhow::{Context, Result, bail};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command and fails with its output when it fails.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("starting {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn ip(args: &[&str]) -> Result<Output> {
    run(Command::new("ip").args(args))
}

/// The lab namespace; dropping it removes every namespace it made.
pub struct Lab {
    /// Prefix unique to this process and lab, e.g. `lbt01234a3`.
    prefix: String,
    ns: String,
    hosts: Vec<String>,
    taps: u32,
}

/// A namespace standing for one client or server machine.
pub struct Host {
    pub ns: String,
    /// The host's address on its bridge, without the prefix length.
    pub addr: String,
}

impl Lab {
    pub fn new() -> Result<Lab> {
        crate::setup::require_root()?;
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("lbt{:05}x{n}", std::process::id() % 100_000);
        let ns = format!("{prefix}-lab");
        ip(&["netns", "add", &ns])?;
        let lab = Lab {
            prefix,
            ns,
            hosts: Vec::new(),
            taps: 0,
        };
        lab.exec(&["ip", "link", "set", "lo", "up"])?;
        // Bridges here are plain layer-2 segments: where the host loaded
        // br_netfilter, bridged IPv4 would go through netfilter, which drops
        // frames with bad IP headers (the tests send such frames on purpose)
        // before they reach the appliance. The switch is per namespace and
        // absent without the module.
        let _ = lab.exec(&[
            "sysctl",
            "-q",
            "-w",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ]);
        Ok(lab)
    }

    /// The lab namespace's name (QEMU runs inside it).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// Runs a command inside the lab namespace.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(argv))
    }

    /// Makes a bridge (an L2 segment) inside the lab, if not there yet.
    pub fn bridge(&self, name: &str) -> Result<()> {
        let exists = self.exec(&["ip", "link", "show", name]).is_ok();
        if !exists {
            self.exec(&["ip", "link", "add", name, "type", "bridge"])?;
            // No STP forwarding delay: the segment is usable at once.
            self.exec(&[
                "ip",
                "link",
                "set",
                name,
                "type",
                "bridge",
                "forward_delay",
                "0",
            ])?;
            self.exec(&["ip", "link", "set", name, "up"])?;
        }
        Ok(())
    }

    /// Makes a tap on `bridge` for the appliance and returns its name.
    pub fn tap(&mut self, bridge: &str) -> Result<String> {
        self.bridge(bridge)?;
        let name = format!("tap{}", self.taps);
        self.taps += 1;
        self.exec(&["ip", "tuntap", "add", "dev", &name, "mode", "tap"])?;
        self.exec(&["ip", "link", "set", &name, "master", bridge, "up"])?;
        Ok(name)
    }

    /// Makes a host namespace wired to `bridge` with address `cidr` on its
    /// `eth0`, and a default route via `gateway` if given.
    pub fn host(
        &mut self,
        name: &str,
        bridge: &str,
        cidr: &str,
        gateway: Option<&str>,
    ) -> Result<Host> {
        self.bridge(bridge)?;
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.hosts.push(ns.clone());
        let port = format!("v{}", self.hosts.len());
        // Made inside the lab namespace directly: no name in the host's namespace.
        self.exec(&[
            "ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ])?;
        self.exec(&["ip", "link", "set", &port, "master", bridge, "up"])?;
        let host = Host {
            ns,
            addr: cidr.split('/').next().unwrap_or(cidr).to_string(),
        };
        host.exec(&["ip", "link", "set", "lo", "up"])?;
        host.exec(&["ip", "addr", "add", cidr, "dev", "eth0"])?;
        host.exec(&["ip", "link", "set", "eth0", "up"])?;
        if let Some(gw) = gateway {
            host.exec(&["ip", "route", "add", "default", "via", gw])?;
        }
        Ok(host)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.ns)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Host {
    /// Runs a command inside this host's namespace; fails if it fails.
    pub fn exec(&self, argv: &[&str]) -> Result<Output> {
        run(&mut self.command(argv))
    }

    /// A command that will run inside this host's namespace.
    pub fn command(&self, argv: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns]).args(argv);
        c
    }

    /// Pings `target` `count` times at `interval_s` and returns the loss in percent.
    pub fn ping_loss(&self, target: &str, count: u32, interval_s: &str) -> Result<f64> {
        let count = count.to_string();
        let out = self
            .command(&[
                "ping", "-n", "-q", "-c", &count, "-i", interval_s, "-W", "2", target,
            ])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        parse_loss(&text).with_context(|| format!("no loss figure in ping output: {text}"))
    }
}

/// Extracts `N% packet loss` from ping's summary.
pub fn parse_loss(text: &str) -> Option<f64> {
    let at = text.find("% packet loss")?;
    let start = text[..at].rfind(' ')? + 1;
    text[start..at].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_loss;

    #[test]
    fn ping_summary_loss() {
        let s = "100 packets transmitted, 97 received, 3% packet loss, time 99ms";
        assert_eq!(parse_loss(s), Some(3.0));
        assert_eq!(parse_loss("garbage"), None);
    }
}
