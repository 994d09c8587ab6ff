//! Network settings from the kernel command line.
//!
//! The appliance takes its first-boot address from the boot loader's command
//! line: `ip=A.B.C.D/NN gw=A.B.C.D` (static, gateway optional), or `ip=dhcp`.
//! Without `ip=` it uses the factory default of the vendor guide,
//! 192.168.2.21/24. Words the appliance does not know (e.g. `console=`) are
//! ignored, so boot loaders may add their own. A malformed `ip=` or `gw=` is
//! an error that names the parameter and the reason; the caller prints it and
//! falls back to [`FACTORY_DEFAULT`].

use core::fmt;
use core::net::Ipv4Addr;

/// How the appliance gets its IPv4 address on the management NIC (eth0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ipv4Setting {
    /// A fixed address with its prefix length and an optional default gateway.
    Static {
        address: Ipv4Addr,
        prefix_len: u8,
        gateway: Option<Ipv4Addr>,
    },
    /// Lease an address from a DHCP server.
    Dhcp,
}

/// The vendor guide's factory default: 192.168.2.21/24, no gateway.
pub const FACTORY_DEFAULT: Ipv4Setting = Ipv4Setting::Static {
    address: Ipv4Addr::new(192, 168, 2, 21),
    prefix_len: 24,
    gateway: None,
};

impl fmt::Display for Ipv4Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ipv4Setting::Static {
                address,
                prefix_len,
                gateway,
            } => {
                write!(f, "{address}/{prefix_len}")?;
                if let Some(gw) = gateway {
                    write!(f, " gw {gw}")?;
                }
                Ok(())
            }
            Ipv4Setting::Dhcp => f.write_str("dhcp"),
        }
    }
}

/// Why a command-line parameter was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The parameter is present with nothing after `=`.
    Empty,
    /// `ip=` has no `/NN` prefix length.
    MissingPrefix,
    /// The text is not a dotted-quad IPv4 address.
    NotAnAddress,
    /// The prefix length is not a number from 1 to 32.
    BadPrefix,
    /// The address cannot be a host address (0.0.0.0, loopback, multicast,
    /// broadcast, or the network/broadcast address of its subnet).
    NotAHostAddress,
    /// The gateway is not inside the subnet of `ip=`.
    GatewayOutsideSubnet,
    /// `gw=` was given with `ip=dhcp` or without `ip=`.
    GatewayWithoutStaticIp,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Reason::Empty => "no value given",
            Reason::MissingPrefix => "missing /NN prefix length (e.g. ip=10.0.2.15/24)",
            Reason::NotAnAddress => "not an IPv4 address (expected A.B.C.D, each 0-255)",
            Reason::BadPrefix => "prefix length must be a number from 1 to 32",
            Reason::NotAHostAddress => "not usable as a host address",
            Reason::GatewayOutsideSubnet => "gateway is not inside the subnet of ip=",
            Reason::GatewayWithoutStaticIp => "gw= needs a static ip=A.B.C.D/NN",
        })
    }
}

/// A rejected parameter: which one, its value (at most 48 bytes kept), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdlineError {
    /// The parameter name, e.g. `ip` or `gw`.
    pub param: &'static str,
    value: [u8; 48],
    value_len: u8,
    /// Why the value was rejected.
    pub reason: Reason,
}

impl CmdlineError {
    fn new(param: &'static str, value: &str, reason: Reason) -> Self {
        let mut kept = [0u8; 48];
        // Keep a prefix that ends on a character boundary so `value()` stays valid UTF-8.
        let mut len = value.len().min(kept.len());
        while !value.is_char_boundary(len) {
            len -= 1;
        }
        kept[..len].copy_from_slice(&value.as_bytes()[..len]);
        CmdlineError {
            param,
            value: kept,
            value_len: len as u8,
            reason,
        }
    }

    /// The rejected value as given (truncated to 48 bytes).
    pub fn value(&self) -> &str {
        core::str::from_utf8(&self.value[..usize::from(self.value_len)]).unwrap_or("")
    }
}

impl fmt::Display for CmdlineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}: {}", self.param, self.value(), self.reason)
    }
}

