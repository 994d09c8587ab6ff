//! Applying a new configuration to the running appliance, live: the one
//! path the console's `config paste` (and the wizard's network part) take,
//! and the one for a signed upload. lb-core's `Datapath::apply_config`
//! does the data path in one step (what continues keeps its connections,
//! persistence and health; what was removed drains; what is new starts
//! unchecked); here the NICs whose settings changed get them on their
//! stacks, the VIPs and moved addresses are announced, and the result
//! becomes the configuration in force. Saving is the caller's: the
//! console saves after applying, an upload stores before.

use crate::datapath::{self, NicTx, print_log};
use crate::mgmt::events;
use crate::{Nics, netif, println, running, storage};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use lb_core::cmdline::Ipv4Setting;
use lb_core::config::Config;
use lb_core::datapath::Datapath;
use lb_core::mgmt::diff;
use lb_core::mgmt::events::{Category, Severity};
use lb_core::startup::interface_setting;

/// Puts `setting` on NIC `nic` at once: its stack, the data path's address
/// (and, for eth0, gateway), and a gratuitous ARP for the address.
pub fn addressing(dp: &RefCell<Datapath>, nics: &'static Nics, nic: usize, setting: Ipv4Setting) {
    if !netif::reconfigure(nic, setting) {
        println!("eth{nic} has no network stack yet: its setting takes effect at the next boot");
        return;
    }
    let (addr, gateway) = match setting {
        Ipv4Setting::Static {
            address,
            prefix_len,
            gateway,
        } => (Some((address, prefix_len)), gateway),
        // The lease watcher tells the data path once the lease comes.
        Ipv4Setting::Dhcp => (None, None),
    };
    let mut dp = dp.borrow_mut();
    dp.set_address(nic, addr);
    if nic == 0 {
        dp.set_gateway(gateway);
    }
    let mut tx = NicTx(nics);
    dp.announce_address(nic, &mut tx);
    dp.announce_vips(&mut tx);
}

/// Applies `new` (validated) in place of the configuration in force.
/// `source` says where it came from, for the log. Returns the settings
/// that changed but take effect only at the next boot.
pub async fn apply(
    dp: &RefCell<Datapath>,
    nics: &'static Nics,
    new: Config,
    source: &str,
) -> Result<Vec<&'static str>, String> {
    let summary = running::with(|old| diff::summary(old, &new));
    let report = {
        let mut d = dp.borrow_mut();
        let report = d
            .apply_config(new.clone(), datapath::now())
            .map_err(|e| format!("{e:?}"))?;
        print_log(&mut d);
        report
    };
    // NICs whose configured setting changed get it now (an `ip=` from the
    // command line gives way to the configuration applied).
    for nic in 0..nics.len() {
        let want = interface_setting(Some(&new), nic);
        let before = running::with(|old| interface_setting(Some(old), nic));
        if let Some(setting) = want
            && (want != before || netif::setting(nic) != want)
        {
            addressing(dp, nics, nic, setting);
        }
    }
    dp.borrow_mut().announce_vips(&mut NicTx(nics));
    running::set(new);
    // The backup of a pair follows the master's config.
    datapath::offer_running_config(dp);
    let draining = if report.draining > 0 {
        format!("; {} connection(s) draining", report.draining)
    } else {
        String::new()
    };
    events::log(
        Severity::Notice,
        Category::Config,
        format!("applied from {source}: {summary}{draining}"),
    );
    Ok(report.at_next_boot)
}

/// Stores the configuration in force on the config disk, and says so.
pub async fn save() {
    match storage::save_running().await {
        Ok(h) => events::log(
            Severity::Info,
            Category::Config,
            format!(
                "saved to slot {} sequence {} ({} bytes)",
                h.slot.name(),
                h.sequence,
                h.len
            ),
        ),
        Err(e) => println!("error: save: {e}"),
    }
}
