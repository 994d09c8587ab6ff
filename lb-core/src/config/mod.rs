//! The appliance's configuration: its own network settings and the virtual
//! services it load balances, with field names that follow the vendor guide
//! (label, vip, ports, protocol, forwarding, persistence_timeout, check_type,
//! check_port, real servers with label/ip/port/weight).
//!
//! The model is plain data (`no_std` + `alloc`, serde). Humans write it in
//! TOML (`from_toml`, feature `toml`); the appliance stores and receives it
//! as postcard inside the versioned envelope (`crate::envelope`). Either way
//! it goes through [`validate`] before it is used.
//!
//! Identities used by the rest of the engine: a virtual service is its index
//! in [`Config::virtual_services`] and a real server its index in
//! [`VirtualService::real_servers`] (both fit `u16`, see the bounds below).

pub mod diff;
mod fields;
pub mod ha;
mod toml_front;
mod toml_out;
mod validate;

#[cfg(test)]
mod tests;

use alloc::string::String;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

pub use crate::flow::Protocol;
use crate::time::Duration;
pub use fields::{Fallback, MAX_FALLBACK_PAGE, Ports, Secs};
pub use toml_front::{LoadError, from_toml, parse_toml};
pub use toml_out::to_toml;
pub use validate::{ErrorKind, ValidationError, validate};

/// Most virtual services one appliance holds (the index must fit `u16`; the
/// bound keeps a hostile blob from asking for unbounded state).
pub const MAX_VIRTUAL_SERVICES: usize = 256;
/// Most real servers behind one virtual service.
pub const MAX_REAL_SERVERS: usize = 64;
/// Most ports one virtual service listens on (`104,11112` is two).
pub const MAX_PORTS: usize = 16;
/// Most network interfaces.
pub const MAX_INTERFACES: usize = 8;
/// Most DNS servers.
pub const MAX_DNS: usize = 4;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 32;
/// Largest real server weight. The range is IPVS's (0..=65535); 0 means
/// "no new flows", like drain.
pub const MAX_WEIGHT: u32 = 65_535;
/// Default real server weight (the guide's appliance default).
pub const DEFAULT_WEIGHT: u32 = 100;
/// Largest connection-tracking table the config may ask for.
pub const MAX_CONNTRACK_CAPACITY: u32 = 16 * 1024 * 1024;
/// Largest persistence table the config may ask for.
pub const MAX_PERSISTENCE_CAPACITY: u32 = 4 * 1024 * 1024;

/// The whole configuration of one appliance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub network: Network,
    #[serde(default)]
    pub l4: L4Settings,
    #[serde(default)]
    pub l7: L7Settings,
    /// TOML: `[[virtual_service]]` tables.
    #[serde(rename = "virtual_service", default)]
    pub virtual_services: Vec<VirtualService>,
    /// TOML: `[management]`.
    #[serde(default)]
    pub management: Management,
    /// TOML: `[ha]`: the clustered pair; absent on a single appliance.
    #[serde(default)]
    pub ha: Option<ha::Ha>,
}

/// Most source ranges in `management.allow`.
pub const MAX_ALLOW: usize = 32;
/// Most keys in `management.admin_keys`.
pub const MAX_ADMIN_KEYS: usize = 16;

/// Management over the network: who may reach it, whose signatures it
/// accepts, where its events go (see [`crate::mgmt`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Management {
    /// Where management is served: an interface name (`"eth0"`) or one of
    /// the appliance's addresses. Unset: eth0.
    pub address: Option<String>,
    /// Sources that may reach management, as `"10.12.1.0/24"` or a single
    /// address. Unset: any source; an empty list: none (console only).
    /// Others get nothing back and are counted.
    pub allow: Option<Vec<String>>,
    /// Public keys (`ed25519:` and 64 hex digits, as `tools keygen` writes
    /// them) whose signed uploads and commands are accepted.
    pub admin_keys: Vec<String>,
    /// Where events go as RFC 5424 syslog over UDP, `"IP:PORT"`.
    pub syslog: Option<core::net::SocketAddrV4>,
    /// Serial of the last signed change applied. Set by the appliance from
    /// the signed request, never by hand: a request must carry a higher
    /// one, so a recorded request cannot be replayed.
    pub serial: u64,
}

/// The appliance's own network settings (what the console wizard asks for).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// TOML: `[[network.interface]]` tables.
    #[serde(rename = "interface", default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// Hash of the management password (set by the console wizard; the
    /// format is the management side's business, this is only its slot).
    #[serde(default)]
    pub management_password_hash: Option<String>,
}

