//! Validation of a whole configuration. Every problem is reported (not just
//! the first), each with the path of the field and the reason, e.g.
//! `virtual_service[DICOM-Modalities].real_server[DICOM1].port: DR real
//! servers must use the virtual service's port (104), got 11113`.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::Ipv4Addr;

use super::*;

/// What is wrong, for callers (and tests) that act on the kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// More items than the documented bound.
    TooMany,
    /// A list that must not be empty is (ports, real servers).
    Empty,
    /// A label or name is empty, too long or has characters outside
    /// `A-Z a-z 0-9 . _ -`.
    BadLabel,
    /// Two items share a label or name.
    DuplicateLabel,
    /// Two virtual services share VIP, port and protocol.
    DuplicateVip,
    /// Two real servers of one service share address and port.
    DuplicateRealServer,
    /// An address that cannot be used here (0.0.0.0, broadcast, multicast,
    /// loopback, the VIP itself as a real server).
    BadAddress,
    /// A port of 0, or a port twice in one list.
    BadPort,
    /// A DR real server with a port other than the service's.
    DrPortMismatch,
    /// A real server port on a multi-port NAT/SNAT/layer 7 service.
    PortOnMultiPortService,
    /// A NAT service without an internal interface.
    NatWithoutInternalNetwork,
    /// Layer 7 on a UDP service.
    Layer7NeedsTcp,
    /// A weight outside 0..=65535.
    WeightOutOfRange,
    /// A zero timeout or interval, or a check timeout longer than its
    /// interval.
    BadTimeout,
    /// check_rise or check_fall of zero.
    BadRiseFall,
    /// A netmask whose ones are not contiguous.
    BadNetmask,
    /// Persistence netmask without persistence.
    NetmaskWithoutPersistence,
    /// min/max connections that contradict each other.
    BadConnectionLimits,
    /// A check setting that the check type does not use, or a bad value
    /// for one (AE title, HTTP path, HL7 message).
    BadCheck,
    /// Interface addressing: static without address/prefix, DHCP with an
    /// address, prefix over 32.
    BadInterface,
    /// A table capacity of zero or over its bound.
    BadCapacity,
    /// A `[management]` setting: an allow entry that is not a prefix, a
    /// key that is not an Ed25519 public key, an address that is not the
    /// appliance's, a syslog destination that cannot be used.
    BadManagement,
    /// A layer 7 setting out of range, or set on a layer 4 service.
    BadLayer7Option,
    /// An `[ha]` setting (see [`super::ha`]).
    BadHa,
    /// A protocol-aware route (AE title or HL7) that cannot match or names
    /// no real server of its service.
    BadRoute,
    /// `outbound_snat` on a service that is not NAT, or a real server in
    /// two services whose outbound SNAT would give it two sources.
    BadOutboundSnat,
}

/// One problem found in a configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    /// e.g. `virtual_service[HL7].real_server[HL71].weight`.
    pub path: String,
    pub kind: ErrorKind,
    /// Human-readable reason.
    pub message: String,
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

pub(super) struct Errors(Vec<ValidationError>);

impl Errors {
    pub(super) fn push(
        &mut self,
        path: impl Into<String>,
        kind: ErrorKind,
        message: impl Into<String>,
    ) {
        self.0.push(ValidationError {
            path: path.into(),
            kind,
            message: message.into(),
        });
    }
}

