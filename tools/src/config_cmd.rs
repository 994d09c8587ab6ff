//! `tools config check|compile`: the human TOML config to the appliance's
//! versioned postcard blob.

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

/// Compiles `input` into the envelope at `output`.
pub fn compile(input: &Path, output: &Path) -> Result<usize> {
    let config = load(input)?;
    let blob = envelope::encode(&config).map_err(|e| anyhow::anyhow!("encoding: {e:?}"))?;
    // The appliance decodes exactly this: prove it before writing.
    envelope::decode(&blob).map_err(|e| anyhow::anyhow!("compiled blob does not decode: {e:?}"))?;
    std::fs::write(output, &blob).with_context(|| format!("writing {}", output.display()))?;
    Ok(blob.len())
}
