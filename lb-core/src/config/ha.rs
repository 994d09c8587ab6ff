//! `[ha]`: the clustered pair — which appliance holds the virtual
//! addresses (VRRPv3), and the link over which the master keeps the backup
//! in step (configuration, connections, persistence). See [`crate::ha`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::validate::{ErrorKind, Errors};
use super::{Config, Secs};

/// Default advertisement interval: 100 ms (RFC 5798's default is 1 s; a
/// hospital pair wants takeover well under a second).
pub const DEFAULT_ADVERT_INTERVAL_CS: u16 = 10;
/// UDP port of the sync link.
pub const DEFAULT_SYNC_PORT: u16 = 8694;
/// Seconds between two full refreshes of the backup's tables.
pub const DEFAULT_SYNC_REFRESH_S: u32 = 10;
/// Most floating addresses and watched interfaces.
pub const MAX_FLOATING: usize = 8;
/// Bytes of the sync key.
pub const SYNC_KEY_LEN: usize = 32;

/// The pair's settings on this appliance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ha {
    /// Virtual router ID, 1..=255, the same on both appliances (and
    /// different from any other VRRP router on the link).
    pub vrid: u8,
    /// 1..=254; the higher one is master.
    pub priority: u8,
    /// Interface the advertisements use (the VIPs' side).
    #[serde(default = "default_interface")]
    pub interface: String,
    /// Centiseconds between advertisements, 1..=4095.
    #[serde(default = "default_advert_interval")]
    pub advert_interval: u16,
    /// Send advertisements to this address (the other appliance) instead
    /// of the VRRP multicast group 224.0.0.18.
    #[serde(default)]
    pub peer: Option<Ipv4Addr>,
    /// Whether this appliance, of higher priority, takes the master role
    /// back from a lower one.
    #[serde(default = "yes")]
    pub preempt: bool,
    /// How long after it first hears a lower-priority master it does.
    #[serde(default)]
    pub preempt_delay: Secs,
    /// Checksum without the IPv4 pseudo-header (keepalived's
    /// `v3_checksum_as_v2`, Cisco, Juniper); both ends must agree.
    #[serde(default)]
    pub checksum_as_v2: bool,
    /// The master answers for the owned addresses with the virtual router
    /// MAC 00:00:5E:00:01:<vrid> (neighbours never change their ARP
    /// entries); else with its own MAC, and neighbours follow its
    /// gratuitous ARP on takeover.
    #[serde(default)]
    pub virtual_mac: bool,
    /// Interfaces whose link must be up for this appliance to be master
    /// (the advertisement interface always is).
    #[serde(default)]
    pub watch: Vec<String>,
    /// The VIPs the pair owns; unset: every virtual service's VIP.
    #[serde(default)]
    pub vips: Option<Vec<Ipv4Addr>>,
    /// Further addresses that move with the master: the internal gateway
    /// of NAT real servers, the source address of SNAT.
    #[serde(default)]
    pub floating: Vec<Floating>,
    /// Interface of the sync link (a dedicated one, or the internal one).
    /// Unset: no configuration or state sync.
    #[serde(default)]
    pub sync_interface: Option<String>,
    /// The other appliance's address on the sync link.
    #[serde(default)]
    pub sync_peer: Option<Ipv4Addr>,
    /// Shared secret authenticating the sync link (HMAC-SHA256): 64 hex
    /// digits, the same on both appliances.
    #[serde(default)]
    pub sync_key: Option<String>,
    #[serde(default = "default_sync_port")]
    pub sync_port: u16,
    /// Seconds between full refreshes of the backup's tables.
    #[serde(default = "default_sync_refresh")]
    pub sync_refresh: Secs,
}

/// An address that belongs to whichever appliance is master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Floating {
    pub interface: String,
    pub address: Ipv4Addr,
}

fn default_interface() -> String {
    String::from("eth0")
}
fn default_advert_interval() -> u16 {
    DEFAULT_ADVERT_INTERVAL_CS
}
fn yes() -> bool {
    true
}
fn default_sync_port() -> u16 {
    DEFAULT_SYNC_PORT
}
fn default_sync_refresh() -> Secs {
    Secs(DEFAULT_SYNC_REFRESH_S)
}

impl Ha {
    /// The sync key's bytes, when it is set and well-formed.
    pub fn sync_key_bytes(&self) -> Option<[u8; SYNC_KEY_LEN]> {
        parse_key(self.sync_key.as_deref()?)
    }

    /// Whether configuration and state sync are configured.
    pub fn syncs(&self) -> bool {
        self.sync_interface.is_some()
    }

