//! What a new configuration changes, in words: the summary `tools upload`
//! prints and the event log keeps.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::status::admin_name;
use crate::config::{Config, RealServer, VirtualService};

fn server_changes(vs: &str, old: &RealServer, new: &RealServer, out: &mut Vec<String>) {
    let name = format!("{vs}/{}", new.label);
    if old.ip != new.ip || old.port != new.port {
        out.push(format!("{name}: address changed"));
    }
    if old.weight != new.weight {
        out.push(format!("{name}: weight {} -> {}", old.weight, new.weight));
    }
    if old.state != new.state {
        out.push(format!(
            "{name}: state {} -> {}",
            admin_name(old.state),
            admin_name(new.state)
        ));
    }
    if old.min_connections != new.min_connections || old.max_connections != new.max_connections {
        out.push(format!("{name}: connection limits changed"));
    }
}

fn service_changes(old: &VirtualService, new: &VirtualService, out: &mut Vec<String>) {
    let l = &new.label;
    // Compare everything but the servers, with the servers taken out.
    let strip = |vs: &VirtualService| VirtualService {
        real_servers: Vec::new(),
        ..vs.clone()
    };
    if strip(old) != strip(new) {
        out.push(format!("virtual service {l}: settings changed"));
    }
    for rs in &new.real_servers {
        match old.real_servers.iter().find(|o| o.label == rs.label) {
            None => out.push(format!("{l}/{}: added", rs.label)),
            Some(o) => server_changes(l, o, rs, out),
        }
    }
    for rs in &old.real_servers {
        if !new.real_servers.iter().any(|n| n.label == rs.label) {
            out.push(format!("{l}/{}: removed", rs.label));
        }
    }
}

/// One line per change from `old` to `new` (the serial is not a change).
pub fn changes(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.network != new.network {
        out.push(String::from("network settings changed"));
    }
    if old.l4 != new.l4 {
        out.push(String::from("layer 4 settings changed"));
    }
    let mut om = old.management.clone();
    om.serial = new.management.serial;
    if om != new.management {
        out.push(String::from("management settings changed"));
    }
    for vs in &new.virtual_services {
        match old.virtual_services.iter().find(|o| o.label == vs.label) {
            None => out.push(format!(
                "virtual service {} added ({}:{})",
                vs.label, vs.vip, vs.ports
            )),
            Some(o) => service_changes(o, vs, &mut out),
        }
    }
    for vs in &old.virtual_services {
        if !new.virtual_services.iter().any(|n| n.label == vs.label) {
            out.push(format!("virtual service {} removed", vs.label));
        }
    }
    out
}

/// [`changes`] as one line: `2 changes: a; b`, or `no changes`.
pub fn summary(old: &Config, new: &Config) -> String {
    let c = changes(old, new);
    match c.len() {
        0 => String::from("no changes"),
        1 => format!("1 change: {}", c[0]),
        n => format!("{n} changes: {}", c.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdminState, from_toml};

    #[test]
    fn names_each_change() {
        let old = from_toml(include_str!("../../configs/medical.toml")).unwrap();
        let mut new = old.clone();
        new.management.serial = 9;
        assert_eq!(summary(&old, &new), "no changes");
        new.virtual_services[0].real_servers[1].weight = 300;
        new.virtual_services[1].real_servers[0].state = AdminState::Drain;
        let mut extra = new.virtual_services[0].clone();
        extra.label = "DICOM-2".into();
        extra.vip = "10.12.1.101".parse().unwrap();
        new.virtual_services.push(extra);
        new.virtual_services.remove(4);
        new.management.admin_keys.push("k".into());
        assert_eq!(
            changes(&old, &new),
            [
                "management settings changed",
                "DICOM-Modalities/DICOM2: weight 100 -> 300",
                "HL7/HL71: state online -> drain",
                "virtual service DICOM-2 added (10.12.1.101:104,11112)",
                "virtual service HTTPS-Viewer removed",
            ]
        );
    }
}