impl Default for Network {
    fn default() -> Self {
        Network {
            hostname: default_hostname(),
            interfaces: Vec::new(),
            gateway: None,
            dns: Vec::new(),
            management_password_hash: None,
        }
    }
}

fn default_hostname() -> String {
    String::from("lbmed")
}

/// One network interface and how it gets its address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// e.g. `eth0`; the order of interfaces is the order of the NICs.
    pub name: String,
    /// Take the address from DHCP (then `address`/`prefix` must be unset).
    #[serde(default)]
    pub dhcp: bool,
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
    /// Prefix length, 0..=32 (`24` for 255.255.255.0).
    #[serde(default)]
    pub prefix: Option<u8>,
    #[serde(default)]
    pub role: InterfaceRole,
}

/// Which side of a two-arm (NAT) deployment an interface is on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterfaceRole {
    /// Where clients and VIPs live.
    #[default]
    External,
    /// The subnet of NAT-mode real servers, which route through the appliance.
    Internal,
}

/// Layer 4 table sizes and connection-tracking timeouts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct L4Settings {
    /// From the first SYN until the handshake completes.
    pub tcp_handshake_timeout: Secs,
    /// Idle timeout of an established TCP flow. The effective value for a
    /// service is at least its persistence timeout (an idle DICOM
    /// association of 1 h must survive), see
    /// [`VirtualService::established_timeout`].
    pub tcp_established_timeout: Secs,
    /// After a FIN (either side).
    pub tcp_closing_timeout: Secs,
    /// After a RST.
    pub tcp_reset_timeout: Secs,
    /// Idle timeout of a UDP flow.
    pub udp_timeout: Secs,
    /// Most tracked L4 flows.
    pub conntrack_capacity: u32,
    /// Most persistence entries (client → real server).
    pub persistence_capacity: u32,
}

impl Default for L4Settings {
    fn default() -> Self {
        L4Settings {
            tcp_handshake_timeout: Secs(60),
            tcp_established_timeout: Secs(7200),
            tcp_closing_timeout: Secs(120),
            tcp_reset_timeout: Secs(10),
            udp_timeout: Secs(300),
            conntrack_capacity: 1 << 20,
            persistence_capacity: 1 << 18,
        }
    }
}

/// Layer 7 (TCP splicing) table sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct L7Settings {
    /// Most layer 7 connections (client side and server side together are
    /// one entry), handshakes in progress included.
    pub capacity: u32,
    /// Most client handshakes held as table entries; past this, new
    /// clients get stateless SYN cookies (nothing is stored until their
    /// handshake completes).
    pub half_open: u32,
    /// Bytes of early client data (sent before the real server has
    /// answered) held for all connections together; never acknowledged,
    /// so what does not fit is left for the client to retransmit.
    pub hold_bytes: u32,
}

impl Default for L7Settings {
    fn default() -> Self {
        L7Settings {
            capacity: 1 << 16,
            half_open: 4096,
            hold_bytes: 1 << 20,
        }
    }
}

/// Most layer 7 connections the config may ask for.
pub const MAX_L7_CAPACITY: u32 = 4 * 1024 * 1024;
/// Most connect retries of a layer 7 service.
pub const MAX_RETRIES: u8 = 16;

/// Whether, and how, a layer 7 service tells a real server the client's
/// address with the PROXY protocol (HAProxy's `send-proxy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SendProxy {
    #[default]
    None,
    /// The text header: `PROXY TCP4 <client> <vip> <cport> <vport>\r\n`.
    V1,
    /// The binary header (16 + 12 bytes for TCP over IPv4).
    V2,
}

/// How packets reach the real server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forwarding {
    /// Layer 4 direct routing: MAC rewrite, replies bypass the appliance.
    #[serde(alias = "direct_routing", alias = "DR")]
    Dr,
    /// Layer 4 NAT: two-arm, real servers route through the appliance.
    #[serde(alias = "NAT")]
    Nat,
    /// Layer 4 SNAT: source rewritten to the appliance (non-transparent).
    #[serde(alias = "SNAT")]
    Snat,
    /// Layer 7 SNAT: TCP-mode proxy (non-transparent).
    #[serde(alias = "layer7_snat", alias = "l7")]
    Layer7,
}

/// How a new flow picks a real server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchedulerKind {
    /// Weighted least-connection (the usual default).
    #[default]
    Wlc,
    /// Weighted round robin (smooth, deterministic).
    Wrr,
    /// Round robin.
    Rr,
    /// Least connection.
    Lc,
    /// Source hash (stable over the server set).
    Sh,
}

