//! The console's network set-up wizard, as a state machine: it asks one
//! question at a time ([`Wizard::prompt`]), each with the current value as
//! the default in brackets, and validates each answer as it is given
//! ([`Wizard::answer`]): a bad value is explained and the same question
//! asked again, never taken. In order: interface, DHCP, address with
//! prefix, default gateway (eth0 only), DNS servers, hostname, console
//! password (twice), a management admin key to add (the first key that may
//! sign uploads, pasted from `tools keygen`'s `.pub` file), and "apply and
//! save?".
//!
//! The result is a [`Settings`] the caller applies to the running
//! appliance and writes into its configuration ([`Settings::apply_to`]).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use crate::cmdline::{self, Ipv4Setting, Reason, is_host_address, mask};
use crate::config::{Config, Interface, MAX_ADMIN_KEYS, MAX_DNS, Network};
use crate::mgmt::keys::PublicKey;

/// Shortest console password accepted.
pub const PASSWORD_MIN: usize = 8;

/// A question to show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prompt {
    pub text: String,
    /// Do not echo what is typed.
    pub secret: bool,
}

/// What became of an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Taken: ask [`Wizard::prompt`] next.
    Next,
    /// Not taken, with the reason: show it and ask [`Wizard::prompt`].
    Rejected(String),
    /// "apply and save?" was answered yes.
    Finished(Settings),
    /// "apply and save?" was answered no: nothing changes.
    Cancelled,
}

/// A password decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordChange {
    Keep,
    Remove,
    /// The new password, to be hashed by the caller.
    Set(String),
}

/// The answers, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Index of the interface (eth0 = 0).
    pub interface: usize,
    /// The interface's addressing; for eth0 its gateway is the appliance's
    /// default gateway.
    pub addressing: Ipv4Setting,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: String,
    pub password: PasswordChange,
    /// A management admin key to add (`ed25519:` and 64 hex digits, as
    /// `tools keygen` writes it): the first key that may sign uploads.
    pub admin_key: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Interface,
    Dhcp,
    Address,
    Gateway,
    Dns,
    Hostname,
    Password,
    PasswordAgain,
    AdminKey,
    Confirm,
    Done,
}

/// The wizard in progress.
#[derive(Clone, Debug)]
pub struct Wizard {
    step: Step,
    nics: Vec<String>,
    /// Each NIC's running setting (the current values).
    running: Vec<Option<Ipv4Setting>>,
    network: Network,
    iface: usize,
    dhcp: bool,
    address: Option<(Ipv4Addr, u8)>,
    gateway: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
    hostname: String,
    password: PasswordChange,
    /// Admin keys the configuration holds.
    admin_keys: Vec<String>,
    admin_key: Option<String>,
}

fn yes_no(answer: &str) -> Option<bool> {
    match answer.to_ascii_lowercase().as_str() {
        "y" | "yes" => Some(true),
        "n" | "no" => Some(false),
        _ => None,
    }
}

/// What is wrong with an address typed at the console.
fn cidr_reason(value: &str, r: Reason) -> String {
    let why = match r {
        Reason::Empty => "no value given",
        Reason::MissingPrefix => "give the prefix length too, e.g. 10.12.1.21/24",
        Reason::NotAnAddress => "not an IPv4 address (expected A.B.C.D, each 0-255)",
        Reason::BadPrefix => "the prefix length must be a number from 1 to 32",
        Reason::NotAHostAddress => {
            "not usable as a host address (network, broadcast, loopback, multicast or 0.0.0.0)"
        }
        Reason::GatewayOutsideSubnet | Reason::GatewayWithoutStaticIp => "not usable here",
    };
    format!("{value}: {why}")
}

