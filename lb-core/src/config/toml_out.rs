//! The configuration as TOML (the console's `show config`): the same file
//! format `tools config check` reads, so what the appliance prints can be
//! saved and loaded again. Fields whose value is the default are left out,
//! which the emitter finds out generically (dropping a field must give the
//! same value back), so fields added to the model later are printed
//! without changes here.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use serde::Serialize;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::{Config, Interface, L4Settings, Network, RealServer, VirtualService};

/// Keys printed first, in this order; the others follow alphabetically.
const FIRST: &[&str] = &[
    "network",
    "hostname",
    "name",
    "label",
    "vip",
    "ip",
    "ports",
    "port",
    "protocol",
    "forwarding",
    "address",
    "prefix",
    "dhcp",
    "role",
    "weight",
    "state",
    "gateway",
    "dns",
];

/// Drops the keys of `table` (a `T`) that hold `T`'s default: those
/// without which it deserializes to the same value. `keep` are not tried.
fn prune<T: DeserializeOwned + PartialEq>(table: &mut Table, keep: &[&str]) {
    let Ok(full) = Value::Table(table.clone()).try_into::<T>() else {
        return;
    };
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        if keep.contains(&key.as_str()) {
            continue;
        }
        let mut without = table.clone();
        without.remove(&key);
        if Value::Table(without.clone())
            .try_into::<T>()
            .is_ok_and(|v| v == full)
        {
            *table = without;
        }
    }
}

/// Prunes every table of the array at `key` as a `T`.
fn prune_array<T: DeserializeOwned + PartialEq>(
    table: &mut Table,
    key: &str,
    keep: &[&str],
    inner: impl Fn(&mut Table),
) {
    if let Some(Value::Array(items)) = table.get_mut(key) {
        for item in items.iter_mut() {
            if let Value::Table(t) = item {
                inner(t);
                prune::<T>(t, keep);
            }
        }
    }
}

/// Drops the fields of top-level table `section` without which the whole
/// configuration reads back the same.
fn prune_section(root: &mut Table, section: &str, config: &Config) {
    let Some(Value::Table(t)) = root.get(section) else {
        return;
    };
    for key in t.keys().cloned().collect::<Vec<_>>() {
        let mut without = root.clone();
        if let Some(Value::Table(t)) = without.get_mut(section) {
            t.remove(&key);
        }
        if Value::Table(without.clone())
            .try_into::<Config>()
            .is_ok_and(|c| c == *config)
        {
            *root = without;
        }
    }
}

fn ordered(table: &Table) -> Vec<(&String, &Value)> {
    let mut v: Vec<(&String, &Value)> = table.iter().collect();
    v.sort_by_key(|(k, _)| {
        (
            FIRST.iter().position(|f| f == k).unwrap_or(FIRST.len()),
            k.as_str(),
        )
    });
    v
}

fn is_table_array(v: &Value) -> bool {
    matches!(v, Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_table))
}

/// Writes `table` under the header `name` (`[name]`, or `[[name]]` for an
/// element of an array of tables), then its sub-tables.
fn emit(out: &mut String, name: &str, table: &Table, array: bool) {
    if !name.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let (open, close) = if array { ("[[", "]]") } else { ("[", "]") };
        let _ = writeln!(out, "{open}{name}{close}");
    }
    let entries = ordered(table);
    for (k, v) in &entries {
        if !v.is_table() && !is_table_array(v) {
            let _ = writeln!(out, "{k} = {v}");
        }
    }
    for (k, v) in &entries {
        let path = if name.is_empty() {
            String::from(k.as_str())
        } else {
            alloc::format!("{name}.{k}")
        };
        match v {
            Value::Table(t) if !t.is_empty() => emit(out, &path, t, false),
            Value::Array(items) if is_table_array(v) => {
                for item in items {
                    if let Value::Table(t) = item {
                        emit(out, &path, t, true);
                    }
                }
            }
            _ => {}
        }
    }
}

fn serialize<T: Serialize>(v: &T) -> Option<Table> {
    Table::try_from(v).ok()
}