/// Checks everything; `Err` holds every problem found, in document order.
pub fn validate(config: &Config) -> Result<(), Vec<ValidationError>> {
    let mut errs = Errors(Vec::new());
    check_network(&config.network, &mut errs);
    check_l4(&config.l4, &mut errs);
    check_management(config, &mut errs);
    check_l7(&config.l7, &mut errs);
    super::ha::check(config, &mut errs);
    let own: Vec<Ipv4Addr> = config
        .network
        .interfaces
        .iter()
        .filter_map(|i| i.address)
        .collect();
    let has_internal = config
        .network
        .interfaces
        .iter()
        .any(|i| i.role == InterfaceRole::Internal);

    if config.virtual_services.len() > MAX_VIRTUAL_SERVICES {
        errs.push(
            "virtual_service",
            ErrorKind::TooMany,
            format!(
                "{} virtual services, at most {MAX_VIRTUAL_SERVICES} are supported",
                config.virtual_services.len()
            ),
        );
    }
    // (vip, port, protocol) -> label of the first service that claimed it.
    let mut claimed: BTreeMap<(Ipv4Addr, u16, Protocol), (usize, &str)> = BTreeMap::new();
    let mut labels: BTreeMap<&str, ()> = BTreeMap::new();
    // Real server -> the VIP its own connections leave from.
    let mut outbound: BTreeMap<Ipv4Addr, (Ipv4Addr, &str)> = BTreeMap::new();
    for (i, vs) in config.virtual_services.iter().enumerate() {
        let path = item_path("virtual_service", &vs.label, i);
        if !vs.label.is_empty() && labels.insert(&vs.label, ()).is_some() {
            errs.push(
                format!("{path}.label"),
                ErrorKind::DuplicateLabel,
                format!("another virtual service is already labelled `{}`", vs.label),
            );
        }
        for &port in vs.ports.iter() {
            if port == 0 {
                continue; // reported by check_service
            }
            if let Some((other_index, other)) =
                claimed.insert((vs.vip, port, vs.protocol), (i, &vs.label))
                && other_index != i
            {
                errs.push(
                    format!("{path}.ports"),
                    ErrorKind::DuplicateVip,
                    format!(
                        "{}:{port}/{} is already used by virtual service `{other}`",
                        vs.vip,
                        proto_name(vs.protocol)
                    ),
                );
            }
        }
        check_service(vs, &path, has_internal, &own, &mut errs);
        if vs.outbound_snat && vs.forwarding == Forwarding::Nat {
            for rs in &vs.real_servers {
                match outbound.insert(rs.ip, (vs.vip, &vs.label)) {
                    Some((vip, other)) if vip != vs.vip => errs.push(
                        format!("{path}.outbound_snat"),
                        ErrorKind::BadOutboundSnat,
                        format!(
                            "real server {} also sends from {vip} (outbound_snat of `{other}`): its own connections can have one source only",
                            rs.ip
                        ),
                    ),
                    _ => {}
                }
            }
        }
    }
    if errs.0.is_empty() {
        Ok(())
    } else {
        Err(errs.0)
    }
}

fn proto_name(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// `name[label]`, or `name[#index]` when the label is empty.
fn item_path(name: &str, label: &str, index: usize) -> String {
    if label.is_empty() {
        format!("{name}[#{index}]")
    } else {
        format!("{name}[{label}]")
    }
}

fn check_label(label: &str, path: &str, what: &str, errs: &mut Errors) {
    let path = format!("{path}.{what}");
    if label.is_empty() {
        errs.push(path, ErrorKind::BadLabel, "must not be empty");
    } else if label.len() > MAX_LABEL_LEN {
        errs.push(
            path,
            ErrorKind::BadLabel,
            format!("{} bytes long, at most {MAX_LABEL_LEN}", label.len()),
        );
    } else if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        errs.push(
            path,
            ErrorKind::BadLabel,
            "only letters, digits, '.', '_' and '-' are allowed",
        );
    }
}

fn unusable_address(a: Ipv4Addr) -> Option<&'static str> {
    if a.is_unspecified() {
        Some("0.0.0.0 is not a usable address")
    } else if a.is_broadcast() {
        Some("the broadcast address is not usable")
    } else if a.is_multicast() {
        Some("a multicast address is not usable")
    } else if a.is_loopback() {
        Some("a loopback address is not usable")
    } else {
        None
    }
}

/// Whether the ones of `mask` are contiguous from the top.
pub(crate) fn is_contiguous_mask(mask: Ipv4Addr) -> bool {
    let m = u32::from(mask);
    m.leading_ones() + m.trailing_zeros() == 32
}

fn check_nonzero(secs: Secs, path: String, errs: &mut Errors) {
    if secs.0 == 0 {
        errs.push(path, ErrorKind::BadTimeout, "must be greater than zero");
    }
}

