//! The System Overview page (`GET /` on port [`super::HTTP_PORT`]): one
//! self-contained HTML document (inline style, no scripts, no external
//! assets) that reloads itself every [`REFRESH_S`] seconds. One block per
//! virtual service with its VIP, ports, method and counters; one row per
//! real server, green (up), red (down), blue (drain), grey (halt), amber
//! (not checked yet), with the last check failure of a down server.
//!
//! Rows carry `data-service`, `data-server` and `data-state` attributes so
//! a browser test can read the states from the DOM.

use alloc::string::String;
use core::fmt::Write;

use super::status::Status;

/// Seconds between reloads.
pub const REFRESH_S: u32 = 3;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222;background:#f4f5f7}\
h1{font-size:1.4em;margin:0 0 .2em}\
.meta{color:#555;margin-bottom:1em}\
.vs{background:#fff;border:1px solid #ccd;border-radius:6px;margin:0 0 1em;padding:.6em .9em}\
.vs h2{font-size:1.1em;margin:.1em 0 .4em}\
.vs .facts{color:#444;font-size:.9em;margin-bottom:.5em}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;padding:.3em .6em;font-size:.9em}\
th{color:#555;border-bottom:1px solid #ccd}\
tr.rs td{border-bottom:1px solid #fff}\
tr.up{background:#c8e6c9}tr.up td.state{color:#1b5e20}\
tr.down{background:#ffcdd2}tr.down td.state{color:#b71c1c}\
tr.drain{background:#bbdefb}tr.drain td.state{color:#0d47a1}\
tr.halt{background:#e0e0e0}tr.halt td.state{color:#424242}\
tr.unknown{background:#fff3c4}tr.unknown td.state{color:#8d6e00}\
td.state{font-weight:bold;text-transform:uppercase}\
.legend span{display:inline-block;padding:.1em .5em;margin-right:.4em;border-radius:3px;font-size:.85em}\
pre{background:#fff;border:1px solid #ccd;padding:.6em;font-size:.8em;white-space:pre-wrap;overflow-wrap:anywhere}";

/// Escapes text for HTML element content and attribute values.
fn esc(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

fn e(text: &str) -> String {
    let mut s = String::new();
    esc(text, &mut s);
    s
}

/// The whole page for `status`.
pub fn render(status: &Status) -> String {
    let mut o = String::with_capacity(4096);
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\
<title>System Overview - {host}</title><style>{STYLE}</style></head><body>\n\
<h1>System Overview</h1>\n<div class=\"meta\">{host} &middot; version {ver} &middot; up {up} &middot; config serial {serial} &middot; refreshes every {REFRESH_S} s</div>\n",
        host = e(&status.hostname),
        ver = e(&status.version),
        up = uptime(status.uptime_s),
        serial = status.serial,
    );
    o.push_str(
        "<div class=\"legend\"><span class=\"up\" style=\"background:#c8e6c9\">up</span>\
<span style=\"background:#ffcdd2\">down</span><span style=\"background:#bbdefb\">drain</span>\
<span style=\"background:#e0e0e0\">halt</span><span style=\"background:#fff3c4\">not checked yet</span></div><br>\n",
    );
    if let Some(p) = &status.pair {
        pair_block(p, status.serial, &mut o);
    }
    if status.services.is_empty() {
        o.push_str("<p>No virtual services are configured.</p>\n");
    }
    for vs in &status.services {
        let ports: String = vs
            .ports
            .iter()
            .map(|p| alloc::format!("{p}"))
            .collect::<alloc::vec::Vec<_>>()
            .join(",");
        let _ = write!(
            o,
            "<div class=\"vs\" data-service=\"{l}\"><h2>{l}</h2>\
<div class=\"facts\">VIP {vip}:{ports} &middot; {proto} &middot; {fwd} &middot; {sched} &middot; \
{active} open, {conns} connections, {pkts} packets, {bytes} bytes</div>\n\
<table><tr><th>real server</th><th>address</th><th>state</th><th>weight</th><th>open</th>\
<th>connections</th><th>packets</th><th>bytes</th><th>last check</th></tr>\n",
            l = e(&vs.label),
            vip = e(&vs.vip),
            proto = e(&vs.protocol),
            fwd = e(&vs.forwarding),
            sched = e(&vs.scheduler),
            active = vs.active,
            conns = vs.connections,
            pkts = vs.packets,
            bytes = vs.bytes,
        );
        for rs in &vs.servers {
            let state = rs.state();
            let _ = writeln!(
                o,
                "<tr class=\"rs {state}\" data-service=\"{svc}\" data-server=\"{l}\" data-state=\"{state}\">\
<td>{l}</td><td>{ip}:{port}</td><td class=\"state\">{state}</td><td>{w}</td><td>{a}</td><td>{c}</td>\
<td>{p}</td><td>{b}</td><td class=\"reason\">{r}</td></tr>",
                svc = e(&vs.label),
                l = e(&rs.label),
                ip = e(&rs.ip),
                port = rs.port,
                w = rs.weight,
                a = rs.active,
                c = rs.connections,
                p = rs.packets,
                b = rs.bytes,
                r = e(rs.reason.as_deref().unwrap_or("")),
            );
        }
        o.push_str("</table></div>\n");
    }
    if !status.details.is_empty() {
        o.push_str("<h2 style=\"font-size:1.1em\">Counters</h2><pre>");
        for l in &status.details {
            esc(l, &mut o);
            o.push('\n');
        }
        o.push_str("</pre>\n");
    }
    o.push_str("</body></html>\n");
    o
}

/// The clustered pair: role, peer, config agreement, sync, faults in red.
fn pair_block(p: &super::status::PairStatus, serial: u64, o: &mut String) {
    let colour = if !p.faults.is_empty() {
        "#ffcdd2"
    } else if p.role == "master" {
        "#c8e6c9"
    } else {
        "#bbdefb"
    };
    let _ = write!(
        o,
        "<div class=\"vs\" id=\"pair\" data-role=\"{role}\" data-faults=\"{nf}\" style=\"background:{colour}\">\
<h2>Clustered pair: {role}</h2><div class=\"facts\">VRID {vrid} &middot; priority {prio} &middot; in this role for {secs} s",
        role = e(&p.role),
        nf = p.faults.len(),
        vrid = p.vrid,
        prio = p.priority,
        secs = p.for_ms / 1000,
    );
    if let Some(m) = &p.master {
        let _ = write!(o, " &middot; master {}", e(m));
    }
    if let (Some(r), Some(s)) = (&p.peer_role, p.peer_serial) {
        let agree = if p.config_agree == Some(true) {
            "configs agree"
        } else {
            "configs DIFFER"
        };
        let _ = write!(
            o,
            " &middot; peer {} &middot; config serial {serial} here, {s} there ({agree})",
            e(r)
        );
    }
    if let Some(s) = &p.sync {
        let _ = write!(
            o,
            " &middot; sync {}{}",
            e(s),
            if p.sync_complete {
                ", copy complete"
            } else {
                ""
            }
        );
    }
    o.push_str("</div>\n");
    for f in &p.faults {
        let _ = writeln!(
            o,
            "<div class=\"fault\" style=\"color:#b71c1c;font-weight:bold\">{}</div>",
            e(f)
        );
    }
    o.push_str("</div>\n");
}

fn uptime(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    if d > 0 {
        alloc::format!("{d}d {h}h {m}m")
    } else {
        alloc::format!("{h}h {m}m {}s", s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mgmt::status::sample_status;

    #[test]
    fn one_row_per_server_coloured_by_state() {
        let mut st = sample_status();
        st.services[0].label = "<script>".into();
        let html = render(&st);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(html.contains("http-equiv=\"refresh\""));
        for (server, state) in [
            ("PACS1", "up"),
            ("PACS2", "down"),
            ("PACS3", "drain"),
            ("PACS4", "halt"),
        ] {
            assert!(
                html.contains(&alloc::format!(
                    "data-server=\"{server}\" data-state=\"{state}\""
                )),
                "{server} {state}"
            );
        }
        assert!(html.contains("connection refused"));
        // Self-contained: nothing is fetched from elsewhere; text is escaped.
        assert!(!html.contains("src=") && !html.contains("href="));
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("up 1h 2m 3s"));
    }
}