/// The configuration as TOML, defaults left out.
pub fn to_toml(config: &Config) -> String {
    let Some(mut root) = serialize(config) else {
        return String::from("# the configuration cannot be written as TOML\n");
    };
    if let Some(Value::Table(net)) = root.get_mut("network") {
        prune_array::<Interface>(net, "interface", &["name"], |_| {});
        prune::<Network>(net, &["hostname"]);
    }
    if let Some(Value::Table(l4)) = root.get_mut("l4") {
        prune::<L4Settings>(l4, &[]);
    }
    // Sections this emitter has no type for (added to the model later):
    // each field is tried against the whole configuration.
    let known = ["network", "l4", "virtual_service"];
    let others: Vec<String> = root
        .iter()
        .filter(|(k, v)| v.is_table() && !known.contains(&k.as_str()))
        .map(|(k, _)| k.clone())
        .collect();
    for section in others {
        prune_section(&mut root, &section, config);
    }
    prune_array::<VirtualService>(
        &mut root,
        "virtual_service",
        &[
            "label",
            "vip",
            "ports",
            "protocol",
            "forwarding",
            "real_server",
        ],
        |vs| prune_array::<RealServer>(vs, "real_server", &["label", "ip"], |_| {}),
    );
    root.retain(|_, v| match v {
        Value::Table(t) => !t.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    });
    let mut out = String::new();
    emit(&mut out, "", &root, false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;
    use alloc::string::ToString;

    const MEDICAL: &str = include_str!("../../configs/medical.toml");

    #[test]
    fn medical_round_trips_and_leaves_defaults_out() {
        let c = from_toml(MEDICAL).unwrap();
        let text = to_toml(&c);
        assert_eq!(from_toml(&text).unwrap(), c, "{text}");
        // Defaults are not printed; the guide's explicit values are.
        assert!(!text.contains("weight"), "{text}");
        assert!(!text.contains("scheduler"), "{text}");
        assert!(text.contains("persistence_timeout = 3600"), "{text}");
        assert!(!text.contains("[l4]"), "2h is the default: {text}");
        // Sections in the file's order, required keys first.
        let first = text.lines().next().unwrap();
        assert_eq!(first, "[network]");
        let vs = text.find("[[virtual_service]]\nlabel = \"DICOM-Modalities\"\nvip = \"10.12.1.100\"\nports = [104, 11112]");
        assert!(vs.is_some(), "{text}");
        assert!(
            text.contains(
                "[[virtual_service.real_server]]\nlabel = \"DICOM1\"\nip = \"10.12.1.110\"\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn every_field_set_round_trips() {
        let text = r#"
[network]
hostname = "lb-2"
gateway = "10.0.0.1"
dns = ["10.0.0.53", "10.0.0.54"]
management_password_hash = "$pbkdf2-sha256$i=1000,l=32$BwcH$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"

[[network.interface]]
name = "eth0"
address = "10.0.0.2"
prefix = 24

[[network.interface]]
name = "eth1"
dhcp = true
role = "internal"

[l4]
tcp_handshake_timeout = 30
tcp_established_timeout = "3h"
tcp_closing_timeout = 60
tcp_reset_timeout = 5
udp_timeout = 100
conntrack_capacity = 5000
persistence_capacity = 2000

[[virtual_service]]
label = "WEB"
vip = "10.0.0.100"
ports = 8080
protocol = "tcp"
forwarding = "snat"
scheduler = "sh"
mode = "failover"
persistence_timeout = 60
persistence_netmask = "255.255.255.0"
check_type = "http"
check_port = 8081
check_interval = 3
check_timeout = 2
check_rise = 4
check_fall = 5
check_request = "/health?x=\"1\""
check_expect = "OK"
client_timeout = 100
server_timeout = 200

[[virtual_service.real_server]]
label = "W1"
ip = "10.0.0.11"
port = 80
weight = 0
min_connections = 5
max_connections = 10
state = "drain"

[[virtual_service]]
label = "HL7"
vip = "10.0.0.101"
ports = [2575, 2576]
protocol = "udp"
forwarding = "dr"
check_type = "hl7"
check_hl7_message = "MSH|^~\\&|A|B\rQRD|1"

[[virtual_service.real_server]]
label = "H1"
ip = "10.0.0.12"
state = "halt"
"#;
        let c = from_toml(text).unwrap();
        let out = to_toml(&c);
        assert_eq!(from_toml(&out).unwrap(), c, "{out}");
        assert!(out.contains(r#"check_request = '/health?x="1"'"#), "{out}");
    }

    #[test]
    fn an_empty_config_prints_its_hostname() {
        let c = Config::empty();
        let out = to_toml(&c);
        assert_eq!(out, "[network]\nhostname = \"lbmed\"\n");
        assert_eq!(from_toml(&out).unwrap(), c);
    }

    #[test]
    fn admin_keys_print_as_one_line() {
        let mut c = Config::empty();
        let key = crate::mgmt::keys::SigningKey::from_seed([5; 32])
            .public()
            .to_string();
        c.management.admin_keys.push(key.clone());
        let out = to_toml(&c);
        assert!(
            out.contains(&alloc::format!("[management]\nadmin_keys = [\"{key}\"]\n")),
            "{out}"
        );
        assert_eq!(from_toml(&out).unwrap(), c);
    }
}