fn check_network(net: &Network, errs: &mut Errors) {
    let h = &net.hostname;
    if h.is_empty()
        || h.len() > 63
        || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        || h.starts_with('-')
        || h.ends_with('-')
    {
        errs.push(
            "network.hostname",
            ErrorKind::BadLabel,
            "a hostname is 1..=63 letters, digits or '-', not starting or ending with '-'",
        );
    }
    if net.interfaces.len() > MAX_INTERFACES {
        errs.push(
            "network.interface",
            ErrorKind::TooMany,
            format!("at most {MAX_INTERFACES} interfaces are supported"),
        );
    }
    let mut names: BTreeMap<&str, ()> = BTreeMap::new();
    for (i, itf) in net.interfaces.iter().enumerate() {
        let path = item_path("network.interface", &itf.name, i);
        check_label(&itf.name, &path, "name", errs);
        if !itf.name.is_empty() && names.insert(&itf.name, ()).is_some() {
            errs.push(
                format!("{path}.name"),
                ErrorKind::DuplicateLabel,
                "another interface has this name",
            );
        }
        if itf.dhcp {
            if itf.address.is_some() || itf.prefix.is_some() {
                errs.push(
                    format!("{path}.address"),
                    ErrorKind::BadInterface,
                    "set either dhcp = true or a static address and prefix, not both",
                );
            }
        } else {
            match itf.address {
                None => errs.push(
                    format!("{path}.address"),
                    ErrorKind::BadInterface,
                    "a static interface needs an address (or set dhcp = true)",
                ),
                Some(a) => {
                    if let Some(why) = unusable_address(a) {
                        errs.push(format!("{path}.address"), ErrorKind::BadAddress, why);
                    }
                }
            }
            match itf.prefix {
                None => errs.push(
                    format!("{path}.prefix"),
                    ErrorKind::BadInterface,
                    "a static interface needs a prefix length, e.g. 24",
                ),
                Some(p) if p > 32 => errs.push(
                    format!("{path}.prefix"),
                    ErrorKind::BadInterface,
                    format!("prefix length {p} is over 32"),
                ),
                Some(_) => {}
            }
        }
    }
    if let Some(gw) = net.gateway {
        if let Some(why) = unusable_address(gw) {
            errs.push("network.gateway", ErrorKind::BadAddress, why);
        } else {
            // Reachable only on a connected subnet. With a DHCP interface
            // the subnet is not known here.
            let statics: Vec<(u32, u8)> = net
                .interfaces
                .iter()
                .filter_map(|i| Some((u32::from(i.address?), i.prefix?)))
                .filter(|(_, p)| *p <= 32)
                .collect();
            let any_dhcp = net.interfaces.iter().any(|i| i.dhcp);
            let on_subnet = statics.iter().any(|&(a, p)| {
                let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                a & m == u32::from(gw) & m
            });
            if !statics.is_empty() && !any_dhcp && !on_subnet {
                errs.push(
                    "network.gateway",
                    ErrorKind::BadAddress,
                    format!("{gw} is not on the subnet of any interface"),
                );
            }
        }
    }
    if net.dns.len() > MAX_DNS {
        errs.push(
            "network.dns",
            ErrorKind::TooMany,
            format!("at most {MAX_DNS} DNS servers are supported"),
        );
    }
    for (i, d) in net.dns.iter().enumerate() {
        if let Some(why) = unusable_address(*d) {
            errs.push(format!("network.dns[{i}]"), ErrorKind::BadAddress, why);
        }
    }
    if let Some(h) = &net.management_password_hash
        && (h.is_empty() || h.len() > 256)
    {
        errs.push(
            "network.management_password_hash",
            ErrorKind::BadLabel,
            "must be 1..=256 bytes (or unset)",
        );
    }
}

fn check_l4(l4: &L4Settings, errs: &mut Errors) {
    for (name, v) in [
        ("tcp_handshake_timeout", l4.tcp_handshake_timeout),
        ("tcp_established_timeout", l4.tcp_established_timeout),
        ("tcp_closing_timeout", l4.tcp_closing_timeout),
        ("tcp_reset_timeout", l4.tcp_reset_timeout),
        ("udp_timeout", l4.udp_timeout),
    ] {
        check_nonzero(v, format!("l4.{name}"), errs);
    }
    for (name, v, max) in [
        (
            "conntrack_capacity",
            l4.conntrack_capacity,
            MAX_CONNTRACK_CAPACITY,
        ),
        (
            "persistence_capacity",
            l4.persistence_capacity,
            MAX_PERSISTENCE_CAPACITY,
        ),
    ] {
        if v == 0 || v > max {
            errs.push(
                format!("l4.{name}"),
                ErrorKind::BadCapacity,
                format!("must be 1..={max}, got {v}"),
            );
        }
    }
}

fn check_l7(l7: &L7Settings, errs: &mut Errors) {
    if l7.capacity == 0 || l7.capacity > MAX_L7_CAPACITY {
        errs.push(
            "l7.capacity",
            ErrorKind::BadCapacity,
            format!("must be 1..={MAX_L7_CAPACITY}, got {}", l7.capacity),
        );
    }
    if l7.half_open > l7.capacity {
        errs.push(
            "l7.half_open",
            ErrorKind::BadCapacity,
            format!(
                "at most l7.capacity ({}), got {}",
                l7.capacity, l7.half_open
            ),
        );
    }
    if l7.hold_bytes > 64 * 1024 * 1024 {
        errs.push(
            "l7.hold_bytes",
            ErrorKind::BadCapacity,
            format!("at most 64 MiB, got {}", l7.hold_bytes),
        );
    }
}