/// Load balanced over all servers, or failover to the next one in order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    LoadBalanced,
    /// The first healthy server in configured order takes all new flows.
    Failover,
}

/// How the appliance checks a real server's health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckType {
    /// TCP connect to the check port (the guide's default).
    #[default]
    Connect,
    /// HTTP GET `check_request`, body must contain `check_expect`.
    Http,
    /// Same over TLS.
    Https,
    /// DICOM association + C-ECHO (Verification SOP class).
    DicomEcho,
    /// HL7 v2 message over MLLP, expects an MSA|AA/CA acknowledgement.
    Hl7,
    /// ICMP echo request to the real server's address.
    Ping,
    /// No check: the server is always considered up.
    None,
    /// No check: the server is always down (planned maintenance).
    Off,
}

/// How an HTTPS check judges the server's certificate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsVerifyMode {
    /// Any certificate, as the incumbents do by default (the handshake
    /// signature is still checked against it).
    #[default]
    None,
    /// A chain to `check_tls_ca`, valid now, for the name or address.
    Ca,
    /// The leaf's SHA-256 must equal `check_tls_pin`.
    Pin,
}

/// Administrative state of a real server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    #[default]
    Online,
    /// No new flows; existing flows continue.
    Drain,
    /// Nothing: no new flows and existing flows are dropped.
    Halt,
}

/// One virtual service (VIP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VirtualService {
    pub label: String,
    pub vip: Ipv4Addr,
    /// One or more ports: `ports = "104,11112"`, `[104, 11112]` or `104`.
    pub ports: Ports,
    #[serde(default = "default_protocol", with = "fields::protocol")]
    pub protocol: Protocol,
    pub forwarding: Forwarding,
    #[serde(default)]
    pub scheduler: SchedulerKind,
    #[serde(default)]
    pub mode: Mode,
    /// Source IP persistence is on when this is set (seconds, or "1h").
    #[serde(default)]
    pub persistence_timeout: Option<Secs>,
    /// Clients whose addresses agree under this mask share one real server
    /// (e.g. `255.255.255.0`); unset means per client address.
    #[serde(default)]
    pub persistence_netmask: Option<Ipv4Addr>,
    #[serde(default)]
    pub check_type: CheckType,
    /// Defaults to the first service port.
    #[serde(default)]
    pub check_port: Option<u16>,
    #[serde(default = "default_check_interval")]
    pub check_interval: Secs,
    #[serde(default = "default_check_timeout")]
    pub check_timeout: Secs,
    /// Consecutive successes that bring a server up.
    #[serde(default = "default_rise")]
    pub check_rise: u16,
    /// Consecutive failures that bring a server down.
    #[serde(default = "default_fall")]
    pub check_fall: u16,
    /// HTTP(S) negotiate check: the path requested (default `/`).
    #[serde(default)]
    pub check_request: Option<String>,
    /// HTTP(S) negotiate check: text the response body must contain.
    #[serde(default)]
    pub check_expect: Option<String>,
    /// DICOM check: our AE title (default [`DEFAULT_CALLING_AE`]).
    #[serde(default)]
    pub check_calling_ae: Option<String>,
    /// DICOM check: the server's AE title (default [`DEFAULT_CALLED_AE`]).
    #[serde(default)]
    pub check_called_ae: Option<String>,
    /// HL7 check: the message sent (segments separated by `\r`), starting
    /// with `MSH|`. Unset: the health checker's default message.
    #[serde(default)]
    pub check_hl7_message: Option<String>,
    /// HL7 check: prefix of the control ID (MSH-10) of check messages, so
    /// interface engines can filter them (default [`DEFAULT_HL7_CONTROL_ID_PREFIX`]).
    #[serde(default)]
    pub check_hl7_control_id_prefix: Option<String>,
    /// HTTPS check: how the certificate is judged.
    #[serde(default)]
    pub check_tls_verify: TlsVerifyMode,
    /// HTTPS check with `ca`: the CA certificate(s), PEM.
    #[serde(default)]
    pub check_tls_ca: Option<String>,
    /// HTTPS check with `pin`: SHA-256 of the leaf certificate, hex.
    #[serde(default)]
    pub check_tls_pin: Option<String>,
    /// HTTPS check: the name sent (SNI) and checked with `ca`; default the
    /// real server's address.
    #[serde(default)]
    pub check_tls_name: Option<String>,
    /// Where new connections go while no real server is up.
    #[serde(default, with = "fields::fallback")]
    pub fallback: Option<Fallback>,
    /// Layer 7: idle timeout on the client side.
    #[serde(default = "default_l7_timeout")]
    pub client_timeout: Secs,
    /// Layer 7: idle timeout on the real server side.
    #[serde(default = "default_l7_timeout")]
    pub server_timeout: Secs,
    /// Layer 7: how long a real server may take to answer the connection
    /// handshake before the next server is tried.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Secs,
    /// Layer 7: further servers tried after a refused or unanswered
    /// connect (HAProxy's `retries` with `redispatch`), the client seeing
    /// nothing of it.
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// Layer 7: connect to the real server from the client's address
    /// (the servers must route their replies through the appliance).
    #[serde(default)]
    pub l7_transparent: bool,
    /// Layer 4 NAT: connections the real servers open themselves (a PACS's
    /// C-MOVE or C-STORE back to a modality) leave with the VIP as their
    /// source, connection-tracked, replies translated back.
    #[serde(default)]
    pub outbound_snat: bool,
    /// Layer 7: read the client's first protocol unit (DICOM
    /// A-ASSOCIATE-RQ, HL7 MSH) before choosing the real server.
    #[serde(default)]
    pub protocol_aware: ProtocolAware,
    /// With persistence on: what identifies a client (default its address).
    #[serde(default)]
    pub persistence: PersistenceKey,
    /// DICOM-aware: `[[virtual_service.ae_route]]` tables, in order.
    #[serde(rename = "ae_route", default)]
    pub ae_routes: Vec<AeRoute>,
    /// HL7-aware: `[[virtual_service.hl7_route]]` tables, in order.
    #[serde(rename = "hl7_route", default)]
    pub hl7_routes: Vec<Hl7Route>,
    /// TOML: `[[virtual_service.real_server]]` tables.
    #[serde(rename = "real_server", default)]
    pub real_servers: Vec<RealServer>,
}

