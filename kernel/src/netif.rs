//! The network interfaces as the console sees and changes them: each NIC's
//! IP stack (if it has one) and the setting it runs with, and whether
//! eth0's came from the kernel command line.

use alloc::vec::Vec;
use core::cell::RefCell;
use critical_section::Mutex;
use embassy_net::{ConfigV4, Ipv4Cidr, Stack, StaticConfigV4};
use lb_core::cmdline::Ipv4Setting;

#[derive(Default)]
struct Interfaces {
    stacks: Vec<Option<Stack<'static>>>,
    settings: Vec<Option<Ipv4Setting>>,
    /// eth0's setting came from `ip=` (this boot only).
    cmdline: bool,
}

// SAFETY: one CPU, and only thread context (tasks) touches the stacks;
// the mutex is for the borrow discipline, not for other threads.
unsafe impl Send for Interfaces {}

static IFACES: Mutex<RefCell<Interfaces>> = Mutex::new(RefCell::new(Interfaces {
    stacks: Vec::new(),
    settings: Vec::new(),
    cmdline: false,
}));

fn with<R>(f: impl FnOnce(&mut Interfaces) -> R) -> R {
    critical_section::with(|cs| f(&mut IFACES.borrow_ref_mut(cs)))
}

/// Records NIC `nic`'s stack and setting (at boot).
pub fn register(nic: usize, stack: Option<Stack<'static>>, setting: Option<Ipv4Setting>) {
    with(|i| {
        if i.stacks.len() <= nic {
            i.stacks.resize(nic + 1, None);
            i.settings.resize(nic + 1, None);
        }
        i.stacks[nic] = stack;
        i.settings[nic] = setting;
    });
}

/// Marks eth0's setting as the command line's.
pub fn set_cmdline_override(yes: bool) {
    with(|i| i.cmdline = yes);
}

/// eth0's setting if it came from the command line and still runs.
pub fn cmdline_override() -> Option<Ipv4Setting> {
    with(|i| {
        if i.cmdline {
            i.settings.first().copied().flatten()
        } else {
            None
        }
    })
}

/// The setting NIC `nic` runs with.
pub fn setting(nic: usize) -> Option<Ipv4Setting> {
    with(|i| i.settings.get(nic).copied().flatten())
}

/// NIC `nic`'s stack.
pub fn stack(nic: usize) -> Option<Stack<'static>> {
    with(|i| i.stacks.get(nic).copied().flatten())
}

/// Gives NIC `nic`'s stack a new setting (the wizard). False when the NIC
/// has no stack.
pub fn reconfigure(nic: usize, setting: Ipv4Setting) -> bool {
    let Some(stack) = stack(nic) else {
        return false;
    };
    stack.set_config_v4(match setting {
        Ipv4Setting::Static {
            address,
            prefix_len,
            gateway,
        } => ConfigV4::Static(StaticConfigV4 {
            address: Ipv4Cidr::new(address, prefix_len),
            gateway,
            dns_servers: Default::default(),
        }),
        Ipv4Setting::Dhcp => ConfigV4::Dhcp(Default::default()),
    });
    with(|i| {
        i.settings[nic] = Some(setting);
        if nic == 0 {
            i.cmdline = false;
        }
    });
    true
}