fn check_service(
    vs: &VirtualService,
    path: &str,
    has_internal: bool,
    own: &[Ipv4Addr],
    errs: &mut Errors,
) {
    check_label(&vs.label, path, "label", errs);
    if let Some(why) = unusable_address(vs.vip) {
        errs.push(format!("{path}.vip"), ErrorKind::BadAddress, why);
    } else if own.contains(&vs.vip) {
        errs.push(
            format!("{path}.vip"),
            ErrorKind::BadAddress,
            format!(
                "{} is the appliance's own interface address; a VIP needs its own address",
                vs.vip
            ),
        );
    }

    // Ports.
    if vs.ports.is_empty() {
        errs.push(
            format!("{path}.ports"),
            ErrorKind::Empty,
            "at least one port is needed",
        );
    } else if vs.ports.len() > MAX_PORTS {
        errs.push(
            format!("{path}.ports"),
            ErrorKind::TooMany,
            format!("{} ports, at most {MAX_PORTS}", vs.ports.len()),
        );
    }
    for (i, &p) in vs.ports.iter().enumerate() {
        if p == 0 {
            errs.push(
                format!("{path}.ports"),
                ErrorKind::BadPort,
                "port 0 is not usable",
            );
        } else if vs.ports[..i].contains(&p) {
            errs.push(
                format!("{path}.ports"),
                ErrorKind::BadPort,
                format!("port {p} is listed twice"),
            );
        }
    }

    // Forwarding.
    if vs.forwarding == Forwarding::Nat && !has_internal {
        errs.push(
            format!("{path}.forwarding"),
            ErrorKind::NatWithoutInternalNetwork,
            "NAT mode needs an internal network: add a [[network.interface]] with role = \"internal\" for the real servers' subnet",
        );
    }
    if vs.forwarding == Forwarding::Layer7 && vs.protocol == Protocol::Udp {
        errs.push(
            format!("{path}.protocol"),
            ErrorKind::Layer7NeedsTcp,
            "layer 7 is a TCP proxy; use protocol = \"tcp\" or a layer 4 forwarding method",
        );
    }

    // Persistence.
    if let Some(t) = vs.persistence_timeout {
        check_nonzero(t, format!("{path}.persistence_timeout"), errs);
    }
    if let Some(mask) = vs.persistence_netmask {
        if !is_contiguous_mask(mask) || mask.is_unspecified() {
            errs.push(
                format!("{path}.persistence_netmask"),
                ErrorKind::BadNetmask,
                format!("{mask} is not a netmask (contiguous ones, at least /1)"),
            );
        }
        if vs.persistence_timeout.is_none() {
            errs.push(
                format!("{path}.persistence_netmask"),
                ErrorKind::NetmaskWithoutPersistence,
                "has no effect without persistence_timeout",
            );
        }
    }

    // Health check.
    check_health(vs, path, errs);
    check_tls(vs, path, errs);
    check_fallback(vs, path, own, errs);

    // Layer 7 timeouts and options.
    check_nonzero(vs.client_timeout, format!("{path}.client_timeout"), errs);
    check_nonzero(vs.server_timeout, format!("{path}.server_timeout"), errs);
    check_nonzero(vs.connect_timeout, format!("{path}.connect_timeout"), errs);
    if vs.retries > MAX_RETRIES {
        errs.push(
            format!("{path}.retries"),
            ErrorKind::BadLayer7Option,
            format!("at most {MAX_RETRIES}, got {}", vs.retries),
        );
    }
    if vs.forwarding != Forwarding::Layer7 {
        if vs.l7_transparent {
            errs.push(
                format!("{path}.l7_transparent"),
                ErrorKind::BadLayer7Option,
                "only layer 7 services proxy connections; NAT and DR are already transparent",
            );
        }
        for rs in &vs.real_servers {
            if rs.send_proxy != SendProxy::None {
                errs.push(
                    format!("{path}.real_server[{}].send_proxy", rs.label),
                    ErrorKind::BadLayer7Option,
                    "the PROXY protocol needs forwarding = \"layer7\"",
                );
            }
        }
    }

    if vs.outbound_snat && vs.forwarding != Forwarding::Nat {
        errs.push(
            format!("{path}.outbound_snat"),
            ErrorKind::BadOutboundSnat,
            "only NAT services route their real servers' own connections through the appliance",
        );
    }

    check_awareness(vs, path, errs);

    // Real servers.
    if vs.real_servers.is_empty() {
        errs.push(
            format!("{path}.real_server"),
            ErrorKind::Empty,
            "a virtual service needs at least one real server",
        );
    } else if vs.real_servers.len() > MAX_REAL_SERVERS {
        errs.push(
            format!("{path}.real_server"),
            ErrorKind::TooMany,
            format!(
                "{} real servers, at most {MAX_REAL_SERVERS}",
                vs.real_servers.len()
            ),
        );
    }
    let mut labels: BTreeMap<&str, ()> = BTreeMap::new();
    let mut endpoints: BTreeMap<(Ipv4Addr, Option<u16>), &str> = BTreeMap::new();
    for (j, rs) in vs.real_servers.iter().enumerate() {
        let rpath = format!("{path}.{}", item_path("real_server", &rs.label, j));
        check_label(&rs.label, &rpath, "label", errs);
        if !rs.label.is_empty() && labels.insert(&rs.label, ()).is_some() {
            errs.push(
                format!("{rpath}.label"),
                ErrorKind::DuplicateLabel,
                "another real server of this service has this label",
            );
        }
        if let Some(why) = unusable_address(rs.ip) {
            errs.push(format!("{rpath}.ip"), ErrorKind::BadAddress, why);
        } else if own.contains(&rs.ip) {
            errs.push(
                format!("{rpath}.ip"),
                ErrorKind::BadAddress,
                "this is the appliance's own interface address",
            );
        } else if rs.ip == vs.vip {
            errs.push(
                format!("{rpath}.ip"),
                ErrorKind::BadAddress,
                "a real server needs its own address (RIP), not the VIP",
            );
        } else if let Some(other) = endpoints.insert((rs.ip, rs.port), &rs.label) {
            errs.push(
                format!("{rpath}.ip"),
                ErrorKind::DuplicateRealServer,
                format!("same address and port as real server `{other}`"),
            );
        }
        check_real_server_port(vs, rs, &rpath, errs);
        for (name, port) in [("check_port", rs.check_port), ("agent_port", rs.agent_port)] {
            if port == Some(0) {
                errs.push(
                    format!("{rpath}.{name}"),
                    ErrorKind::BadPort,
                    "port 0 is not usable",
                );
            }
        }
        if rs.check_port.is_some()
            && matches!(
                vs.check_type,
                CheckType::Ping | CheckType::None | CheckType::Off
            )
        {
            errs.push(
                format!("{rpath}.check_port"),
                ErrorKind::BadCheck,
                "check_type ping, none and off use no port",
            );
        }
        if rs.weight > MAX_WEIGHT {
            errs.push(
                format!("{rpath}.weight"),
                ErrorKind::WeightOutOfRange,
                format!("must be 0..={MAX_WEIGHT}, got {}", rs.weight),
            );
        }
        if rs.max_connections > 0 && rs.min_connections > rs.max_connections {
            errs.push(
                format!("{rpath}.min_connections"),
                ErrorKind::BadConnectionLimits,
                format!(
                    "{} is above max_connections ({})",
                    rs.min_connections, rs.max_connections
                ),
            );
        }
        if rs.max_connections == 0 && rs.min_connections > 0 {
            errs.push(
                format!("{rpath}.min_connections"),
                ErrorKind::BadConnectionLimits,
                "only has an effect together with max_connections",
            );
        }
    }
}

