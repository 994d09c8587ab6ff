//! What the appliance shows of itself: one [`Status`] snapshot rendered
//! four ways — the console's `status` text ([`Status::to_text`]), the JSON
//! of `GET /api/status` (serde), Prometheus text for `GET /metrics`
//! ([`Status::to_metrics`]) and the System Overview page
//! ([`super::page`]). `tools status` decodes the JSON and prints
//! [`Status::to_text`], so it shows exactly what the console does.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::Write;
use core::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::config::{AdminState, Config, Fallback, Forwarding, SchedulerKind};
use crate::datapath::Datapath;
use crate::engine::Engine;
use crate::flow::Protocol;
use crate::frame::DropReason;
use crate::schedule::Health;

/// A snapshot of the appliance.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub hostname: String,
    pub version: String,
    pub uptime_s: u64,
    /// Serial of the running configuration (see `management.serial`).
    pub serial: u64,
    pub services: Vec<ServiceStatus>,
    /// Counters and gauges besides the services' (drops, tables, NICs,
    /// management), for `/metrics`.
    pub metrics: Vec<Sample>,
    /// The console's lines after the services (drops, ARP, tables, NICs).
    pub details: Vec<String>,
    /// The clustered pair, with `[ha]`.
    #[serde(default)]
    pub pair: Option<PairStatus>,
}

/// This appliance's side of the clustered pair.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairStatus {
    /// `master`, `backup`, `fault` or `init`.
    pub role: String,
    pub vrid: u8,
    pub priority: u8,
    /// Milliseconds in this role.
    pub for_ms: u64,
    /// The master heard (while backup), and its priority.
    pub master: Option<String>,
    /// The peer on the sync link: its role, config serial, and whether our
    /// configs agree; `None` without a sync link or before it spoke.
    pub peer_role: Option<String>,
    pub peer_serial: Option<u64>,
    pub config_agree: Option<bool>,
    /// Sync link health: `ok`, or why not.
    pub sync: Option<String>,
    /// Whether this backup holds a complete copy of the master's tables.
    pub sync_complete: bool,
    /// What an engineer must look at (empty: nothing).
    pub faults: Vec<String>,
}

/// One virtual service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub label: String,
    pub vip: String,
    pub ports: Vec<u16>,
    pub protocol: String,
    pub forwarding: String,
    pub scheduler: String,
    /// Flows open now.
    pub active: u64,
    /// Flows started.
    pub connections: u64,
    pub packets: u64,
    pub bytes: u64,
    pub servers: Vec<ServerStatus>,
    /// The health check, e.g. `check=https tls-verify=none`.
    #[serde(default)]
    pub check: String,
    /// The fallback server and its counters, e.g. `10.1.1.9:80 active=0
    /// conns=3`, or `local refused=2`.
    #[serde(default)]
    pub fallback: Option<String>,
}

/// One real server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub label: String,
    pub ip: String,
    pub port: u16,
    /// `up`, `down` or `unknown` (not checked yet).
    pub health: String,
    /// `online`, `drain` or `halt`.
    pub admin: String,
    pub weight: u32,
    pub active: u64,
    pub connections: u64,
    pub packets: u64,
    pub bytes: u64,
    /// Why the last health check failed, while the server is down.
    pub reason: Option<String>,
    /// What the server's feedback agent said, e.g. `50%,drain (backup)`.
    #[serde(default)]
    pub agent: Option<String>,
}

impl ServerStatus {
    /// The page's colour class: the administrative state first (an
    /// operator's drain or halt is what matters), then health.
    pub fn state(&self) -> &'static str {
        match (self.admin.as_str(), self.health.as_str()) {
            ("halt", _) => "halt",
            ("drain", _) => "drain",
            (_, "up") => "up",
            (_, "down") => "down",
            _ => "unknown",
        }
    }
}

/// One metric sample: a family name (`lbmed_drops_total`), labels, value.
/// Names ending in `_total` are counters, the others gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: u64,
}

impl Sample {
    pub fn new(name: &str, labels: &[(&str, &str)], value: u64) -> Sample {
        Sample {
            name: name.to_string(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }
}

pub fn forwarding_name(f: Forwarding) -> &'static str {
    match f {
        Forwarding::Dr => "dr",
        Forwarding::Nat => "nat",
        Forwarding::Snat => "snat",
        Forwarding::Layer7 => "layer7",
    }
}

pub fn scheduler_name(s: SchedulerKind) -> &'static str {
    match s {
        SchedulerKind::Wlc => "wlc",
        SchedulerKind::Wrr => "wrr",
        SchedulerKind::Rr => "rr",
        SchedulerKind::Lc => "lc",
        SchedulerKind::Sh => "sh",
    }
}