/// What a protocol-aware layer 7 service reads before choosing a server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProtocolAware {
    /// Nothing: the server is chosen when the client's handshake completes.
    #[default]
    None,
    /// The A-ASSOCIATE-RQ: route by called AE title, persist by calling AE.
    Dicom,
    /// The first message's MSH: route by MSH-5/MSH-6, persist by MSH-3/MSH-4.
    Hl7,
}

/// The client identity persistence keeps on one real server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PersistenceKey {
    /// The client's address (under `persistence_netmask`).
    #[default]
    SourceIp,
    /// DICOM-aware: the calling AE title of the A-ASSOCIATE-RQ.
    CallingAe,
    /// HL7-aware: MSH-3 and MSH-4 (sending application and facility).
    Sender,
}

/// Most routes of one service.
pub const MAX_ROUTES: usize = 64;

/// Where associations to a called AE title go: `called_ae` is a title,
/// a prefix ending in `*`, or `*` (any).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AeRoute {
    pub called_ae: String,
    /// Labels of the service's real servers.
    pub servers: Vec<String>,
    /// The called AE title the chosen server receives instead (the rest of
    /// the A-ASSOCIATE-RQ is passed unchanged); unset: unchanged.
    #[serde(default)]
    pub rewrite_called_ae: Option<String>,
}

/// Where connections whose first message is for an MSH-5 receiving
/// application and MSH-6 facility go (each a value, a prefix ending in `*`,
/// or `*`, the default).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hl7Route {
    #[serde(default = "any")]
    pub receiving_application: String,
    #[serde(default = "any")]
    pub receiving_facility: String,
    pub servers: Vec<String>,
}

fn any() -> String {
    String::from("*")
}

/// Calling AE title of the DICOM check when none is configured.
pub const DEFAULT_CALLING_AE: &str = "LBMED-CHECK";
/// Called AE title of the DICOM check when none is configured.
pub const DEFAULT_CALLED_AE: &str = "ANY-SCP";
/// Control-ID prefix of the HL7 check's messages when none is configured.
pub const DEFAULT_HL7_CONTROL_ID_PREFIX: &str = "LBHC";

fn default_protocol() -> Protocol {
    Protocol::Tcp
}
fn default_check_interval() -> Secs {
    Secs(10)
}
fn default_check_timeout() -> Secs {
    Secs(5)
}
fn default_rise() -> u16 {
    2
}
fn default_fall() -> u16 {
    3
}
fn default_connect_timeout() -> Secs {
    Secs(3)
}
fn default_retries() -> u8 {
    2
}
/// One hour, as the guide sets for long-lived medical sessions.
fn default_l7_timeout() -> Secs {
    Secs(3600)
}