/// Reads the network setting from a kernel command line.
///
/// Parameters are separated by ASCII whitespace; when one is repeated the last
/// one counts (as with Linux). Returns [`FACTORY_DEFAULT`] when `ip=` is absent.
pub fn parse(cmdline: &str) -> Result<Ipv4Setting, CmdlineError> {
    let mut ip = None;
    let mut gw = None;
    for word in cmdline.split_ascii_whitespace() {
        if let Some(v) = word.strip_prefix("ip=") {
            ip = Some(v);
        } else if let Some(v) = word.strip_prefix("gw=") {
            gw = Some(v);
        }
    }

    let gateway = match gw {
        None => None,
        Some("") => return Err(CmdlineError::new("gw", "", Reason::Empty)),
        Some(v) => Some(
            v.parse::<Ipv4Addr>()
                .map_err(|_| CmdlineError::new("gw", v, Reason::NotAnAddress))?,
        ),
    };

    let setting = match ip {
        None => {
            if let (Some(v), Some(_)) = (gw, gateway) {
                return Err(CmdlineError::new("gw", v, Reason::GatewayWithoutStaticIp));
            }
            return Ok(FACTORY_DEFAULT);
        }
        Some("") => return Err(CmdlineError::new("ip", "", Reason::Empty)),
        Some("dhcp") => {
            if let Some(v) = gw {
                return Err(CmdlineError::new("gw", v, Reason::GatewayWithoutStaticIp));
            }
            return Ok(Ipv4Setting::Dhcp);
        }
        Some(v) => parse_static(v, gateway)?,
    };
    if let (
        Ipv4Setting::Static {
            gateway: Some(g), ..
        },
        Some(v),
    ) = (setting, gw)
        && !same_subnet(setting, g)
    {
        return Err(CmdlineError::new("gw", v, Reason::GatewayOutsideSubnet));
    }
    Ok(setting)
}

fn parse_static(value: &str, gateway: Option<Ipv4Addr>) -> Result<Ipv4Setting, CmdlineError> {
    let (address, prefix_len) =
        parse_cidr(value).map_err(|reason| CmdlineError::new("ip", value, reason))?;
    Ok(Ipv4Setting::Static {
        address,
        prefix_len,
        gateway,
    })
}

/// `A.B.C.D/NN` as a host address and prefix length (the rules of `ip=`,
/// also used by the console wizard).
pub fn parse_cidr(value: &str) -> Result<(Ipv4Addr, u8), Reason> {
    let (addr, prefix) = value.split_once('/').ok_or(Reason::MissingPrefix)?;
    let address = addr.parse::<Ipv4Addr>().map_err(|_| Reason::NotAnAddress)?;
    // Only plain decimal digits: `u8::from_str` would also take "+24".
    if prefix.is_empty() || prefix.len() > 2 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reason::BadPrefix);
    }
    let prefix_len: u8 = prefix.parse().map_err(|_| Reason::BadPrefix)?;
    if !(1..=32).contains(&prefix_len) {
        return Err(Reason::BadPrefix);
    }
    if !is_host_address(address, prefix_len) {
        return Err(Reason::NotAHostAddress);
    }
    Ok((address, prefix_len))
}

pub(crate) fn mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

/// Whether `address` may be a host's address on a /`prefix_len` subnet.
pub(crate) fn is_host_address(address: Ipv4Addr, prefix_len: u8) -> bool {
    if address.is_unspecified()
        || address.is_loopback()
        || address.is_multicast()
        || address.is_broadcast()
        || address.octets()[0] >= 240
    {
        return false;
    }
    // On /31 and /32 every address is a host address (RFC 3021).
    if prefix_len >= 31 {
        return true;
    }
    let host = u32::from(address) & !mask(prefix_len);
    host != 0 && host != !mask(prefix_len)
}