pub fn health_name(h: Health) -> &'static str {
    match h {
        Health::Up => "up",
        Health::Down => "down",
        Health::Unknown => "unknown",
    }
}

pub fn admin_name(a: AdminState) -> &'static str {
    match a {
        AdminState::Online => "online",
        AdminState::Drain => "drain",
        AdminState::Halt => "halt",
    }
}

fn ip(a: Ipv4Addr) -> String {
    a.to_string()
}

/// The fallback of service `si` with its counters (the fallback server is
/// the engine's server after the configured ones).
fn fallback(vs: &crate::config::VirtualService, engine: &Engine, si: usize) -> Option<String> {
    let stats = engine.service_stats(si)?;
    match vs.fallback.as_ref()? {
        Fallback::Server { ip, port } => {
            let n = vs.real_servers.len();
            let (s, c) = (engine.server_state(si, n)?, stats.servers.get(n)?);
            let port = port.unwrap_or(vs.ports.first().copied().unwrap_or(0));
            Some(format!(
                "{ip}:{port} active={} conns={} pkts={} bytes={}",
                s.active, c.connections, c.packets, c.bytes
            ))
        }
        Fallback::Local => Some(format!("local refused={}", stats.fallback_refused)),
        Fallback::Page(_) => Some(format!(
            "page handshakes={} answered={}",
            stats.fallback_syns, stats.fallback_pages
        )),
    }
}

/// The pair's status, its counters as metrics and its details line.
fn pair_status(dp: &Datapath, pair: &crate::ha::Pair, st: &mut Status) {
    use crate::vrrp::State;
    let now = pair.now();
    let serial = dp.config.management.serial;
    let r = &pair.router;
    let s = r.settings();
    let mut ps = PairStatus {
        role: r.state().name().into(),
        vrid: s.vrid,
        priority: s.priority,
        for_ms: now.since(r.since()).millis(),
        master: (r.state() == State::Backup)
            .then(|| r.master())
            .flatten()
            .map(|(a, p)| format!("{a} (priority {p})")),
        faults: pair.faults(now, serial),
        ..PairStatus::default()
    };
    if let Some((nic, link)) = &pair.sync {
        ps.sync_complete = link.complete();
        ps.sync = Some(if link.peer_alive(now) {
            String::from("ok")
        } else {
            format!("down (peer {} on eth{nic} silent)", link.peer)
        });
        if let Some(h) = link.peer_hello() {
            ps.peer_role = Some(
                match h.role {
                    1 => "backup",
                    2 => "master",
                    3 => "fault",
                    _ => "init",
                }
                .into(),
            );
            ps.peer_serial = Some(h.serial);
            ps.config_agree = Some(h.serial == serial);
        }
        let l = &link.stats;
        st.details.push(format!(
            "sync: sent={} received={} lost={} send-failed={} records-sent={} records-received={} records-refused={} passes-sent={} passes-received={} configs-sent={} configs-received={} configs-refused={} rejected={}",
            l.sent,
            l.received,
            l.lost,
            l.send_failed,
            l.records_sent,
            l.records_received,
            l.records_refused,
            l.passes_sent,
            l.passes_received,
            l.configs_sent,
            l.configs_received,
            l.configs_refused,
            l.rejected.iter().sum::<u64>()
        ));
        for (name, v) in [
            ("sent", l.sent),
            ("received", l.received),
            ("lost", l.lost),
            ("send_failed", l.send_failed),
        ] {
            st.metrics.push(Sample::new(
                "lbmed_pair_sync_messages_total",
                &[("kind", name)],
                v,
            ));
        }
        for (name, v) in [
            ("sent", l.records_sent),
            ("received", l.records_received),
            ("refused", l.records_refused),
        ] {
            st.metrics.push(Sample::new(
                "lbmed_pair_sync_records_total",
                &[("kind", name)],
                v,
            ));
        }
        for e in crate::ha::wire::Error::ALL {
            st.metrics.push(Sample::new(
                "lbmed_pair_sync_rejected_total",
                &[("reason", e.name())],
                l.rejected[e.index()],
            ));
        }
    }
    let rs = &r.stats;
    st.details.push(format!(
        "vrrp: adverts sent={} received={} other-vrid={} priority-zero={} interval-mismatch={} address-mismatch={} lower-master-heard={} became-master={} garps={} foreign={} bad={}",
        rs.adverts_sent,
        rs.adverts_received,
        rs.other_vrid,
        rs.priority_zero,
        rs.interval_mismatch,
        rs.address_mismatch,
        rs.lower_master_heard,
        rs.became_master,
        pair.stats.garps,
        pair.stats.foreign_adverts,
        pair.stats.bad_adverts.iter().sum::<u64>()
    ));
    let rep = dp.engine.replica_stats();
    st.details.push(format!(
        "replica: journaled={} journal-overflow={} imported-flows={} imported-persistence={} replaced={} refused={}",
        rep.journaled,
        rep.journal_overflow,
        rep.imported_flows,
        rep.imported_persist,
        rep.replaced,
        rep.refused.iter().sum::<u64>()
    ));
    st.metrics.push(Sample::new(
        "lbmed_pair_master",
        &[],
        u64::from(pair.is_master()),
    ));
    st.metrics.push(Sample::new(
        "lbmed_pair_faults",
        &[],
        ps.faults.len() as u64,
    ));
    st.metrics.push(Sample::new(
        "lbmed_pair_became_master_total",
        &[],
        rs.became_master,
    ));
    for (dir, v) in [("sent", rs.adverts_sent), ("received", rs.adverts_received)] {
        st.metrics.push(Sample::new(
            "lbmed_pair_adverts_total",
            &[("direction", dir)],
            v,
        ));
    }
    for e in crate::vrrp::wire::Error::ALL {
        st.metrics.push(Sample::new(
            "lbmed_pair_bad_adverts_total",
            &[("reason", e.name())],
            pair.stats.bad_adverts[e.index()],
        ));
    }
    for e in crate::engine::ImportError::ALL {
        st.metrics.push(Sample::new(
            "lbmed_pair_import_refused_total",
            &[("reason", e.name())],
            rep.refused[e.index()],
        ));
    }
    st.pair = Some(ps);
}