    /// The VIPs the pair owns, in the configuration's order, each once.
    pub fn owned_vips(&self, config: &Config) -> Vec<Ipv4Addr> {
        let mut out: Vec<Ipv4Addr> = Vec::new();
        let all = config.virtual_services.iter().map(|vs| vs.vip);
        let wanted: Vec<Ipv4Addr> = match &self.vips {
            Some(v) => v.clone(),
            None => all.collect(),
        };
        for v in wanted {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }
}

fn parse_key(text: &str) -> Option<[u8; SYNC_KEY_LEN]> {
    let text = text.trim();
    if text.len() != 2 * SYNC_KEY_LEN || !text.is_ascii() {
        return None;
    }
    let mut key = [0u8; SYNC_KEY_LEN];
    for (i, b) in key.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(key)
}

/// Index of the interface called `name`.
pub fn interface_index(config: &Config, name: &str) -> Option<usize> {
    config
        .network
        .interfaces
        .iter()
        .position(|i| i.name == name)
}

fn subnet_of(config: &Config, nic: usize) -> Option<(Ipv4Addr, u8)> {
    let i = config.network.interfaces.get(nic)?;
    Some((i.address?, i.prefix?))
}

fn in_subnet(net: (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(net.1.min(32)))
        .unwrap_or(0);
    u32::from(net.0) & mask == u32::from(ip) & mask
}

pub(super) fn check(config: &Config, errs: &mut Errors) {
    let Some(ha) = &config.ha else {
        return;
    };
    let bad = |errs: &mut Errors, field: &str, msg: String| {
        errs.push(format!("ha.{field}"), ErrorKind::BadHa, msg);
    };
    if ha.vrid == 0 {
        bad(errs, "vrid", String::from("must be 1..=255"));
    }
    if ha.priority == 0 || ha.priority == 255 {
        bad(
            errs,
            "priority",
            String::from(
                "must be 1..=254 (255 is for the owner of the addresses, 0 means resigning)",
            ),
        );
    }
    if ha.advert_interval == 0 || ha.advert_interval > crate::vrrp::wire::MAX_INTERVAL_CS {
        bad(
            errs,
            "advert_interval",
            format!(
                "centiseconds, 1..={} (10 is 100 ms)",
                crate::vrrp::wire::MAX_INTERVAL_CS
            ),
        );
    }
    let nic = interface_index(config, &ha.interface);
    if nic.is_none() {
        bad(
            errs,
            "interface",
            format!("`{}` is not an interface of [network]", ha.interface),
        );
    }
    if let Some(peer) = ha.peer {
        if peer.is_multicast() || peer.is_broadcast() || peer.is_unspecified() {
            bad(errs, "peer", format!("{peer} is not a unicast address"));
        } else if let Some(net) = nic.and_then(|n| subnet_of(config, n))
            && !in_subnet(net, peer)
        {
            bad(
                errs,
                "peer",
                format!(
                    "{peer} is not on {}'s subnet {}/{}",
                    ha.interface, net.0, net.1
                ),
            );
        }
    }
    if ha.watch.len() > MAX_FLOATING {
        errs.push(
            "ha.watch",
            ErrorKind::TooMany,
            format!("at most {MAX_FLOATING}"),
        );
    }
    for (i, w) in ha.watch.iter().enumerate() {
        if interface_index(config, w).is_none() {
            bad(
                errs,
                &format!("watch[{i}]"),
                format!("`{w}` is not an interface of [network]"),
            );
        }
    }
    if let Some(vips) = &ha.vips {
        for (i, v) in vips.iter().enumerate() {
            if !config.virtual_services.iter().any(|vs| vs.vip == *v) {
                bad(
                    errs,
                    &format!("vips[{i}]"),
                    format!("{v} is not the VIP of a virtual service"),
                );
            }
        }
    }
    let own: Vec<Ipv4Addr> = config
        .network
        .interfaces
        .iter()
        .filter_map(|i| i.address)
        .collect();
    if ha.floating.len() > MAX_FLOATING {
        errs.push(
            "ha.floating",
            ErrorKind::TooMany,
            format!("at most {MAX_FLOATING}"),
        );
    }
    for (i, f) in ha.floating.iter().enumerate() {
        let path = format!("floating[{i}]");
        match interface_index(config, &f.interface) {
            None => bad(
                errs,
                &path,
                format!("`{}` is not an interface of [network]", f.interface),
            ),
            Some(n) => {
                if let Some(net) = subnet_of(config, n)
                    && !in_subnet(net, f.address)
                {
                    bad(
                        errs,
                        &path,
                        format!(
                            "{} is not on {}'s subnet {}/{}",
                            f.address, f.interface, net.0, net.1
                        ),
                    );
                }
            }
        }
        if own.contains(&f.address) {
            bad(
                errs,
                &path,
                format!(
                    "{} is an interface's own address; a floating address is a third one",
                    f.address
                ),
            );
        }
        if config.virtual_services.iter().any(|vs| vs.vip == f.address) {
            bad(
                errs,
                &path,
                format!("{} is a VIP (VIPs float anyway)", f.address),
            );
        }
    }
    let sync_set = [
        ha.sync_interface.is_some(),
        ha.sync_peer.is_some(),
        ha.sync_key.is_some(),
    ];
    if sync_set.iter().any(|s| *s) && !sync_set.iter().all(|s| *s) {
        bad(
            errs,
            "sync_interface",
            String::from("sync needs sync_interface, sync_peer and sync_key together"),
        );
    }
    if let Some(s) = &ha.sync_interface
        && interface_index(config, s).is_none()
    {
        bad(
            errs,
            "sync_interface",
            format!("`{s}` is not an interface of [network]"),
        );
    }
    if let (Some(s), Some(peer)) = (&ha.sync_interface, ha.sync_peer)
        && let Some(net) = interface_index(config, s).and_then(|n| subnet_of(config, n))
        && !in_subnet(net, peer)
    {
        bad(
            errs,
            "sync_peer",
            format!("{peer} is not on {s}'s subnet {}/{}", net.0, net.1),
        );
    }
    if ha.sync_key.is_some() && ha.sync_key_bytes().is_none() {
        bad(
            errs,
            "sync_key",
            format!(
                "must be {} hex digits (e.g. `openssl rand -hex 32`)",
                2 * SYNC_KEY_LEN
            ),
        );
    }
    if ha.sync_port == 0 {
        errs.push("ha.sync_port", ErrorKind::BadPort, "port 0 is not usable");
    }
    if ha.sync_refresh.0 == 0 {
        errs.push(
            "ha.sync_refresh",
            ErrorKind::BadTimeout,
            "must be greater than zero",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ErrorKind, parse_toml, validate};

    const BASE: &str = r#"
[[network.interface]]
name = "eth0"
address = "10.1.1.2"
prefix = 24

[[network.interface]]
name = "eth1"
address = "10.1.2.2"
prefix = 24
role = "internal"

[[network.interface]]
name = "eth2"
address = "10.1.3.2"
prefix = 24

[[virtual_service]]
label = "DICOM"
vip = "10.1.1.100"
ports = 104
forwarding = "nat"

[[virtual_service.real_server]]
label = "PACS1"
ip = "10.1.2.21"
"#;

    fn parse(ha: &str) -> Result<Config, alloc::vec::Vec<crate::config::ValidationError>> {
        let c = parse_toml(&format!("{BASE}\n[ha]\n{ha}")).expect("parses");
        validate(&c).map(|()| c)
    }

    #[test]
    fn defaults_and_a_full_pair() {
        let c = parse("vrid = 51\npriority = 150\n").unwrap();
        let ha = c.ha.as_ref().unwrap();
        assert_eq!(ha.interface, "eth0");
        assert_eq!(ha.advert_interval, 10);
        assert!(ha.preempt && !ha.virtual_mac && !ha.checksum_as_v2 && !ha.syncs());
        assert_eq!(ha.owned_vips(&c), [Ipv4Addr::new(10, 1, 1, 100)]);

        let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let c = parse(&format!(
            "vrid = 51\npriority = 150\npeer = \"10.1.1.3\"\npreempt_delay = \"30s\"\nwatch = [\"eth1\"]\n\
             sync_interface = \"eth2\"\nsync_peer = \"10.1.3.3\"\nsync_key = \"{key}\"\n\
             [[ha.floating]]\ninterface = \"eth1\"\naddress = \"10.1.2.1\"\n"
        ))
        .unwrap();
        let ha = c.ha.clone().unwrap();
        assert_eq!(ha.preempt_delay, Secs(30));
        assert_eq!(ha.sync_key_bytes().unwrap()[1], 0x11);
        assert_eq!(ha.floating[0].address, Ipv4Addr::new(10, 1, 2, 1));
        // Through the wire format and back.
        let blob = crate::envelope::encode(&c).unwrap();
        assert_eq!(crate::envelope::decode(&blob).unwrap(), c);
    }

    #[test]
    fn every_mistake_is_reported_with_its_field() {
        let errs = parse(
            "vrid = 0\npriority = 255\nadvert_interval = 5000\ninterface = \"eth9\"\n\
             peer = \"10.9.9.9\"\nwatch = [\"eth7\"]\nvips = [\"10.1.1.99\"]\n\
             sync_interface = \"eth2\"\nsync_key = \"abc\"\nsync_port = 0\nsync_refresh = 0\n\
             [[ha.floating]]\ninterface = \"eth1\"\naddress = \"10.1.2.2\"\n\
             [[ha.floating]]\ninterface = \"eth1\"\naddress = \"10.1.9.1\"\n",
        )
        .unwrap_err();
        let paths: alloc::vec::Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        for p in [
            "ha.vrid",
            "ha.priority",
            "ha.advert_interval",
            "ha.interface",
            "ha.watch[0]",
            "ha.vips[0]",
            "ha.floating[0]",
            "ha.floating[1]",
            "ha.sync_interface",
            "ha.sync_key",
            "ha.sync_port",
            "ha.sync_refresh",
        ] {
            assert!(paths.contains(&p), "{p} not in {paths:?}");
        }
        assert!(errs.iter().any(|e| e.kind == ErrorKind::BadHa));
        // The peer must be on the advertisement interface's subnet.
        let errs = parse("vrid = 1\npriority = 100\npeer = \"10.9.9.9\"\n").unwrap_err();
        assert_eq!(errs[0].path, "ha.peer");
    }
}