fn same_subnet(setting: Ipv4Setting, other: Ipv4Addr) -> bool {
    match setting {
        Ipv4Setting::Static {
            address,
            prefix_len,
            ..
        } => {
            let m = mask(prefix_len);
            u32::from(address) & m == u32::from(other) & m
        }
        Ipv4Setting::Dhcp => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::string::ToString;

    fn st(a: [u8; 4], p: u8, gw: Option<[u8; 4]>) -> Ipv4Setting {
        Ipv4Setting::Static {
            address: Ipv4Addr::from(a),
            prefix_len: p,
            gateway: gw.map(Ipv4Addr::from),
        }
    }

    fn reason(cmdline: &str) -> (&'static str, Reason) {
        let e = parse(cmdline).unwrap_err();
        (e.param, e.reason)
    }

    #[test]
    fn static_with_gateway() {
        assert_eq!(
            parse("ip=10.0.2.15/24 gw=10.0.2.2"),
            Ok(st([10, 0, 2, 15], 24, Some([10, 0, 2, 2])))
        );
    }

    #[test]
    fn static_without_gateway_has_no_default_route() {
        assert_eq!(parse("ip=10.77.0.2/24"), Ok(st([10, 77, 0, 2], 24, None)));
    }

    #[test]
    fn dhcp() {
        assert_eq!(parse("ip=dhcp"), Ok(Ipv4Setting::Dhcp));
    }

    #[test]
    fn absent_or_empty_cmdline_is_factory_default() {
        assert_eq!(parse(""), Ok(FACTORY_DEFAULT));
        assert_eq!(parse("   "), Ok(FACTORY_DEFAULT));
        assert_eq!(parse("console=ttyS0 quiet"), Ok(FACTORY_DEFAULT));
        assert_eq!(FACTORY_DEFAULT.to_string(), "192.168.2.21/24");
    }

    #[test]
    fn unknown_words_are_ignored_and_last_ip_wins() {
        assert_eq!(
            parse("/boot/kernel.elf ip=1.2.3.4/8 foo ip=10.0.0.5/16\tgw=10.0.0.1"),
            Ok(st([10, 0, 0, 5], 16, Some([10, 0, 0, 1])))
        );
    }

    #[test]
    fn bad_octet_is_rejected_before_prefix() {
        assert_eq!(reason("ip=999.1.1.1/40"), ("ip", Reason::NotAnAddress));
        let e = parse("ip=999.1.1.1/40").unwrap_err();
        assert_eq!(
            e.to_string(),
            "ip=999.1.1.1/40: not an IPv4 address (expected A.B.C.D, each 0-255)"
        );
    }

    #[test]
    fn prefix_out_of_range() {
        assert_eq!(reason("ip=10.0.0.2/33"), ("ip", Reason::BadPrefix));
        assert_eq!(reason("ip=10.0.0.2/0"), ("ip", Reason::BadPrefix));
        assert_eq!(reason("ip=10.0.0.2/"), ("ip", Reason::BadPrefix));
        assert_eq!(reason("ip=10.0.0.2/+8"), ("ip", Reason::BadPrefix));
        assert_eq!(reason("ip=10.0.0.2/024"), ("ip", Reason::BadPrefix));
        assert_eq!(reason("ip=10.0.0.2/x"), ("ip", Reason::BadPrefix));
        assert_eq!(parse("ip=10.0.0.2/32"), Ok(st([10, 0, 0, 2], 32, None)));
    }

    #[test]
    fn missing_prefix_empty_and_garbage() {
        assert_eq!(reason("ip=10.0.0.2"), ("ip", Reason::MissingPrefix));
        assert_eq!(reason("ip="), ("ip", Reason::Empty));
        assert_eq!(reason("ip=garbage"), ("ip", Reason::MissingPrefix));
        assert_eq!(reason("ip=a.b.c.d/24"), ("ip", Reason::NotAnAddress));
        assert_eq!(reason("ip=1.2.3/24"), ("ip", Reason::NotAnAddress));
        assert_eq!(reason("ip=1.2.3.4.5/24"), ("ip", Reason::NotAnAddress));
        assert_eq!(reason("ip=//"), ("ip", Reason::NotAnAddress));
        assert_eq!(reason("ip=DHCP"), ("ip", Reason::MissingPrefix));
    }

    #[test]
    fn non_host_addresses() {
        for bad in [
            "ip=0.0.0.0/8",
            "ip=127.0.0.1/8",
            "ip=224.0.0.1/4",
            "ip=255.255.255.255/32",
            "ip=10.0.0.0/24",
            "ip=10.0.0.255/24",
            "ip=240.0.0.1/8",
        ] {
            assert_eq!(reason(bad), ("ip", Reason::NotAHostAddress), "{bad}");
        }
        assert_eq!(parse("ip=10.0.0.0/31"), Ok(st([10, 0, 0, 0], 31, None)));
    }

    #[test]
    fn gateway_errors() {
        assert_eq!(reason("ip=10.0.2.15/24 gw="), ("gw", Reason::Empty));
        assert_eq!(
            reason("ip=10.0.2.15/24 gw=10.0.2"),
            ("gw", Reason::NotAnAddress)
        );
        assert_eq!(
            reason("ip=10.0.2.15/24 gw=10.0.3.1"),
            ("gw", Reason::GatewayOutsideSubnet)
        );
        assert_eq!(
            reason("ip=dhcp gw=10.0.2.2"),
            ("gw", Reason::GatewayWithoutStaticIp)
        );
        assert_eq!(
            reason("gw=10.0.2.2"),
            ("gw", Reason::GatewayWithoutStaticIp)
        );
    }

    #[test]
    fn long_or_non_ascii_values_are_truncated_safely() {
        let long = "ip=".to_string() + &"é".repeat(40);
        let e = parse(&long).unwrap_err();
        assert!(e.value().len() <= 48);
        assert!(e.value().chars().all(|c| c == 'é'));
    }
}