impl Status {
    /// The virtual services and real servers of `config` as `engine` sees
    /// them, and the engine's drop counters and table fill.
    /// `reason(service, server)` gives a down server's last check failure.
    pub fn from_engine(
        config: &Config,
        engine: &Engine,
        reason: impl Fn(usize, usize) -> Option<String>,
    ) -> Status {
        let mut st = Status {
            hostname: config.network.hostname.clone(),
            serial: config.management.serial,
            ..Status::default()
        };
        for (si, vs) in config.virtual_services.iter().enumerate() {
            let Some(stats) = engine.service_stats(si) else {
                continue;
            };
            let mut svc = ServiceStatus {
                label: vs.label.clone(),
                vip: ip(vs.vip),
                ports: vs.ports.to_vec(),
                protocol: match vs.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                }
                .into(),
                forwarding: forwarding_name(vs.forwarding).into(),
                scheduler: scheduler_name(vs.scheduler).into(),
                packets: stats.service.packets,
                bytes: stats.service.bytes,
                ..ServiceStatus::default()
            };
            for (ri, rs) in vs.real_servers.iter().enumerate() {
                let (Some(s), Some(c)) = (engine.server_state(si, ri), stats.servers.get(ri))
                else {
                    continue;
                };
                svc.active += u64::from(s.active);
                svc.connections += c.connections;
                svc.servers.push(ServerStatus {
                    label: rs.label.clone(),
                    ip: ip(rs.ip),
                    port: rs.target_port(vs.forwarding, vs.ports.first().copied().unwrap_or(0)),
                    health: health_name(s.health).into(),
                    admin: admin_name(s.admin).into(),
                    weight: s.weight,
                    active: u64::from(s.active),
                    connections: c.connections,
                    packets: c.packets,
                    bytes: c.bytes,
                    reason: if s.health == Health::Down {
                        reason(si, ri)
                    } else {
                        None
                    },
                    agent: None,
                });
            }
            svc.fallback = fallback(vs, engine, si);
            st.services.push(svc);
        }
        let drops = engine.drops();
        for r in DropReason::ALL {
            st.metrics.push(Sample::new(
                "lbmed_drops_total",
                &[("reason", r.name())],
                drops.get(r),
            ));
        }
        let ct = engine.conntrack();
        let p = engine.persistence();
        for (table, used, cap) in [
            ("conntrack", ct.len(), ct.capacity()),
            ("persistence", p.len(), p.capacity()),
        ] {
            st.metrics.push(Sample::new(
                "lbmed_table_entries",
                &[("table", table)],
                used as u64,
            ));
            st.metrics.push(Sample::new(
                "lbmed_table_capacity",
                &[("table", table)],
                cap as u64,
            ));
        }
        st
    }

    /// The frame path as the console's `status` shows it: services and
    /// servers (with the last check failure of a down server), then drop
    /// counters, ARP, connection and persistence tables, the stack guard
    /// and the management lockdown; the same as metrics.
    pub fn from_datapath(dp: &Datapath) -> Status {
        let board = dp.health();
        let mut st = Status::from_engine(&dp.config, &dp.engine, |si, ri| board.reason(si, ri));
        for (si, svc) in st.services.iter_mut().enumerate() {
            svc.check = String::from(board.check(si));
            for (ri, rs) in svc.servers.iter_mut().enumerate() {
                rs.agent = board.agent(si, ri);
            }
        }
        let e = &dp.engine;
        let a = &dp.arp.stats;
        let mut drops = String::from("drops:");
        for r in DropReason::ALL {
            let _ = write!(drops, " {}={}", r.name(), e.drops().get(r));
        }
        for (name, v) in [
            ("arp-full", a.full),
            ("arp-queue-full", a.queue_full),
            ("arp-unanswered", a.unanswered),
            ("tx-full", dp.stats.tx_full),
            ("stack-udp-limited", dp.stats.stack_udp_limited),
            ("stack-echo-limited", dp.stats.stack_echo_limited),
        ] {
            if !name.starts_with("stack") {
                let _ = write!(drops, " {name}={v}");
            }
            st.metrics
                .push(Sample::new("lbmed_drops_total", &[("reason", name)], v));
        }
        st.details.push(drops);
        st.details.push(format!(
            "arp: {} entries (max {}), {} frames waiting, {} requests sent, {} VIP replies; {} ICMP unreachable sent",
            dp.arp.len(),
            dp.arp.capacity(),
            dp.arp.queued(),
            a.requests_sent,
            dp.stats.vip_arp_replies,
            dp.stats.unreachable_sent
        ));
        let ct = e.conntrack();
        let p = e.persistence();
        st.details.push(format!(
            "conntrack: {} flows, {} half-open (max {}, {} per source) early-drop={} source-limited={} full={}",
            ct.len(),
            ct.half_open(),
            ct.half_open_limit(),
            ct.source_limit(),
            ct.stats.early_drop,
            ct.stats.source_limited,
            ct.stats.refused_full
        ));
        st.details.push(format!(
            "stack: udp-limited={} echo-limited={} (each at most {}/s to our own addresses)",
            dp.stats.stack_udp_limited,
            dp.stats.stack_echo_limited,
            crate::datapath::guard::PER_SECOND
        ));
        st.details.push(format!(
            "persistence: {} clients (max {}) refused-full={}",
            p.len(),
            p.capacity(),
            p.stats.refused_full
        ));
        let l7 = e.l7_stats();
        st.details.push(format!(
            "l7: {} connections (max {}, {} bytes each), {} half-open; syns={} cookies-sent={} cookies-ok={} cookies-bad={} connects={} retries={} refused={} connect-timeouts={} failed={} spliced={} held={} hold-full={} idle-closed={} halted={} syn-rtx={} proxy-rtx={} table-full={} outbox-full={}",
            e.l7_connections().len(),
            e.l7_connections().capacity(),
            e.l7_connections().bytes_per_flow(),
            e.l7_half_open(),
            l7.syns,
            l7.cookies_sent,
            l7.cookies_accepted,
            l7.cookies_rejected,
            l7.connects,
            l7.retries,
            l7.refused,
            l7.connect_timeouts,
            l7.failed,
            l7.spliced,
            l7.held,
            l7.hold_full,
            l7.idle_closed,
            l7.halted,
            l7.syn_retransmits,
            l7.proxy_retransmits,
            l7.table_full,
            l7.outbox_full
        ));
        for (name, v) in [
            ("syns", l7.syns),
            ("cookies_sent", l7.cookies_sent),
            ("connect_retries", l7.retries),
            ("connect_failed", l7.failed),
            ("spliced", l7.spliced),
            ("idle_closed", l7.idle_closed),
        ] {
            st.metrics
                .push(Sample::new("lbmed_l7_total", &[("event", name)], v));
        }
        aware_status(dp, &mut st);
        outbound_status(dp, &mut st);
        st.metrics.push(Sample::new(
            "lbmed_table_entries",
            &[("table", "arp")],
            dp.arp.len() as u64,
        ));
        st.metrics.push(Sample::new(
            "lbmed_table_capacity",
            &[("table", "arp")],
            dp.arp.capacity() as u64,
        ));
        st.metrics.push(Sample::new(
            "lbmed_management_not_allowed_total",
            &[],
            dp.stats.management_refused,
        ));
        st.metrics.push(Sample::new(
            "lbmed_arp_conflicts_total",
            &[],
            dp.stats.arp_conflicts,
        ));
        if let Some(pair) = &dp.pair {
            pair_status(dp, pair, &mut st);
        }
        st
    }

    /// The pair's lines of the console text.
    fn pair_lines(&self, out: &mut String) {
        let Some(p) = &self.pair else {
            return;
        };
        let _ = write!(
            out,
            "pair: {} for {} s (VRID {}, priority {})",
            p.role,
            p.for_ms / 1000,
            p.vrid,
            p.priority
        );
        if let Some(m) = &p.master {
            let _ = write!(out, ", master {m}");
        }
        if let (Some(r), Some(s)) = (&p.peer_role, p.peer_serial) {
            let agree = if p.config_agree == Some(true) {
                "agree"
            } else {
                "DIFFER"
            };
            let _ = write!(
                out,
                "; peer {r}, config serial {} here, {s} there ({agree})",
                self.serial
            );
        }
        if let Some(s) = &p.sync {
            let _ = write!(
                out,
                "; sync {s}{}",
                if p.sync_complete {
                    ", copy complete"
                } else {
                    ""
                }
            );
        }
        out.push('\n');
        for f in &p.faults {
            let _ = writeln!(out, "pair fault: {f}");
        }
    }

    /// A counter or gauge by name and labels (0 when absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.metrics
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && s.labels
                        .iter()
                        .zip(labels)
                        .all(|(a, b)| a.0 == b.0 && a.1 == b.1)
            })
            .map_or(0, |s| s.value)
    }

    /// The console's `status` text.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        self.pair_lines(&mut out);
        for vs in &self.services {
            let ports: Vec<String> = vs.ports.iter().map(|p| p.to_string()).collect();
            let _ = write!(
                out,
                "vs {} {}:{} {} conns={} pkts={} bytes={}",
                vs.label,
                vs.vip,
                ports.join(","),
                vs.forwarding,
                vs.active,
                vs.packets,
                vs.bytes
            );
            if !vs.check.is_empty() {
                let _ = write!(out, " {}", vs.check);
            }
            out.push('\n');
            for rs in &vs.servers {
                let _ = write!(
                    out,
                    "  rs {} {}:{} {} {} weight={} active={} conns={} pkts={} bytes={}",
                    rs.label,
                    rs.ip,
                    rs.port,
                    rs.health,
                    rs.admin,
                    rs.weight,
                    rs.active,
                    rs.connections,
                    rs.packets,
                    rs.bytes
                );
                if let Some(a) = &rs.agent {
                    let _ = write!(out, " agent={a}");
                }
                if let Some(r) = &rs.reason {
                    let _ = write!(out, " ({r})");
                }
                out.push('\n');
            }
            if let Some(f) = &vs.fallback {
                let _ = writeln!(out, "  fallback {f}");
            }
        }
        for l in &self.details {
            out.push_str(l);
            out.push('\n');
        }
        out
    }

    /// Prometheus text exposition format (version 0.0.4).
    pub fn to_metrics(&self) -> String {
        let mut samples: Vec<Sample> = Vec::new();
        samples.push(Sample::new("lbmed_uptime_seconds", &[], self.uptime_s));
        samples.push(Sample::new("lbmed_config_serial", &[], self.serial));
        for vs in &self.services {
            let l = [("service", vs.label.as_str())];
            samples.push(Sample::new(
                "lbmed_service_connections_total",
                &l,
                vs.connections,
            ));
            samples.push(Sample::new(
                "lbmed_service_active_connections",
                &l,
                vs.active,
            ));
            samples.push(Sample::new("lbmed_service_packets_total", &l, vs.packets));
            samples.push(Sample::new("lbmed_service_bytes_total", &l, vs.bytes));
        }
        for vs in &self.services {
            for rs in &vs.servers {
                let l = [
                    ("service", vs.label.as_str()),
                    ("server", rs.label.as_str()),
                ];
                samples.push(Sample::new(
                    "lbmed_server_connections_total",
                    &l,
                    rs.connections,
                ));
                samples.push(Sample::new(
                    "lbmed_server_active_connections",
                    &l,
                    rs.active,
                ));
                samples.push(Sample::new("lbmed_server_packets_total", &l, rs.packets));
                samples.push(Sample::new("lbmed_server_bytes_total", &l, rs.bytes));
                samples.push(Sample::new(
                    "lbmed_server_up",
                    &l,
                    u64::from(rs.health == "up"),
                ));
                samples.push(Sample::new("lbmed_server_weight", &l, u64::from(rs.weight)));
                for state in ["online", "drain", "halt"] {
                    let ls = [l[0], l[1], ("state", state)];
                    samples.push(Sample::new(
                        "lbmed_server_state",
                        &ls,
                        u64::from(rs.admin == state),
                    ));
                }
            }
        }
        samples.extend(self.metrics.iter().cloned());
        render_samples(&samples)
    }
}