fn list(addrs: &[Ipv4Addr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether `h` is a valid hostname (the config's rule).
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !h.starts_with('-')
        && !h.ends_with('-')
}

impl Wizard {
    /// A wizard over the NICs present (`nics`, e.g. `["eth0", "eth1"]`),
    /// their running settings, and the configuration in force (for the
    /// DNS servers, hostname and whether a password is set).
    pub fn new(nics: Vec<String>, running: Vec<Option<Ipv4Setting>>, config: &Config) -> Wizard {
        let network = config.network.clone();
        let mut w = Wizard {
            step: Step::Interface,
            nics,
            running,
            iface: 0,
            dhcp: false,
            address: None,
            gateway: None,
            dns: network.dns.clone(),
            hostname: network.hostname.clone(),
            password: PasswordChange::Keep,
            network,
            admin_keys: config.management.admin_keys.clone(),
            admin_key: None,
        };
        w.load_interface(0);
        w
    }

    /// Takes the current values of interface `i` as defaults.
    fn load_interface(&mut self, i: usize) {
        self.iface = i;
        let running = self.running.get(i).copied().flatten();
        let configured = self.network.interfaces.get(i);
        self.dhcp = match running {
            Some(Ipv4Setting::Dhcp) => true,
            Some(Ipv4Setting::Static { .. }) => false,
            None => configured.is_some_and(|c| c.dhcp),
        };
        self.address = match running {
            Some(Ipv4Setting::Static {
                address,
                prefix_len,
                ..
            }) => Some((address, prefix_len)),
            _ => configured.and_then(|c| Some((c.address?, c.prefix?))),
        };
        self.gateway = match running {
            Some(Ipv4Setting::Static { gateway, .. }) if i == 0 => gateway,
            _ if i == 0 => self.network.gateway,
            _ => None,
        };
    }

    fn has_password(&self) -> bool {
        self.network.management_password_hash.is_some()
    }

    /// The question to ask now (`None` once finished or cancelled).
    pub fn prompt(&self) -> Option<Prompt> {
        let plain = |text: String| {
            Some(Prompt {
                text,
                secret: false,
            })
        };
        match self.step {
            Step::Interface => plain(format!(
                "interface ({}) [{}]: ",
                self.nics.join(", "),
                self.nics.get(self.iface).map_or("eth0", String::as_str)
            )),
            Step::Dhcp => plain(format!(
                "DHCP (y/n) [{}]: ",
                if self.dhcp { "y" } else { "n" }
            )),
            Step::Address => plain(match self.address {
                Some((a, p)) => format!("address with prefix [{a}/{p}]: "),
                None => String::from("address with prefix, e.g. 10.12.1.21/24: "),
            }),
            Step::Gateway => plain(match self.gateway {
                Some(g) => format!("default gateway ('none' for none) [{g}]: "),
                None => String::from("default gateway (Enter for none): "),
            }),
            Step::Dns => plain(if !self.dns.is_empty() {
                format!("DNS servers, separated by commas [{}]: ", list(&self.dns))
            } else if self.dhcp {
                String::from("DNS servers, separated by commas (Enter: from DHCP): ")
            } else {
                String::from("DNS servers, separated by commas: ")
            }),
            Step::Hostname => plain(format!("hostname [{}]: ", self.hostname)),
            Step::Password => Some(Prompt {
                text: String::from(if self.has_password() {
                    "console password (Enter keeps the current one, '-' removes it): "
                } else {
                    "console password (Enter for none): "
                }),
                secret: true,
            }),
            Step::PasswordAgain => Some(Prompt {
                text: String::from("console password again: "),
                secret: true,
            }),
            Step::AdminKey => plain(match self.admin_keys.len() {
                0 => String::from(
                    "management admin key (paste the line of tools keygen's .pub file; Enter for none): ",
                ),
                n => format!("management admin key to add (Enter keeps the {n} there are): "),
            }),
            Step::Confirm => plain(String::from("apply and save? (y/n): ")),
            Step::Done => None,
        }
    }

    /// What the settings will be, shown before "apply and save?".
    pub fn summary(&self) -> Vec<String> {
        let name = self.nics.get(self.iface).cloned().unwrap_or_default();
        let mut v = Vec::new();
        match (self.dhcp, self.address) {
            (true, _) => v.push(format!("  {name}: DHCP")),
            (false, Some((a, p))) => v.push(format!("  {name}: {a}/{p}")),
            (false, None) => {}
        }
        if self.iface == 0 && !self.dhcp {
            v.push(match self.gateway {
                Some(g) => format!("  default gateway: {g}"),
                None => String::from("  default gateway: none"),
            });
        }
        v.push(if self.dns.is_empty() {
            String::from("  DNS servers: from DHCP")
        } else {
            format!("  DNS servers: {}", list(&self.dns))
        });
        v.push(format!("  hostname: {}", self.hostname));
        v.push(String::from(match (&self.password, self.has_password()) {
            (PasswordChange::Set(_), _) => "  console password: new",
            (PasswordChange::Remove, _) | (PasswordChange::Keep, false) => {
                "  console password: none"
            }
            (PasswordChange::Keep, true) => "  console password: unchanged",
        }));
        let keys = self.admin_keys.len() + usize::from(self.admin_key.is_some());
        v.push(match &self.admin_key {
            Some(k) => format!(
                "  management admin keys: {keys} (new: {})",
                k.get(..16).unwrap_or(k)
            ),
            None => format!("  management admin keys: {keys}"),
        });
        v
    }

    /// Whether the question now is "apply and save?" (show the
    /// [`summary`](Self::summary) before it).
    pub fn confirming(&self) -> bool {
        self.step == Step::Confirm
    }

    /// Whether the wizard has ended (finished or cancelled).
    pub fn is_done(&self) -> bool {
        self.step == Step::Done
    }

    /// Takes the answer to the current question.
    pub fn answer(&mut self, input: &str) -> Answer {
        let secret = matches!(self.step, Step::Password | Step::PasswordAgain);
        let a = if secret { input } else { input.trim() };
        let result = match self.step {
            Step::Interface => self.on_interface(a),
            Step::Dhcp => self.on_dhcp(a),
            Step::Address => self.on_address(a),
            Step::Gateway => self.on_gateway(a),
            Step::Dns => self.on_dns(a),
            Step::Hostname => self.on_hostname(a),
            Step::Password => self.on_password(a),
            Step::PasswordAgain => self.on_password_again(a),
            Step::AdminKey => self.on_admin_key(a),
            Step::Confirm => return self.on_confirm(a),
            Step::Done => return Answer::Cancelled,
        };
        match result {
            Ok(next) => {
                self.step = next;
                Answer::Next
            }
            Err(why) => Answer::Rejected(why),
        }
    }

    fn on_interface(&mut self, a: &str) -> Result<Step, String> {
        let i = if a.is_empty() {
            self.iface
        } else {
            self.nics.iter().position(|n| n == a).ok_or_else(|| {
                format!(
                    "{a}: no such interface (this appliance has {})",
                    self.nics.join(", ")
                )
            })?
        };
        if i > self.network.interfaces.len() {
            return Err(format!(
                "{}: set up {} first (interfaces are configured in order)",
                self.nics[i],
                self.nics[self.network.interfaces.len()]
            ));
        }
        if i != self.iface {
            self.load_interface(i);
        }
        Ok(Step::Dhcp)
    }

    fn on_dhcp(&mut self, a: &str) -> Result<Step, String> {
        self.dhcp = if a.is_empty() {
            self.dhcp
        } else {
            yes_no(a).ok_or_else(|| format!("{a}: answer y or n"))?
        };
        Ok(if self.dhcp { Step::Dns } else { Step::Address })
    }

    fn on_address(&mut self, a: &str) -> Result<Step, String> {
        let (address, prefix) = match (a.is_empty(), self.address) {
            (true, Some(cur)) => cur,
            (true, None) => return Err(String::from("an address is needed, e.g. 10.12.1.21/24")),
            (false, _) => cmdline::parse_cidr(a).map_err(|r| cidr_reason(a, r))?,
        };
        self.address = Some((address, prefix));
        // A gateway outside the new subnet is no longer a sensible default.
        if self
            .gateway
            .is_some_and(|g| !in_subnet((address, prefix), g))
        {
            self.gateway = None;
        }
        Ok(if self.iface == 0 {
            Step::Gateway
        } else {
            Step::Dns
        })
    }

    fn on_gateway(&mut self, a: &str) -> Result<Step, String> {
        let Some(net) = self.address else {
            return Ok(Step::Dns);
        };
        if a.is_empty() {
            return Ok(Step::Dns);
        }
        if a.eq_ignore_ascii_case("none") {
            self.gateway = None;
            return Ok(Step::Dns);
        }
        let g: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("{a}: not an IPv4 address (expected A.B.C.D, each 0-255)"))?;
        if !in_subnet(net, g) {
            return Err(format!(
                "{a}: the gateway must be inside {}/{} (the interface's subnet)",
                Ipv4Addr::from(u32::from(net.0) & mask(net.1)),
                net.1
            ));
        }
        if g == net.0 {
            return Err(format!("{a}: that is the appliance's own address"));
        }
        if !is_host_address(g, net.1) {
            return Err(format!("{a}: not usable as a host address on that subnet"));
        }
        self.gateway = Some(g);
        Ok(Step::Dns)
    }

    fn on_dns(&mut self, a: &str) -> Result<Step, String> {
        if a.is_empty() {
            if self.dns.is_empty() && !self.dhcp {
                return Err(String::from(
                    "at least one DNS server is needed (A.B.C.D, several separated by commas)",
                ));
            }
            return Ok(Step::Hostname);
        }
        let mut dns = Vec::new();
        for part in a.split([',', ' ']).filter(|p| !p.is_empty()) {
            let d: Ipv4Addr = part.parse().map_err(|_| {
                format!("{part}: not an IPv4 address (expected A.B.C.D, each 0-255)")
            })?;
            if d.is_unspecified() || d.is_broadcast() || d.is_multicast() || d.is_loopback() {
                return Err(format!("{part}: not usable as a DNS server"));
            }
            if !dns.contains(&d) {
                dns.push(d);
            }
        }
        if dns.len() > MAX_DNS {
            return Err(format!("at most {MAX_DNS} DNS servers"));
        }
        self.dns = dns;
        Ok(Step::Hostname)
    }

    fn on_hostname(&mut self, a: &str) -> Result<Step, String> {
        if !a.is_empty() {
            if !valid_hostname(a) {
                return Err(format!(
                    "{a}: a hostname is 1 to 63 letters, digits or '-', not starting or ending with '-'"
                ));
            }
            self.hostname = String::from(a);
        }
        Ok(Step::Password)
    }

    fn on_password(&mut self, a: &str) -> Result<Step, String> {
        if a.is_empty() {
            self.password = PasswordChange::Keep;
            return Ok(Step::AdminKey);
        }
        if a == "-" {
            self.password = PasswordChange::Remove;
            return Ok(Step::AdminKey);
        }
        if a.len() < PASSWORD_MIN {
            return Err(format!(
                "a console password has at least {PASSWORD_MIN} characters"
            ));
        }
        self.password = PasswordChange::Set(String::from(a));
        Ok(Step::PasswordAgain)
    }

    fn on_password_again(&mut self, a: &str) -> Result<Step, String> {
        match &self.password {
            PasswordChange::Set(p) if p == a => Ok(Step::AdminKey),
            _ => {
                self.password = PasswordChange::Keep;
                self.step = Step::Password;
                Err(String::from("the two passwords differ; again"))
            }
        }
    }

    fn on_admin_key(&mut self, a: &str) -> Result<Step, String> {
        if a.is_empty() {
            self.admin_key = None;
            return Ok(Step::Confirm);
        }
        let short = match a.get(..24) {
            Some(s) if a.len() > 24 => format!("{s}..."),
            _ => String::from(a),
        };
        PublicKey::parse(a).map_err(|e| format!("{short}: {e}"))?;
        if self.admin_keys.iter().any(|k| k.trim() == a) {
            return Err(format!("{short}: that key is already there"));
        }
        if self.admin_keys.len() >= MAX_ADMIN_KEYS {
            return Err(format!(
                "at most {MAX_ADMIN_KEYS} admin keys; remove one with a signed upload first"
            ));
        }
        self.admin_key = Some(String::from(a));
        Ok(Step::Confirm)
    }

    fn on_confirm(&mut self, a: &str) -> Answer {
        match yes_no(a) {
            Some(true) => {
                self.step = Step::Done;
                Answer::Finished(self.settings())
            }
            Some(false) => {
                self.step = Step::Done;
                Answer::Cancelled
            }
            None => Answer::Rejected(format!("{a}: answer y or n")),
        }
    }

    fn settings(&self) -> Settings {
        let addressing = match (self.dhcp, self.address) {
            (false, Some((address, prefix_len))) => Ipv4Setting::Static {
                address,
                prefix_len,
                gateway: if self.iface == 0 { self.gateway } else { None },
            },
            _ => Ipv4Setting::Dhcp,
        };
        Settings {
            interface: self.iface,
            addressing,
            dns: self.dns.clone(),
            hostname: self.hostname.clone(),
            password: self.password.clone(),
            admin_key: self.admin_key.clone(),
        }
    }
}

fn in_subnet(net: (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    let m = mask(net.1);
    u32::from(net.0) & m == u32::from(ip) & m
}

impl Settings {
    /// Writes the settings into `config`'s network part. `password_hash`
    /// is the hash of a new password ([`PasswordChange::Set`]), made by
    /// the caller.
    pub fn apply_to(&self, config: &mut Config, password_hash: Option<String>) {
        let net = &mut config.network;
        while net.interfaces.len() <= self.interface {
            let n = net.interfaces.len();
            net.interfaces.push(Interface {
                name: format!("eth{n}"),
                dhcp: true,
                address: None,
                prefix: None,
                role: Default::default(),
            });
        }
        let itf = &mut net.interfaces[self.interface];
        match self.addressing {
            Ipv4Setting::Dhcp => {
                itf.dhcp = true;
                itf.address = None;
                itf.prefix = None;
            }
            Ipv4Setting::Static {
                address,
                prefix_len,
                gateway,
            } => {
                itf.dhcp = false;
                itf.address = Some(address);
                itf.prefix = Some(prefix_len);
                if self.interface == 0 {
                    net.gateway = gateway;
                }
            }
        }
        if self.interface == 0 && self.addressing == Ipv4Setting::Dhcp {
            net.gateway = None;
        }
        net.dns = self.dns.clone();
        net.hostname = self.hostname.clone();
        match &self.password {
            PasswordChange::Keep => {}
            PasswordChange::Remove => net.management_password_hash = None,
            PasswordChange::Set(_) => net.management_password_hash = password_hash,
        }
        if let Some(k) = &self.admin_key
            && !config.management.admin_keys.contains(k)
        {
            config.management.admin_keys.push(k.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::validate;
    use alloc::vec;

    fn factory() -> Config {
        crate::config::from_toml(include_str!("../configs/default.toml")).unwrap()
    }

    fn nics() -> Vec<String> {
        vec!["eth0".into(), "eth1".into()]
    }

    fn running(c: &Config) -> Vec<Option<Ipv4Setting>> {
        let eth0 = &c.network.interfaces[0];
        vec![
            Some(Ipv4Setting::Static {
                address: eth0.address.unwrap(),
                prefix_len: eth0.prefix.unwrap(),
                gateway: c.network.gateway,
            }),
            None,
        ]
    }

    /// Answers in turn; returns the rejections and the end.
    fn run(w: &mut Wizard, answers: &[&str]) -> (Vec<String>, Option<Answer>) {
        let mut rejected = Vec::new();
        for a in answers {
            match w.answer(a) {
                Answer::Next => {}
                Answer::Rejected(why) => rejected.push(why),
                end => return (rejected, Some(end)),
            }
        }
        (rejected, None)
    }

    #[test]
    fn defaults_are_the_current_values() {
        let c = factory();
        let w = Wizard::new(nics(), running(&c), &c);
        assert_eq!(w.prompt().unwrap().text, "interface (eth0, eth1) [eth0]: ");
        let mut w2 = w.clone();
        w2.answer("");
        assert_eq!(w2.prompt().unwrap().text, "DHCP (y/n) [n]: ");
        w2.answer("");
        assert_eq!(
            w2.prompt().unwrap().text,
            "address with prefix [192.168.2.21/24]: "
        );
    }

    #[test]
    fn the_issue_walkthrough_with_bad_answers() {
        let c = factory();
        let mut w = Wizard::new(nics(), running(&c), &c);
        let (rejected, end) = run(
            &mut w,
            &[
                "eth0",
                "n",
                "999.1.1.1/40",
                "10.77.0.9",
                "10.77.0.9/24",
                "10.78.0.1",
                "10.77.0.1",
                "",
                "10.77.0.2, 10.77.0.3",
                "lbmed1",
                "",
                "",
                "y",
            ],
        );
        assert_eq!(rejected.len(), 4, "{rejected:?}");
        assert!(
            rejected[0].starts_with("999.1.1.1/40: not an IPv4 address"),
            "{rejected:?}"
        );
        assert!(rejected[1].contains("prefix length"), "{rejected:?}");
        assert!(rejected[2].contains("inside 10.77.0.0/24"), "{rejected:?}");
        assert!(
            rejected[3].contains("at least one DNS server"),
            "{rejected:?}"
        );
        let Some(Answer::Finished(s)) = end else {
            panic!("{end:?}")
        };
        assert_eq!(
            s.addressing,
            Ipv4Setting::Static {
                address: Ipv4Addr::new(10, 77, 0, 9),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 77, 0, 1)),
            }
        );
        assert_eq!(
            s.dns,
            [Ipv4Addr::new(10, 77, 0, 2), Ipv4Addr::new(10, 77, 0, 3)]
        );
        let mut cfg = c.clone();
        s.apply_to(&mut cfg, None);
        validate(&cfg).unwrap();
        assert_eq!(cfg.network.hostname, "lbmed1");
        assert_eq!(cfg.network.gateway, Some(Ipv4Addr::new(10, 77, 0, 1)));
        assert_eq!(
            cfg.network.interfaces[0].address,
            Some(Ipv4Addr::new(10, 77, 0, 9))
        );
    }

    #[test]
    fn every_question_rejects_nonsense() {
        let c = factory();
        let mut w = Wizard::new(nics(), running(&c), &c);
        assert!(matches!(w.answer("eth7"), Answer::Rejected(_)));
        assert!(matches!(w.answer("eth0"), Answer::Next));
        assert!(matches!(w.answer("maybe"), Answer::Rejected(_)));
        assert!(matches!(w.answer("n"), Answer::Next));
        for bad in [
            "10.0.0.0/24",
            "10.0.0.255/24",
            "127.0.0.1/8",
            "1.2.3.4/0",
            "1.2.3.4/+24",
            "a/b",
        ] {
            assert!(matches!(w.answer(bad), Answer::Rejected(_)), "{bad}");
        }
        assert!(matches!(w.answer("10.0.0.5/24"), Answer::Next));
        for bad in ["10.0.0.5", "10.0.0.255", "10.0.1.1", "x"] {
            assert!(matches!(w.answer(bad), Answer::Rejected(_)), "{bad}");
        }
        assert!(matches!(w.answer("none"), Answer::Next));
        for bad in [
            "1.2.3",
            "224.0.0.1",
            "127.0.0.1",
            "1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4,5.5.5.5",
        ] {
            assert!(matches!(w.answer(bad), Answer::Rejected(_)), "{bad}");
        }
        assert!(matches!(w.answer("10.0.0.53"), Answer::Next));
        for bad in ["-lb", "lb_1", "a.b", &"x".repeat(64)] {
            assert!(matches!(w.answer(bad), Answer::Rejected(_)), "{bad}");
        }
        assert!(matches!(w.answer("lb-2"), Answer::Next));
        assert!(matches!(w.answer("short"), Answer::Rejected(_)));
        assert!(matches!(w.answer("long enough"), Answer::Next));
        assert!(w.prompt().unwrap().secret);
        assert!(matches!(w.answer("different"), Answer::Rejected(_)));
        // Back at the first password question.
        assert_eq!(
            w.prompt().unwrap().text,
            "console password (Enter for none): "
        );
        assert!(matches!(w.answer("long enough"), Answer::Next));
        assert!(matches!(w.answer("long enough"), Answer::Next));
        // The admin key: pasted as tools keygen wrote it, checked.
        let key = crate::mgmt::keys::SigningKey::from_seed([5; 32])
            .public()
            .to_string();
        let bad_hex = format!("{}x", &key[..key.len() - 1]);
        for bad in ["ed25519:00", "ssh-ed25519 AAAA", bad_hex.as_str()] {
            assert!(matches!(w.answer(bad), Answer::Rejected(_)), "{bad}");
        }
        assert!(matches!(w.answer(&key), Answer::Next));
        assert!(
            w.summary()
                .iter()
                .any(|l| l.starts_with("  management admin keys: 1 (new: ed25519:")),
            "{:?}",
            w.summary()
        );
        assert!(matches!(w.answer("perhaps"), Answer::Rejected(_)));
        let Answer::Finished(s) = w.answer("yes") else {
            panic!()
        };
        assert_eq!(s.password, PasswordChange::Set("long enough".into()));
        assert_eq!(
            s.addressing,
            Ipv4Setting::Static {
                address: Ipv4Addr::new(10, 0, 0, 5),
                prefix_len: 24,
                gateway: None
            }
        );
        let mut cfg = c.clone();
        s.apply_to(&mut cfg, Some("hash".into()));
        assert_eq!(
            cfg.network.management_password_hash.as_deref(),
            Some("hash")
        );
        assert_eq!(cfg.management.admin_keys, core::slice::from_ref(&key));
        validate(&cfg).unwrap();
        // A second wizard keeps it and refuses it twice.
        let mut again = Wizard::new(nics(), running(&cfg), &cfg);
        for a in ["", "", "", "", "", "", ""] {
            again.answer(a);
        }
        assert_eq!(
            again.prompt().unwrap().text,
            "management admin key to add (Enter keeps the 1 there are): "
        );
        assert!(matches!(again.answer(&key), Answer::Rejected(_)));
        assert!(w.is_done() && w.prompt().is_none());
    }

    #[test]
    fn dhcp_skips_the_address_and_may_leave_dns_to_the_server() {
        let c = factory();
        let mut w = Wizard::new(nics(), running(&c), &c);
        let (rejected, end) = run(&mut w, &["", "y", "", "", "", "", "n"]);
        assert!(rejected.is_empty(), "{rejected:?}");
        assert_eq!(end, Some(Answer::Cancelled));
        let mut w = Wizard::new(nics(), running(&c), &c);
        let (_, end) = run(&mut w, &["", "y", "", "", "", "", "y"]);
        let Some(Answer::Finished(s)) = end else {
            panic!()
        };
        let mut cfg = c.clone();
        s.apply_to(&mut cfg, None);
        validate(&cfg).unwrap();
        assert!(cfg.network.interfaces[0].dhcp);
    }

    #[test]
    fn a_second_interface_gets_no_gateway_question() {
        let c = factory();
        let mut w = Wizard::new(nics(), running(&c), &c);
        let (rejected, end) = run(
            &mut w,
            &["eth1", "n", "10.12.2.1/24", "10.12.1.2", "", "", "", "y"],
        );
        assert!(rejected.is_empty(), "{rejected:?}");
        let Some(Answer::Finished(s)) = end else {
            panic!("{end:?}")
        };
        let mut cfg = c.clone();
        s.apply_to(&mut cfg, None);
        validate(&cfg).unwrap();
        assert_eq!(cfg.network.interfaces.len(), 2);
        assert_eq!(
            cfg.network.interfaces[1].address,
            Some(Ipv4Addr::new(10, 12, 2, 1))
        );
    }
}
