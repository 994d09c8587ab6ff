//! Field types whose human (TOML) spelling differs from their wire
//! (postcard) spelling. Postcard is not self-describing, so the flexible
//! forms are only accepted when the format says it is human readable.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Deref;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::time::Duration;

/// The ports of a virtual service. TOML accepts `"104,11112"`,
/// `[104, 11112]` or `104`; the wire form is a sequence of `u16`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ports(pub Vec<u16>);

impl Deref for Ports {
    type Target = [u16];
    fn deref(&self) -> &[u16] {
        &self.0
    }
}

impl From<Vec<u16>> for Ports {
    fn from(v: Vec<u16>) -> Self {
        Ports(v)
    }
}

impl fmt::Display for Ports {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl Serialize for Ports {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Ports {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(PortsVisitor)
        } else {
            Vec::<u16>::deserialize(d).map(Ports)
        }
    }
}

struct PortsVisitor;

fn port_from_i64<E: de::Error>(v: i64) -> Result<u16, E> {
    u16::try_from(v).map_err(|_| E::custom(format_args!("port {v} is outside 0..=65535")))
}

impl<'de> Visitor<'de> for PortsVisitor {
    type Value = Ports;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a port, a list of ports, or a string such as \"104,11112\"")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ports, E> {
        Ok(Ports(alloc::vec![port_from_i64(v)?]))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ports, E> {
        let p = u16::try_from(v)
            .map_err(|_| E::custom(format_args!("port {v} is outside 0..=65535")))?;
        Ok(Ports(alloc::vec![p]))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Ports, E> {
        let mut out = Vec::new();
        for part in v.split(',') {
            let part = part.trim();
            let p: u16 = part
                .parse()
                .map_err(|_| E::custom(format_args!("`{part}` is not a port number")))?;
            out.push(p);
        }
        Ok(Ports(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Ports, A::Error> {
        let mut out = Vec::new();
        while let Some(p) = seq.next_element::<i64>()? {
            out.push(port_from_i64(p)?);
            if out.len() > super::MAX_PORTS * 4 {
                return Err(de::Error::custom("too many ports"));
            }
        }
        Ok(Ports(out))
    }
}

/// Where a virtual service sends new connections while none of its real
/// servers is up. TOML: `fallback = { ip = "10.1.1.9", port = 80 }`
/// (`port` optional: the port the client used), `fallback = "local"`
/// (the appliance refuses with a reset) or `fallback = { page = "..." }`
/// (the appliance answers HTTP itself: 503 with this page).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    Server {
        ip: core::net::Ipv4Addr,
        port: Option<u16>,
    },
    Local,
    /// The body of the maintenance page (HTML), at most [`MAX_FALLBACK_PAGE`]
    /// bytes. Last variant, so configs stored before it decode unchanged.
    Page(String),
}

/// Most bytes of a `fallback = { page = ... }` body: the answer goes out
/// in a few segments at once, well inside any client's first window.
pub const MAX_FALLBACK_PAGE: usize = 4096;

impl<'de> Deserialize<'de> for FallbackTomlOrWire {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if !d.is_human_readable() {
            return Fallback::deserialize(d).map(FallbackTomlOrWire);
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(default)]
            ip: Option<core::net::Ipv4Addr>,
            #[serde(default)]
            port: Option<u16>,
            #[serde(default)]
            page: Option<String>,
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fallback;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "\"local\", a table { ip = \"A.B.C.D\", port = N } or { page = \"<html>...\" }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Fallback, E> {
                if v == "local" {
                    Ok(Fallback::Local)
                } else {
                    Err(E::custom(format_args!(
                        "unknown fallback `{v}`: use \"local\", {{ ip = ..., port = ... }} or {{ page = ... }}"
                    )))
                }
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Fallback, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match (t.ip, t.port, t.page) {
                    (Some(ip), port, None) => Ok(Fallback::Server { ip, port }),
                    (None, None, Some(page)) => Ok(Fallback::Page(page)),
                    _ => Err(de::Error::custom(
                        "a fallback is either { ip = ..., port = ... } or { page = ... }",
                    )),
                }
            }
        }
        d.deserialize_any(V).map(FallbackTomlOrWire)
    }
}