fn check_real_server_port(vs: &VirtualService, rs: &RealServer, rpath: &str, errs: &mut Errors) {
    let Some(port) = rs.port else { return };
    let path = format!("{rpath}.port");
    if port == 0 {
        errs.push(path, ErrorKind::BadPort, "port 0 is not usable");
        return;
    }
    let Some(&first) = vs.ports.first() else {
        return;
    };
    match vs.forwarding {
        // DR only rewrites MAC addresses: the real server sees the port the
        // client used, so any other port would silently never be reached.
        Forwarding::Dr if port != first => errs.push(
            path,
            ErrorKind::DrPortMismatch,
            format!("DR real servers must use the virtual service's port ({first}), got {port}"),
        ),
        Forwarding::Dr => {}
        _ if vs.ports.len() > 1 => errs.push(
            path,
            ErrorKind::PortOnMultiPortService,
            format!(
                "a multi-port service ({}) forwards each port unchanged; leave port unset",
                vs.ports
            ),
        ),
        _ => {}
    }
}

fn check_health(vs: &VirtualService, path: &str, errs: &mut Errors) {
    if vs.check_port == Some(0) {
        errs.push(
            format!("{path}.check_port"),
            ErrorKind::BadPort,
            "port 0 is not usable (leave unset for the first service port)",
        );
    }
    if !matches!(vs.check_type, CheckType::None | CheckType::Off) {
        check_nonzero(vs.check_interval, format!("{path}.check_interval"), errs);
        check_nonzero(vs.check_timeout, format!("{path}.check_timeout"), errs);
        if vs.check_timeout > vs.check_interval && vs.check_interval.0 > 0 {
            errs.push(
                format!("{path}.check_timeout"),
                ErrorKind::BadTimeout,
                format!(
                    "{} is longer than check_interval ({})",
                    vs.check_timeout, vs.check_interval
                ),
            );
        }
        for (name, v) in [("check_rise", vs.check_rise), ("check_fall", vs.check_fall)] {
            if v == 0 {
                errs.push(
                    format!("{path}.{name}"),
                    ErrorKind::BadRiseFall,
                    "must be at least 1",
                );
            }
        }
    }
    let http = matches!(vs.check_type, CheckType::Http | CheckType::Https);
    let dicom = vs.check_type == CheckType::DicomEcho;
    let hl7 = vs.check_type == CheckType::Hl7;
    let unused = |set: bool, used: bool, name: &str, for_type: &str, errs: &mut Errors| {
        if set && !used {
            errs.push(
                format!("{path}.{name}"),
                ErrorKind::BadCheck,
                format!("only used by check_type {for_type}"),
            );
        }
    };
    unused(
        vs.check_request.is_some(),
        http,
        "check_request",
        "http/https",
        errs,
    );
    unused(
        vs.check_expect.is_some(),
        http,
        "check_expect",
        "http/https",
        errs,
    );
    unused(
        vs.check_calling_ae.is_some(),
        dicom,
        "check_calling_ae",
        "dicom_echo",
        errs,
    );
    unused(
        vs.check_called_ae.is_some(),
        dicom,
        "check_called_ae",
        "dicom_echo",
        errs,
    );
    unused(
        vs.check_hl7_message.is_some(),
        hl7,
        "check_hl7_message",
        "hl7",
        errs,
    );
    unused(
        vs.check_hl7_control_id_prefix.is_some(),
        hl7,
        "check_hl7_control_id_prefix",
        "hl7",
        errs,
    );
    if let Some(prefix) = &vs.check_hl7_control_id_prefix
        && (prefix.is_empty()
            || prefix.len() > MAX_HL7_PREFIX
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.'))
    {
        errs.push(
            format!("{path}.check_hl7_control_id_prefix"),
            ErrorKind::BadCheck,
            format!(
                "1..={MAX_HL7_PREFIX} letters, digits, '.', '_' or '-' (it starts MSH-10, whose sequence number follows)"
            ),
        );
    }

    if let Some(req) = &vs.check_request
        && (!req.starts_with('/') || req.len() > 256 || req.bytes().any(|b| b <= b' ' || b == 0x7f))
    {
        errs.push(
            format!("{path}.check_request"),
            ErrorKind::BadCheck,
            "an HTTP path starts with '/' and has no spaces or control characters (at most 256 bytes)",
        );
    }
    if let Some(exp) = &vs.check_expect
        && (exp.is_empty() || exp.len() > 256)
    {
        errs.push(
            format!("{path}.check_expect"),
            ErrorKind::BadCheck,
            "expected content must be 1..=256 bytes",
        );
    }
    for (name, ae) in [
        ("check_calling_ae", &vs.check_calling_ae),
        ("check_called_ae", &vs.check_called_ae),
    ] {
        if let Some(ae) = ae
            && !valid_ae_title(ae)
        {
            errs.push(
                format!("{path}.{name}"),
                ErrorKind::BadCheck,
                "a DICOM AE title is 1..=16 printable ASCII characters, not all spaces, without '\\'",
            );
        }
    }
    if let Some(msg) = &vs.check_hl7_message
        && (!msg.starts_with("MSH|")
            || msg.len() > 4096
            || msg.bytes().any(|b| b == 0x0b || b == 0x1c))
    {
        errs.push(
            format!("{path}.check_hl7_message"),
            ErrorKind::BadCheck,
            "an HL7 v2 message starts with `MSH|`, is at most 4096 bytes and has no MLLP framing bytes",
        );
    }
}

/// DICOM PS3.5: AE titles are up to 16 characters of the default
/// repertoire, excluding backslash and control characters; leading and
/// trailing spaces are not significant, so all-spaces is empty.
fn valid_ae_title(ae: &str) -> bool {
    !ae.trim().is_empty()
        && ae.len() <= 16
        && ae.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
}

/// Longest HL7 control-ID prefix: MSH-10 is at most 20 characters and the
/// check appends a 10-digit sequence number.
pub const MAX_HL7_PREFIX: usize = 10;

fn check_tls(vs: &VirtualService, path: &str, errs: &mut Errors) {
    let https = vs.check_type == CheckType::Https;
    let mode = vs.check_tls_verify;
    let mut bad = |name: &str, why: String| {
        errs.push(format!("{path}.{name}"), ErrorKind::BadCheck, why);
    };
    if !https {
        for (name, set) in [
            ("check_tls_verify", mode != TlsVerifyMode::None),
            ("check_tls_ca", vs.check_tls_ca.is_some()),
            ("check_tls_pin", vs.check_tls_pin.is_some()),
            ("check_tls_name", vs.check_tls_name.is_some()),
        ] {
            if set {
                bad(name, "only used by check_type https".into());
            }
        }
        return;
    }
    match (&vs.check_tls_ca, mode) {
        (None, TlsVerifyMode::Ca) => bad(
            "check_tls_ca",
            "check_tls_verify = \"ca\" needs the CA certificate(s) in PEM".into(),
        ),
        (Some(_), m) if m != TlsVerifyMode::Ca => bad(
            "check_tls_ca",
            "only used with check_tls_verify = \"ca\"".into(),
        ),
        (Some(pem), _) => {
            if let Err(why) = crate::health::ca_from_pem(pem) {
                bad("check_tls_ca", why);
            }
        }
        (None, _) => {}
    }
    match (&vs.check_tls_pin, mode) {
        (None, TlsVerifyMode::Pin) => bad(
            "check_tls_pin",
            "check_tls_verify = \"pin\" needs the leaf certificate's SHA-256 (64 hex digits)"
                .into(),
        ),
        (Some(_), m) if m != TlsVerifyMode::Pin => bad(
            "check_tls_pin",
            "only used with check_tls_verify = \"pin\"".into(),
        ),
        (Some(pin), _) => {
            if crate::health::pin_from_hex(pin).is_none() {
                bad(
                    "check_tls_pin",
                    "a SHA-256 is 64 hex digits (colons between bytes allowed)".into(),
                );
            }
        }
        (None, _) => {}
    }
    if let Some(name) = &vs.check_tls_name
        && (name.is_empty()
            || name.len() > 253
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'))
    {
        bad(
            "check_tls_name",
            "a DNS name or IPv4 address (letters, digits, '-' and '.')".into(),
        );
    }
}

fn check_fallback(vs: &VirtualService, path: &str, own: &[Ipv4Addr], errs: &mut Errors) {
    match &vs.fallback {
        Some(Fallback::Server { ip, port }) => {
            if let Some(why) = unusable_address(*ip) {
                errs.push(format!("{path}.fallback.ip"), ErrorKind::BadAddress, why);
            } else if *ip == vs.vip || own.contains(ip) {
                errs.push(
                    format!("{path}.fallback.ip"),
                    ErrorKind::BadAddress,
                    "the fallback server needs its own address (use fallback = \"local\" for the appliance)",
                );
            }
            let first = vs.ports.first().copied();
            match (*port, vs.forwarding) {
                (Some(0), _) => errs.push(
                    format!("{path}.fallback.port"),
                    ErrorKind::BadPort,
                    "port 0 is not usable",
                ),
                (Some(p), Forwarding::Dr) if Some(p) != first => errs.push(
                    format!("{path}.fallback.port"),
                    ErrorKind::DrPortMismatch,
                    "a DR fallback server is reached on the service's port; leave port unset",
                ),
                (Some(_), _) if vs.ports.len() > 1 => errs.push(
                    format!("{path}.fallback.port"),
                    ErrorKind::PortOnMultiPortService,
                    "a multi-port service forwards each port unchanged; leave port unset",
                ),
                _ => {}
            }
        }
        Some(Fallback::Page(page)) => {
            if page.is_empty() || page.len() > MAX_FALLBACK_PAGE {
                errs.push(
                    format!("{path}.fallback.page"),
                    ErrorKind::TooMany,
                    format!(
                        "{} bytes: a fallback page has 1 to {MAX_FALLBACK_PAGE} bytes",
                        page.len()
                    ),
                );
            }
            if vs.protocol != Protocol::Tcp {
                errs.push(
                    format!("{path}.fallback.page"),
                    ErrorKind::Layer7NeedsTcp,
                    "a fallback page is served over TCP; this service is UDP",
                );
            }
            if vs.forwarding == Forwarding::Layer7 {
                errs.push(
                    format!("{path}.fallback.page"),
                    ErrorKind::BadLayer7Option,
                    "a fallback page is for layer 4 services; a layer 7 service takes a fallback server or \"local\"",
                );
            }
        }
        Some(Fallback::Local) | None => {}
    }
}

fn check_management(config: &Config, errs: &mut Errors) {
    use crate::mgmt::allow::Cidr;
    use crate::mgmt::keys::PublicKey;
    let m = &config.management;
    let interfaces = &config.network.interfaces;
    if let Some(a) = &m.address {
        let known = match a.parse::<Ipv4Addr>() {
            Ok(ip) => {
                interfaces.iter().all(|i| i.address.is_none())
                    || interfaces.iter().any(|i| i.address == Some(ip))
            }
            Err(_) => {
                interfaces.iter().any(|i| i.name == *a)
                    || (a.len() > 3
                        && a.starts_with("eth")
                        && a[3..].bytes().all(|b| b.is_ascii_digit()))
            }
        };
        if !known {
            errs.push(
                "management.address",
                ErrorKind::BadManagement,
                format!("`{a}` is neither an interface of this config nor one of its addresses"),
            );
        }
    }
    if let Some(allow) = &m.allow {
        if allow.len() > MAX_ALLOW {
            errs.push(
                "management.allow",
                ErrorKind::TooMany,
                format!("at most {MAX_ALLOW} entries are supported"),
            );
        }
        for (i, entry) in allow.iter().enumerate() {
            if let Err(e) = Cidr::parse(entry) {
                errs.push(
                    format!("management.allow[{i}]"),
                    ErrorKind::BadManagement,
                    format!("`{entry}`: {e}"),
                );
            }
        }
    }
    if m.admin_keys.len() > MAX_ADMIN_KEYS {
        errs.push(
            "management.admin_keys",
            ErrorKind::TooMany,
            format!("at most {MAX_ADMIN_KEYS} keys are supported"),
        );
    }
    let mut seen = Vec::new();
    for (i, k) in m.admin_keys.iter().enumerate() {
        match PublicKey::parse(k) {
            Ok(key) if seen.contains(&key) => errs.push(
                format!("management.admin_keys[{i}]"),
                ErrorKind::BadManagement,
                "the same key is listed twice",
            ),
            Ok(key) => seen.push(key),
            Err(e) => errs.push(
                format!("management.admin_keys[{i}]"),
                ErrorKind::BadManagement,
                format!("{e}"),
            ),
        }
    }
    if let Some(dest) = m.syslog {
        if dest.port() == 0 {
            errs.push(
                "management.syslog",
                ErrorKind::BadPort,
                "port 0 is not usable",
            );
        }
        if let Some(why) = unusable_address(*dest.ip()) {
            errs.push("management.syslog", ErrorKind::BadAddress, why);
        }
    }
}

/// `protocol_aware`, its routes and the persistence key.
fn check_awareness(vs: &VirtualService, path: &str, errs: &mut Errors) {
    let aware = vs.protocol_aware;
    if aware != ProtocolAware::None && vs.forwarding != Forwarding::Layer7 {
        errs.push(
            format!("{path}.protocol_aware"),
            ErrorKind::BadLayer7Option,
            "reading the first protocol unit needs forwarding = \"layer7\"",
        );
    }
    match vs.persistence {
        PersistenceKey::SourceIp => {}
        key => {
            let (needs, name) = match key {
                PersistenceKey::CallingAe => (ProtocolAware::Dicom, "calling_ae"),
                _ => (ProtocolAware::Hl7, "sender"),
            };
            if aware != needs {
                errs.push(
                    format!("{path}.persistence"),
                    ErrorKind::BadLayer7Option,
                    format!(
                        "persistence = \"{name}\" needs protocol_aware = \"{}\"",
                        if needs == ProtocolAware::Dicom {
                            "dicom"
                        } else {
                            "hl7"
                        }
                    ),
                );
            }
            if vs.persistence_timeout.is_none() {
                errs.push(
                    format!("{path}.persistence"),
                    ErrorKind::BadLayer7Option,
                    "has no effect without persistence_timeout",
                );
            }
        }
    }
    let routes: Vec<(String, Vec<&str>, &Vec<String>)> = vs
        .ae_routes
        .iter()
        .enumerate()
        .map(|(i, r)| {
            (
                format!("{path}.ae_route[{i}]"),
                alloc::vec![r.called_ae.as_str()],
                &r.servers,
            )
        })
        .chain(vs.hl7_routes.iter().enumerate().map(|(i, r)| {
            (
                format!("{path}.hl7_route[{i}]"),
                alloc::vec![
                    r.receiving_application.as_str(),
                    r.receiving_facility.as_str()
                ],
                &r.servers,
            )
        }))
        .collect();
    if !vs.ae_routes.is_empty() && aware != ProtocolAware::Dicom {
        errs.push(
            format!("{path}.ae_route"),
            ErrorKind::BadRoute,
            "AE title routes need protocol_aware = \"dicom\"",
        );
    }
    if !vs.hl7_routes.is_empty() && aware != ProtocolAware::Hl7 {
        errs.push(
            format!("{path}.hl7_route"),
            ErrorKind::BadRoute,
            "HL7 routes need protocol_aware = \"hl7\"",
        );
    }
    if vs.ae_routes.len() > MAX_ROUTES || vs.hl7_routes.len() > MAX_ROUTES {
        errs.push(
            format!("{path}.route"),
            ErrorKind::TooMany,
            format!("at most {MAX_ROUTES} routes of each kind"),
        );
    }
    for (i, r) in vs.ae_routes.iter().enumerate() {
        if let Some(ae) = &r.rewrite_called_ae
            && !crate::wire::dicom::AeTitle::is_valid_text(ae)
        {
            errs.push(
                format!("{path}.ae_route[{i}].rewrite_called_ae"),
                ErrorKind::BadRoute,
                format!("{ae:?} is not an AE title (1 to 16 characters, no backslash)"),
            );
        }
    }
    for (rpath, patterns, servers) in routes {
        for p in patterns {
            let body = p.strip_suffix('*').unwrap_or(p);
            let ok = p == "*"
                || (!body.contains('*')
                    && !body.is_empty()
                    && body.len() <= 16
                    && body
                        .bytes()
                        .all(|b| (0x20..0x7f).contains(&b) && b != b'\\'));
            if !ok {
                errs.push(
                    rpath.clone(),
                    ErrorKind::BadRoute,
                    format!("{p:?} is not a value, a prefix ending in *, or *"),
                );
            }
        }
        if servers.is_empty() {
            errs.push(
                format!("{rpath}.servers"),
                ErrorKind::BadRoute,
                "a route needs at least one real server",
            );
        }
        for label in servers {
            if !vs.real_servers.iter().any(|rs| &rs.label == label) {
                errs.push(
                    format!("{rpath}.servers"),
                    ErrorKind::BadRoute,
                    format!("no real server labelled {label:?} in this service"),
                );
            }
        }
    }
}
