//! The configuration at boot: the stored one (see `storage`), else the first
//! Multiboot module's bytes (the config blob `tools config compile` writes),
//! else the embedded default; and eth0's address. The choices are lb-core's
//! (`lb_core::startup`); this reads the module out of memory and prints
//! what they say.

use crate::println;
use alloc::vec::Vec;
use boot::multiboot::BootInfo;
use lb_core::cmdline::Ipv4Setting;
use lb_core::config::Config;
use lb_core::{envelope, startup};

/// The factory default configuration, compiled by `build.rs`.
static EMBEDDED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/default_config.bin"));

/// Largest boot module read (a corrupt header could claim anything).
const MODULE_MAX: u64 = 4 * 1024 * 1024 + envelope::HEADER_LEN as u64;

/// The configuration in force, if any.
pub struct Loaded {
    /// `None`: the blob was rejected; the appliance runs with no services.
    pub config: Option<Config>,
    /// Where it came from, for the banner.
    pub source: &'static str,
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

fn print(lines: Vec<alloc::string::String>) {
    for line in lines {
        println!("{line}");
    }
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
            source: "the store",
        };
    }
    let mut log = Vec::new();
    let module = module_bytes(info);
    let source = if module.is_some() {
        "the boot module"
    } else {
        "the embedded default"
    };
    let config = startup::load_config(module.as_deref(), EMBEDDED, &mut log);
    print(log);
    Loaded { config, source }
}

/// eth0's address by precedence (see `lb_core::startup::eth0_setting`).
pub fn eth0_setting(cmdline: &str, config: Option<&Config>) -> Ipv4Setting {
    let mut log = Vec::new();
    let setting = startup::eth0_setting(cmdline, config, &mut log);
    print(log);
    setting
}

/// Whether the command line has a valid `ip=` (eth0 then runs on it, this
/// boot only).
pub fn cmdline_valid(cmdline_text: &str) -> bool {
    lb_core::cmdline::parse(cmdline_text).is_ok()
}
