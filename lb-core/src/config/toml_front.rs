//! The human front end: a TOML file whose field names follow the guide.
//! Host-side only (the host tool compiles it to the postcard envelope).

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
    toml::from_str(text).map_err(|e| LoadError::Parse(alloc::string::ToString::to_string(&e)))
}