impl VirtualService {
    /// The port health checks connect to: `check_port`, else the first
    /// service port.
    pub fn effective_check_port(&self) -> u16 {
        self.check_port
            .unwrap_or_else(|| self.ports.first().copied().unwrap_or(0))
    }

    /// The mask applied to client addresses for persistence, or `None` when
    /// persistence is off.
    pub fn persistence_mask(&self) -> Option<Ipv4Addr> {
        self.persistence_timeout?;
        Some(
            self.persistence_netmask
                .unwrap_or(Ipv4Addr::new(255, 255, 255, 255)),
        )
    }

    /// How long a persistence entry lives after its last refresh.
    pub fn persistence_duration(&self) -> Option<Duration> {
        self.persistence_timeout.map(Secs::duration)
    }

    /// Idle timeout of an established TCP flow of this service: the global
    /// one, but never shorter than the persistence timeout or, for layer 7,
    /// the client/server timeouts.
    pub fn established_timeout(&self, l4: &L4Settings) -> Duration {
        let mut secs = l4.tcp_established_timeout.0;
        if let Some(p) = self.persistence_timeout {
            secs = secs.max(p.0);
        }
        if self.forwarding == Forwarding::Layer7 {
            secs = secs.max(self.client_timeout.0).max(self.server_timeout.0);
        }
        Secs(secs).duration()
    }

    /// Calling AE title for the DICOM check.
    pub fn calling_ae(&self) -> &str {
        self.check_calling_ae
            .as_deref()
            .unwrap_or(DEFAULT_CALLING_AE)
    }

    /// Called AE title for the DICOM check.
    pub fn called_ae(&self) -> &str {
        self.check_called_ae.as_deref().unwrap_or(DEFAULT_CALLED_AE)
    }

    /// Control-ID prefix of the HL7 check.
    pub fn hl7_control_id_prefix(&self) -> &str {
        self.check_hl7_control_id_prefix
            .as_deref()
            .unwrap_or(DEFAULT_HL7_CONTROL_ID_PREFIX)
    }

    /// HTTP path of the negotiate check.
    pub fn check_path(&self) -> &str {
        self.check_request.as_deref().unwrap_or("/")
    }

    /// Whether `port` is one of the service's ports.
    pub fn has_port(&self, port: u16) -> bool {
        self.ports.contains(&port)
    }
}

/// One real server behind a virtual service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RealServer {
    pub label: String,
    pub ip: Ipv4Addr,
    /// Unset: the port the client connected to (required for DR, where
    /// the port cannot change).
    #[serde(default)]
    pub port: Option<u16>,
    /// 0..=[`MAX_WEIGHT`], default [`DEFAULT_WEIGHT`].
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Once overloaded (see `max_connections`), the server takes new flows
    /// again only below this many active flows. 0: below the maximum.
    #[serde(default)]
    pub min_connections: u32,
    /// At this many active flows the server takes no new ones. 0: no limit.
    #[serde(default)]
    pub max_connections: u32,
    #[serde(default)]
    pub state: AdminState,
    /// This server's health-check port, overriding the service's `check_port`.
    #[serde(default)]
    pub check_port: Option<u16>,
    /// Port of the server's feedback agent (HAProxy agent-check text
    /// protocol, or Loadbalancer.org's idle percentage); unset: no agent.
    #[serde(default)]
    pub agent_port: Option<u16>,
    /// Layer 7: PROXY protocol header before the client's bytes.
    #[serde(default)]
    pub send_proxy: SendProxy,
}

fn default_weight() -> u32 {
    DEFAULT_WEIGHT
}

impl RealServer {
    /// The destination port on the real server for a flow that arrived on
    /// `client_dst_port` of the virtual service.
    pub fn target_port(&self, forwarding: Forwarding, client_dst_port: u16) -> u16 {
        match (forwarding, self.port) {
            (Forwarding::Dr, _) | (_, None) => client_dst_port,
            (_, Some(p)) => p,
        }
    }
}

impl Config {
    /// A configuration with no interfaces and no services.
    pub fn empty() -> Self {
        Config {
            network: Network::default(),
            l4: L4Settings::default(),
            l7: L7Settings::default(),
            virtual_services: Vec::new(),
            management: Management::default(),
            ha: None,
        }
    }
}
