//! The human front end: a TOML file whose field names follow the guide.
//! The host tool compiles it to the postcard envelope; the appliance reads
//! it too (a config pasted at the console).

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::{Config, ValidationError, validate};

/// Why a TOML configuration was not accepted.
#[derive(Debug)]
pub enum LoadError {
    /// Not TOML, or a field of the wrong type or unknown value (the message
    /// carries the line and column).
    Parse(String),
    /// Well-formed but invalid; every problem is listed.
    Invalid(Vec<ValidationError>),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Parse(m) => write!(f, "config is not valid TOML for this schema: {m}"),
            LoadError::Invalid(errs) => {
                write!(f, "config has {} error(s):", errs.len())?;
                for e in errs {
                    write!(f, "\n  {e}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for LoadError {}

/// Parses and validates a TOML configuration.
pub fn from_toml(text: &str) -> Result<Config, LoadError> {
    let config = parse_toml(text)?;
    validate(&config).map_err(LoadError::Invalid)?;
    Ok(config)
}

/// Parses without validating (for tools that want to show every problem
/// themselves, and for tests of the validator).
pub fn parse_toml(text: &str) -> Result<Config, LoadError> {
    let parse = |e: toml::de::Error| LoadError::Parse(alloc::string::ToString::to_string(&e));
    if text.contains("preset") {
        let mut table: toml::Table = toml::from_str(text).map_err(parse)?;
        if apply_presets(&mut table)? {
            return table.try_into().map_err(parse);
        }
    }
    // Straight from the text: errors keep their line and column.
    toml::from_str(text).map_err(parse)
}

/// The presets a virtual service may name (`preset = "..."`).
pub const PRESETS: [&str; 4] = ["dicom", "hl7", "xds", "https"];

/// The guide's values for a preset: ports, forwarding method,
/// persistence of 1 h, 1 h layer 7 timeouts, the protocol's own check.
pub fn preset_fields(name: &str) -> Option<Vec<(&'static str, toml::Value)>> {
    use toml::Value::{Integer, String as S};
    let s = |v: &str| S(String::from(v));
    let hour = || Integer(3600);
    let mut f = match name {
        "dicom" => alloc::vec![
            ("ports", s("104,11112")),
            ("forwarding", s("dr")),
            ("check_type", s("dicom_echo")),
        ],
        "hl7" => alloc::vec![
            ("ports", Integer(2575)),
            ("forwarding", s("layer7")),
            ("check_type", s("hl7")),
            ("client_timeout", hour()),
            ("server_timeout", hour()),
        ],
        "xds" => alloc::vec![
            ("ports", Integer(17035)),
            ("forwarding", s("nat")),
            ("check_type", s("connect")),
        ],
        "https" => alloc::vec![
            ("ports", Integer(443)),
            ("forwarding", s("layer7")),
            ("check_type", s("https")),
            ("client_timeout", hour()),
            ("server_timeout", hour()),
        ],
        _ => return None,
    };
    f.push(("persistence_timeout", hour()));
    Some(f)
}

/// Fills each `[[virtual_service]]` that names a preset with the preset's
/// values where the service does not set them itself; whether any did.
fn apply_presets(table: &mut toml::Table) -> Result<bool, LoadError> {
    let Some(toml::Value::Array(services)) = table.get_mut("virtual_service") else {
        return Ok(false);
    };
    let mut any = false;
    for (i, vs) in services.iter_mut().enumerate() {
        let toml::Value::Table(vs) = vs else { continue };
        let Some(preset) = vs.remove("preset") else {
            continue;
        };
        let label = vs
            .get("label")
            .and_then(toml::Value::as_str)
            .map_or_else(|| alloc::format!("#{i}"), String::from);
        let fields = preset.as_str().and_then(preset_fields).ok_or_else(|| {
            LoadError::Parse(alloc::format!(
                "virtual_service[{label}].preset: {} is not one of {}",
                preset.as_str().unwrap_or("(not text)"),
                PRESETS.join(", ")
            ))
        })?;
        for (key, value) in fields {
            vs.entry(key).or_insert(value);
        }
        any = true;
    }
    Ok(any)
}
