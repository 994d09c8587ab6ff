//! `tools config check|compile|explain`: the human TOML config to the
//! appliance's versioned postcard blob, and what it means once presets and
//! defaults are filled in.

use anyhow::{Context, Result, bail};
use lb_core::config::{Config, from_toml};
use lb_core::envelope;
use std::path::Path;

/// Reads, parses and validates a TOML config; every problem is reported.
pub fn load(path: &Path) -> Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match from_toml(&text) {
        Ok(config) => Ok(config),
        Err(e) => bail!("{}: {e}", path.display()),
    }
}

/// One line per virtual service, for `check`.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    for vs in &config.virtual_services {
        let ports: Vec<String> = vs.ports.iter().map(u16::to_string).collect();
        out.push_str(&format!(
            "  {:<20} {}:{} {:?} {:?} {} real server(s)\n",
            vs.label,
            vs.vip,
            ports.join(","),
            vs.protocol,
            vs.forwarding,
            vs.real_servers.len()
        ));
    }
    out
}

/// Every virtual service's effective values, one `key = value` line each
/// (values as JSON, which is TOML for strings, numbers and booleans; real
/// servers and routes as inline lists): what `explain` prints.
pub fn explain(config: &Config) -> Result<String> {
    let mut out = String::new();
    for vs in &config.virtual_services {
        out.push_str(&format!("[[virtual_service]]  # {}\n", vs.label));
        let serde_json::Value::Object(fields) = serde_json::to_value(vs)? else {
            bail!("a virtual service is not a record");
        };
        for (key, value) in fields {
            match value {
                serde_json::Value::Null => out.push_str(&format!("# {key}: not set\n")),
                v => out.push_str(&format!("{key} = {v}\n")),
            }
        }
        out.push('\n');
    }
    Ok(out)
}

/// Compiles `input` into the envelope at `output`.
pub fn compile(input: &Path, output: &Path) -> Result<usize> {
    let config = load(input)?;
    let blob = envelope::encode(&config).map_err(|e| anyhow::anyhow!("encoding: {e:?}"))?;
    // The appliance decodes exactly this: prove it before writing.
    envelope::decode(&blob).map_err(|e| anyhow::anyhow!("compiled blob does not decode: {e:?}"))?;
    std::fs::write(output, &blob).with_context(|| format!("writing {}", output.display()))?;
    Ok(blob.len())
}

#[cfg(test)]
mod tests {
    #[test]
    fn explain_shows_what_a_preset_filled_in() {
        let cfg = lb_core::config::from_toml(
            "[[network.interface]]\nname = \"eth0\"\naddress = \"10.0.0.2\"\nprefix = 24\n\
             [[virtual_service]]\nlabel = \"H\"\nvip = \"10.0.0.10\"\npreset = \"hl7\"\nscheduler = \"rr\"\n\
             [[virtual_service.real_server]]\nlabel = \"E1\"\nip = \"10.0.0.20\"\n",
        )
        .unwrap();
        let text = super::explain(&cfg).unwrap();
        for line in [
            "[[virtual_service]]  # H",
            "ports = [2575]",
            "forwarding = \"layer7\"",
            "check_type = \"hl7\"",
            "persistence_timeout = 3600",
            "client_timeout = 3600",
            "scheduler = \"rr\"",
            "# check_port: not set",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} in\n{text}");
        }
    }
}
