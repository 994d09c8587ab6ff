//! What the appliance runs with at boot: the configuration (the boot
//! module's blob, else the embedded default) and each interface's address
//! by precedence — for eth0 the command line's `ip=` over the config over
//! the factory default; for the other interfaces the config.
//!
//! The kernel reads the module's bytes and the command line; the choices
//! are made here and return the console lines to print.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::cmdline::{self, FACTORY_DEFAULT, Ipv4Setting};
use crate::config::Config;
use crate::envelope;

/// The configuration to run with: `module` (the boot module's bytes, if
/// the loader gave one) else `embedded`. `None` when the blob is rejected:
/// the appliance then runs with no virtual services. Appends what it found
/// to `log`.
pub fn load_config(
    module: Option<&[u8]>,
    embedded: &[u8],
    log: &mut Vec<String>,
) -> Option<Config> {
    let (blob, source) = match module {
        Some(b) => (b, "boot module"),
        None => (embedded, "embedded default"),
    };
    match envelope::decode(blob) {
        Ok(config) => {
            log.push(format!(
                "config: {} virtual service(s) from {source}",
                config.virtual_services.len()
            ));
            Some(config)
        }
        Err(e) => {
            log.push(format!("error: config: {e}"));
            log.push(String::from("running with no virtual services"));
            None
        }
    }
}

/// The config's setting for interface `nic`: `dhcp = true`, or its static
/// address (eth0 also gets the config's gateway); `None` when the config
/// gives it neither.
pub fn interface_setting(config: Option<&Config>, nic: usize) -> Option<Ipv4Setting> {
    let config = config?;
    let iface = config.network.interfaces.get(nic)?;
    if iface.dhcp {
        return Some(Ipv4Setting::Dhcp);
    }
    Some(Ipv4Setting::Static {
        address: iface.address?,
        prefix_len: iface.prefix.unwrap_or(32),
        gateway: if nic == 0 {
            config.network.gateway
        } else {
            None
        },
    })
}

/// eth0's setting: a valid `ip=` on the command line, else the config's,
/// else the factory default. A malformed `ip=` is reported in `log` and
/// ignored; a command line without `gw=` keeps the config's gateway.
pub fn eth0_setting(
    cmdline_text: &str,
    config: Option<&Config>,
    log: &mut Vec<String>,
) -> Ipv4Setting {
    let given = cmdline_text
        .split_ascii_whitespace()
        .any(|w| w.starts_with("ip="));
    let from_cmdline = match cmdline::parse(cmdline_text) {
        Ok(s) if given => Some(s),
        Ok(_) => None,
        Err(e) => {
            log.push(format!("error: {e}"));
            None
        }
    };
    if let Some(s) = from_cmdline {
        return match (s, config.and_then(|c| c.network.gateway)) {
            (
                Ipv4Setting::Static {
                    address,
                    prefix_len,
                    gateway: None,
                },
                Some(gw),
            ) => Ipv4Setting::Static {
                address,
                prefix_len,
                gateway: Some(gw),
            },
            (s, _) => s,
        };
    }
    let fallback = interface_setting(config, 0);
    if given {
        match fallback {
            Some(s) => log.push(format!("using the configured address {s}")),
            None => log.push(format!("using factory default {FACTORY_DEFAULT}")),
        }
    }
    fallback.unwrap_or(FACTORY_DEFAULT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Interface;
    use core::net::Ipv4Addr;

    fn config(dhcp_eth1: bool) -> Config {
        let mut c: Config = crate::config::from_toml(include_str!("../configs/medical.toml"))
            .expect("example config validates");
        if dhcp_eth1 {
            c.network.interfaces[1] = Interface {
                dhcp: true,
                address: None,
                prefix: None,
                ..c.network.interfaces[1].clone()
            };
        }
        c
    }

    #[test]
    fn command_line_beats_config_beats_factory_default() {
        let c = config(false);
        let mut log = Vec::new();
        let from_config = eth0_setting("console=ttyS0", Some(&c), &mut log);
        assert_eq!(
            from_config,
            Ipv4Setting::Static {
                address: Ipv4Addr::new(10, 12, 1, 21),
                prefix_len: 24,
                gateway: Some(Ipv4Addr::new(10, 12, 1, 1)),
            }
        );
        assert!(log.is_empty());
        // ip= without gw= keeps the config's gateway.
        let s = eth0_setting("ip=10.9.0.2/16", Some(&c), &mut log);
        assert_eq!(
            s,
            Ipv4Setting::Static {
                address: Ipv4Addr::new(10, 9, 0, 2),
                prefix_len: 16,
                gateway: Some(Ipv4Addr::new(10, 12, 1, 1)),
            }
        );
        assert_eq!(
            eth0_setting("ip=dhcp", Some(&c), &mut log),
            Ipv4Setting::Dhcp
        );
        assert_eq!(eth0_setting("", None, &mut log), FACTORY_DEFAULT);
        assert!(log.is_empty());
    }

    #[test]
    fn a_malformed_ip_is_reported_and_the_fallback_named() {
        let mut log = Vec::new();
        assert_eq!(
            eth0_setting("ip=999.1.1.1/40", None, &mut log),
            FACTORY_DEFAULT
        );
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(log[0].starts_with("error: ip=999.1.1.1/40"), "{log:?}");
        assert!(
            log[1].contains("factory default 192.168.2.21/24"),
            "{log:?}"
        );
        let c = config(false);
        log.clear();
        eth0_setting("ip=nonsense", Some(&c), &mut log);
        assert!(
            log[1].contains("configured address 10.12.1.21/24"),
            "{log:?}"
        );
    }

    #[test]
    fn interfaces_take_dhcp_or_their_static_address() {
        let c = config(true);
        assert_eq!(interface_setting(Some(&c), 1), Some(Ipv4Setting::Dhcp));
        assert_eq!(interface_setting(Some(&c), 2), None);
        assert_eq!(interface_setting(None, 0), None);
    }

    #[test]
    fn a_damaged_blob_is_reported_and_means_no_services() {
        let c = config(false);
        let blob = crate::envelope::encode(&c).expect("encodes");
        let mut log = Vec::new();
        assert_eq!(load_config(Some(&blob), &[], &mut log), Some(c.clone()));
        assert!(log[0].contains("from boot module"), "{log:?}");
        log.clear();
        assert_eq!(load_config(None, &blob, &mut log), Some(c));
        assert!(log[0].contains("from embedded default"), "{log:?}");
        log.clear();
        assert_eq!(
            load_config(Some(&blob[..blob.len() / 2]), &blob, &mut log),
            None
        );
        assert!(log[0].starts_with("error: config: "), "{log:?}");
        assert_eq!(log[1], "running with no virtual services");
    }
}
