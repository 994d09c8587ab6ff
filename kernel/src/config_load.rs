//! The configuration at boot: the first Multiboot module (the config blob
//! `tools config compile` writes), else the embedded default; and eth0's
//! address by precedence: command line `ip=` > config > factory default.

use crate::println;
use alloc::vec::Vec;
use boot::multiboot::BootInfo;
use lb_core::cmdline::{self, FACTORY_DEFAULT, Ipv4Setting};
use lb_core::config::Config;
use lb_core::envelope;

/// The factory default configuration, compiled by `build.rs`.
static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default_config.bin"));

/// Largest boot module read (a corrupt header could claim anything).
const MODULE_MAX: u64 = 4 * 1024 * 1024 + envelope::HEADER_LEN as u64;

/// The configuration in force, if any.
pub struct Loaded {
    /// `None`: the blob was rejected; the appliance runs with no services.
    pub config: Option<Config>,
}

/// Copies the first boot module out of memory the loader left reserved.
fn module_bytes(info: &BootInfo) -> Option<Vec<u8>> {
    let (start, end) = info.first_module()?;
    let len = end.saturating_sub(start).min(MODULE_MAX) as usize;
    if start == 0 {
        return Some(Vec::new());
    }
    let mut v = alloc::vec![0u8; len];
    // SAFETY: the loader placed the module at [start, end) in identity-mapped
    // low memory and the heap was set up around that range (`reserved`), so
    // it is readable and nothing else writes it; `len` is bounded.
    unsafe { core::ptr::copy_nonoverlapping(start as usize as *const u8, v.as_mut_ptr(), len) };
    Some(v)
}

/// The stored config (already decoded) if there is one, else the boot
/// module, else the embedded default; prints what it took.
pub fn load(info: &BootInfo, stored: Option<(Config, lb_core::store::Loaded)>) -> Loaded {
    if let Some((config, from)) = stored {
        println!(
            "config: {} virtual service(s) from the store (slot {}, sequence {})",
            config.virtual_services.len(),
            from.slot.name(),
            from.sequence
        );
        return Loaded {
            config: Some(config),
        };
    }
    let (blob, source) = match module_bytes(info) {
        Some(b) => (b, "boot module"),
        None => (EMBEDDED.to_vec(), "embedded default"),
    };
    match envelope::decode(&blob) {
        Ok(config) => {
            println!(
                "config: {} virtual service(s) from {source}",
                config.virtual_services.len()
            );
            Loaded {
                config: Some(config),
            }
        }
        Err(e) => {
            println!("error: config: {e}");
            println!("running with no virtual services");
            Loaded { config: None }
        }
    }
}

/// The config's address for interface `nic`, if it has a static one.
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

/// eth0's address: a valid `ip=` on the command line, else the config's,
/// else the factory default. A malformed `ip=` is reported and ignored.
pub fn eth0_setting(cmdline_text: &str, config: Option<&Config>) -> Ipv4Setting {
    let given = cmdline_text
        .split_ascii_whitespace()
        .any(|w| w.starts_with("ip="));
    let from_cmdline = match cmdline::parse(cmdline_text) {
        Ok(s) if given => Some(s),
        Ok(_) => None,
        Err(e) => {
            println!("error: {e}");
            None
        }
    };
    if let Some(s) = from_cmdline {
        // A command line without gw= keeps the config's gateway.
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
            Some(s) => println!("using the configured address {s}"),
            None => println!("using factory default {FACTORY_DEFAULT}"),
        }
    }
    fallback.unwrap_or(FACTORY_DEFAULT)
}