/// Help text of each metric family.
fn help(name: &str) -> &'static str {
    match name {
        "lbmed_uptime_seconds" => "Seconds since the appliance booted.",
        "lbmed_config_serial" => "Serial of the running configuration.",
        "lbmed_service_connections_total" => "Connections (flows) started on the virtual service.",
        "lbmed_service_active_connections" => "Connections open on the virtual service now.",
        "lbmed_service_packets_total" => "Packets forwarded for the virtual service.",
        "lbmed_service_bytes_total" => "IPv4 bytes forwarded for the virtual service.",
        "lbmed_server_connections_total" => "Connections sent to the real server.",
        "lbmed_server_active_connections" => "Connections open to the real server now.",
        "lbmed_server_packets_total" => "Packets forwarded to and from the real server.",
        "lbmed_server_bytes_total" => "IPv4 bytes forwarded to and from the real server.",
        "lbmed_server_up" => "1 when the real server's health check passes.",
        "lbmed_server_weight" => "Scheduling weight of the real server.",
        "lbmed_server_state" => "Administrative state of the real server (1 for the current one).",
        "lbmed_drops_total" => "Frames dropped, by reason.",
        "lbmed_outbound_connections_total" => {
            "Connections the service's real servers opened themselves, sent from the VIP."
        }
        "lbmed_table_entries" => "Entries in use in a bounded table.",
        "lbmed_table_capacity" => "Capacity of a bounded table.",
        "lbmed_nic_frames_total" => "Frames through a network card, by direction and outcome.",
        "lbmed_nic_link_up" => "1 when the network card's link is up.",
        "lbmed_management_applied_total" => "Signed uploads and commands applied.",
        "lbmed_management_rejected_total" => "Signed uploads and commands rejected, by reason.",
        "lbmed_management_not_allowed_total" => {
            "Frames to management ports from sources outside the allow list."
        }
        "lbmed_management_evicted_total" => {
            "Management connections closed to make room for newer ones."
        }
        "lbmed_events_total" => "Events logged.",
        "lbmed_arp_conflicts_total" => {
            "ARP frames from another machine claiming one of the appliance's addresses or VIPs."
        }
        _ => "Appliance counter.",
    }
}