/// [`Fallback`] read from TOML (flexible) or postcard (the enum).
pub(crate) struct FallbackTomlOrWire(pub Fallback);

pub(crate) mod fallback {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<Fallback>, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct PageTable<'a> {
            page: &'a str,
        }
        #[derive(Serialize)]
        struct Table {
            ip: core::net::Ipv4Addr,
            #[serde(skip_serializing_if = "Option::is_none")]
            port: Option<u16>,
        }
        if s.is_human_readable() {
            match v {
                None => s.serialize_none(),
                Some(Fallback::Local) => s.serialize_some("local"),
                Some(Fallback::Page(page)) => s.serialize_some(&PageTable { page }),
                Some(Fallback::Server { ip, port }) => s.serialize_some(&Table {
                    ip: *ip,
                    port: *port,
                }),
            }
        } else {
            v.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Fallback>, D::Error> {
        Option::<FallbackTomlOrWire>::deserialize(d).map(|o| o.map(|f| f.0))
    }
}

/// A timeout or interval in whole seconds. TOML accepts `3600` or a string
/// with a unit: `"3600s"`, `"60m"`, `"1h"`, `"1d"`; the wire form is `u32`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Secs(pub u32);

impl Secs {
    pub const fn duration(self) -> Duration {
        Duration::from_secs(self.0 as u64)
    }
}

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0)
    }
}

impl Serialize for Secs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            d.deserialize_any(SecsVisitor)
        } else {
            u32::deserialize(d).map(Secs)
        }
    }
}

struct SecsVisitor;

impl<'de> Visitor<'de> for SecsVisitor {
    type Value = Secs;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("seconds, or a string such as \"3600\", \"60m\", \"1h\"")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Secs, E> {
        u32::try_from(v)
            .map(Secs)
            .map_err(|_| E::custom(format_args!("{v} seconds is out of range")))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Secs, E> {
        u32::try_from(v)
            .map(Secs)
            .map_err(|_| E::custom(format_args!("{v} seconds is out of range")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Secs, E> {
        parse_secs(v).ok_or_else(|| {
            E::custom(format_args!(
                "`{v}` is not a duration (use seconds or a unit: s, m, h, d)"
            ))
        })
    }
}

/// `"90"`, `"90s"`, `"15m"`, `"1h"`, `"2d"` → seconds.
pub(crate) fn parse_secs(v: &str) -> Option<Secs> {
    let v = v.trim();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&v[..i], v[i..].trim()),
        None => (v, ""),
    };
    let n: u32 = digits.parse().ok()?;
    let mul = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mul).map(Secs)
}

/// `Protocol` as `"tcp"`/`"TCP"` in TOML, as the enum index on the wire.
pub(crate) mod protocol {
    use super::*;
    use crate::flow::Protocol;

    pub fn serialize<S: Serializer>(p: &Protocol, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(match p {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            })
        } else {
            p.serialize(s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Protocol, D::Error> {
        if !d.is_human_readable() {
            return Protocol::deserialize(d);
        }
        struct V;
        impl Visitor<'_> for V {
            type Value = Protocol;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"tcp\" or \"udp\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Protocol, E> {
                if v.eq_ignore_ascii_case("tcp") {
                    Ok(Protocol::Tcp)
                } else if v.eq_ignore_ascii_case("udp") {
                    Ok(Protocol::Udp)
                } else {
                    Err(E::custom(format_args!(
                        "unknown protocol `{v}`, expected \"tcp\" or \"udp\""
                    )))
                }
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_secs("3600"), Some(Secs(3600)));
        assert_eq!(parse_secs("45s"), Some(Secs(45)));
        assert_eq!(parse_secs("60m"), Some(Secs(3600)));
        assert_eq!(parse_secs("1h"), Some(Secs(3600)));
        assert_eq!(parse_secs("2d"), Some(Secs(172_800)));
        assert_eq!(parse_secs("1 h"), Some(Secs(3600)));
        assert_eq!(parse_secs("h"), None);
        assert_eq!(parse_secs("1w"), None);
        assert_eq!(parse_secs("-1"), None);
        assert_eq!(parse_secs("99999999d"), None);
    }

    #[test]
    fn ports_display() {
        assert_eq!(
            alloc::format!("{}", Ports(alloc::vec![104, 11112])),
            "104,11112"
        );
    }
}