fn escape_label(v: &str, out: &mut String) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Renders samples grouped by family (in order of first appearance), each
/// family with its HELP and TYPE lines.
pub fn render_samples(samples: &[Sample]) -> String {
    let mut families: Vec<&str> = Vec::new();
    for s in samples {
        if !families.contains(&s.name.as_str()) {
            families.push(&s.name);
        }
    }
    let mut out = String::new();
    for f in families {
        let kind = if f.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {f} {}", help(f));
        let _ = writeln!(out, "# TYPE {f} {kind}");
        for s in samples.iter().filter(|s| s.name == f) {
            out.push_str(f);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(k);
                    out.push_str("=\"");
                    escape_label(v, &mut out);
                    out.push('"');
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
    out
}

/// `status` of a whole JSON document (`tools status` reads `/api/status`).
pub fn from_json(text: &[u8]) -> Option<Status> {
    serde_json::from_slice(text).ok()
}

/// The JSON of `/api/status`.
pub fn to_json(status: &Status) -> String {
    serde_json::to_string(status).unwrap_or_default()
}

/// Shared by the tests of this module and of the page.
#[cfg(test)]
pub(crate) fn sample_status() -> Status {
    let server = |label: &str, ip: &str, health: &str, admin: &str| ServerStatus {
        label: label.into(),
        ip: ip.into(),
        port: 104,
        health: health.into(),
        admin: admin.into(),
        weight: 100,
        active: 2,
        connections: 30,
        packets: 400,
        bytes: 50_000,
        reason: (health == "down").then(|| "connection refused".into()),
        agent: (label == "PACS3").then(|| "50%,drain (backup window)".into()),
    };
    Status {
        hostname: "lbmed1".into(),
        version: "0.1.0".into(),
        uptime_s: 3723,
        serial: 7,
        services: alloc::vec![ServiceStatus {
            label: "DICOM-Modalities".into(),
            vip: "10.12.1.100".into(),
            ports: alloc::vec![104, 11112],
            protocol: "tcp".into(),
            forwarding: "dr".into(),
            scheduler: "wlc".into(),
            active: 8,
            connections: 120,
            packets: 1600,
            bytes: 200_000,
            servers: alloc::vec![
                server("PACS1", "10.12.1.110", "up", "online"),
                server("PACS2", "10.12.1.111", "down", "online"),
                server("PACS3", "10.12.1.112", "up", "drain"),
                server("PACS4", "10.12.1.113", "up", "halt"),
            ],
            check: "check=dicom_echo".into(),
            fallback: Some("10.12.1.119:104 active=0 conns=3 pkts=40 bytes=5000".into()),
        }],
        metrics: alloc::vec![Sample::new(
            "lbmed_drops_total",
            &[("reason", "bad \"quoted\"\\")],
            3
        )],
        details: alloc::vec!["conntrack: 8 flows".into()],
        pair: None,
    }
}

/// Services with `outbound_snat`: their servers' own flows and the VIP's
/// source ports (TCP).
fn outbound_status(dp: &Datapath, st: &mut Status) {
    let e = &dp.engine;
    for (si, vs) in dp.config.virtual_services.iter().enumerate() {
        let (Some(stats), Some(ports)) = (
            e.service_stats(si),
            e.outbound_ports(si, crate::flow::Protocol::Tcp),
        ) else {
            continue;
        };
        st.details.push(format!(
            "outbound: {} from {} flows={} tcp-ports={} (max {}) ports-exhausted={}",
            vs.label,
            vs.vip,
            stats.outbound,
            ports.in_use(),
            ports.capacity(),
            ports.exhausted()
        ));
        st.metrics.push(Sample::new(
            "lbmed_outbound_connections_total",
            &[("service", vs.label.as_str())],
            stats.outbound,
        ));
    }
}

/// Protocol-aware services: the totals, then one line and two samples per
/// (called, calling) pair — DICOM AE titles, HL7 MSH-5 and MSH-3.
fn aware_status(dp: &Datapath, st: &mut Status) {
    let e = &dp.engine;
    let l7 = e.l7_stats();
    if l7.aware_routed + l7.aware_refused + l7.aware_not_protocol == 0 {
        return;
    }
    st.details.push(format!(
        "aware: routed={} refused={} not-protocol={} answer-rtx={} aborts-sent={} abort-rtx={} halt-held={} pairs={} (max {}) pairs-full={}",
        l7.aware_routed,
        l7.aware_refused,
        l7.aware_not_protocol,
        l7.answer_retransmits,
        l7.aborts_sent,
        l7.abort_retransmits,
        l7.halt_held,
        e.l7_pairs().len(),
        crate::engine::MAX_PAIRS,
        e.l7_pairs_full()
    ));
    for p in e.l7_pairs() {
        let Some(pair) = p.pair else { continue };
        let service = dp
            .config
            .virtual_services
            .get(usize::from(p.service))
            .map_or("?", |vs| vs.label.as_str());
        let (called, calling) = (pair.called.display(), pair.calling.display());
        st.details.push(format!(
            "aware pair: {service} called={called} calling={calling} routed={} refused={} bytes={}",
            p.routed, p.refused, p.bytes
        ));
        for (outcome, v) in [("routed", p.routed), ("refused", p.refused)] {
            st.metrics.push(Sample::new(
                "lbmed_aware_connections_total",
                &[
                    ("service", service),
                    ("called", &called),
                    ("calling", &calling),
                    ("outcome", outcome),
                ],
                v,
            ));
        }
        st.metrics.push(Sample::new(
            "lbmed_aware_bytes_total",
            &[
                ("service", service),
                ("called", &called),
                ("calling", &calling),
            ],
            p.bytes,
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;
    use crate::engine::Capacities;
    use core::net::Ipv4Addr;

    #[test]
    fn text_matches_the_console_format() {
        let t = sample_status().to_text();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "vs DICOM-Modalities 10.12.1.100:104,11112 dr conns=8 pkts=1600 bytes=200000 check=dicom_echo"
        );
        assert_eq!(
            lines[2],
            "  rs PACS2 10.12.1.111:104 down online weight=100 active=2 conns=30 pkts=400 bytes=50000 (connection refused)"
        );
        assert_eq!(
            lines[3],
            "  rs PACS3 10.12.1.112:104 up drain weight=100 active=2 conns=30 pkts=400 bytes=50000 agent=50%,drain (backup window)"
        );
        assert_eq!(
            lines[5],
            "  fallback 10.12.1.119:104 active=0 conns=3 pkts=40 bytes=5000"
        );
        assert_eq!(lines.last(), Some(&"conntrack: 8 flows"));
    }

    #[test]
    fn json_round_trips() {
        let s = sample_status();
        assert_eq!(from_json(to_json(&s).as_bytes()), Some(s));
        assert_eq!(from_json(b"{not json"), None);
    }

    #[test]
    fn metrics_are_grouped_typed_and_escaped() {
        let m = sample_status().to_metrics();
        assert!(m.contains("# TYPE lbmed_server_connections_total counter\n"));
        assert!(m.contains("# TYPE lbmed_server_up gauge\n"));
        assert!(m.contains("lbmed_server_up{service=\"DICOM-Modalities\",server=\"PACS2\"} 0\n"));
        assert!(m.contains(
            "lbmed_server_state{service=\"DICOM-Modalities\",server=\"PACS3\",state=\"drain\"} 1\n"
        ));
        assert!(m.contains("lbmed_drops_total{reason=\"bad \\\"quoted\\\"\\\\\"} 3\n"));
        // Each family's TYPE line comes once, before its samples.
        let types = m
            .lines()
            .filter(|l| l.starts_with("# TYPE lbmed_server_up "))
            .count();
        assert_eq!(types, 1);
        for line in m.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            assert!(value.parse::<u64>().is_ok(), "{line}");
            assert!(name.starts_with("lbmed_"), "{line}");
        }
    }

    #[test]
    fn the_frame_path_shows_its_tables_and_refusals() {
        use crate::datapath::{Recorder, Setup};
        use crate::flow::Endpoint;
        use crate::frame::build;
        let mut cfg = from_toml(include_str!("../../configs/medical.toml")).unwrap();
        cfg.management.allow = Some(alloc::vec!["10.12.1.0/28".into()]);
        let own = Ipv4Addr::new(10, 12, 1, 21);
        let mut dp = Datapath::new(Setup {
            config: Some(cfg),
            macs: alloc::vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]],
            addrs: alloc::vec![Some((own, 24)), Some((Ipv4Addr::new(10, 12, 2, 1), 24))],
            gateway: None,
            hash_seed: 1,
            memory: 64 << 20,
            now: crate::time::Instant(0),
            boot_id: 1,
        });
        let mut tx = Recorder::default();
        let mut syn = |src: [u8; 4]| {
            let mut f = build::tcp(
                Endpoint::new(Ipv4Addr::from(src), 40000),
                Endpoint::new(own, super::super::HTTP_PORT),
                0x02,
                &[],
            );
            dp.on_frame(0, &mut f, crate::time::Instant(1), &mut tx)
        };
        use crate::datapath::Verdict;
        assert_eq!(syn([10, 12, 1, 5]), Verdict::PassToStack);
        assert_eq!(syn([10, 12, 1, 99]), Verdict::Consumed);
        let st = Status::from_datapath(&dp);
        assert_eq!(st.metric("lbmed_management_not_allowed_total", &[]), 1);
        assert_eq!(st.metric("lbmed_table_capacity", &[("table", "arp")]), 1024);
        let text = st.to_text();
        assert!(text.contains("\ndrops: truncated-ethernet=0"), "{text}");
        assert!(text.contains("\npersistence: 0 clients"), "{text}");
        assert_eq!(st.services.len(), 5);
    }

    #[test]
    fn outbound_snat_flows_are_shown_and_counted() {
        use crate::datapath::{Recorder, Setup, Verdict};
        use crate::flow::Endpoint;
        use crate::frame::build;
        let mut cfg = from_toml(include_str!("../../configs/medical.toml")).unwrap();
        cfg.virtual_services[2].outbound_snat = true;
        let mut dp = Datapath::new(Setup {
            config: Some(cfg),
            macs: alloc::vec![[2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]],
            addrs: alloc::vec![
                Some((Ipv4Addr::new(10, 12, 1, 21), 24)),
                Some((Ipv4Addr::new(10, 12, 2, 1), 24))
            ],
            gateway: None,
            hash_seed: 1,
            memory: 64 << 20,
            now: crate::time::Instant(0),
            boot_id: 1,
        });
        let mut tx = Recorder::default();
        // XDS1 opens a connection to a workstation on the client side.
        let mut f = build::tcp(
            Endpoint::new(Ipv4Addr::new(10, 12, 2, 150), 40000),
            Endpoint::new(Ipv4Addr::new(10, 12, 1, 60), 104),
            0x02,
            &[],
        );
        let v = dp.on_frame(1, &mut f, crate::time::Instant(1), &mut tx);
        assert!(
            matches!(v, Verdict::Transmit(0) | Verdict::Consumed),
            "{v:?}"
        );
        let st = Status::from_datapath(&dp);
        assert_eq!(
            st.metric(
                "lbmed_outbound_connections_total",
                &[("service", "XDS-Registry")]
            ),
            1
        );
        let text = st.to_text();
        assert!(
            text.contains("\noutbound: XDS-Registry from 10.12.1.40 flows=1 tcp-ports=1"),
            "{text}"
        );
    }

    #[test]
    fn built_from_a_real_engine() {
        let cfg = from_toml(include_str!("../../configs/medical.toml")).unwrap();
        let engine = Engine::new(
            &cfg,
            Capacities {
                conntrack: 1024,
                persistence: 1024,
                ..Capacities::from_config(&cfg)
            },
        )
        .unwrap();
        let st = Status::from_engine(&cfg, &engine, |_, _| Some("never asked".into()));
        assert_eq!(st.services.len(), cfg.virtual_services.len());
        assert_eq!(st.services[0].servers.len(), 2);
        assert_eq!(st.services[0].ports, alloc::vec![104, 11112]);
        assert_eq!(
            st.metric("lbmed_table_capacity", &[("table", "conntrack")]),
            1024
        );
        assert_eq!(
            st.metric(
                "lbmed_drops_total",
                &[("reason", DropReason::ALL[0].name())]
            ),
            0
        );
        // Not down (unknown until checked): no reason shown.
        assert!(st.services[0].servers.iter().all(|s| s.reason.is_none()));
    }
}
