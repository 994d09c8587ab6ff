//! Check parameters and schedules from the configuration model.

use alloc::string::{String, ToString};

use super::dialog::{CheckKind, CheckParams};
use super::dicom::DicomParams;
use super::hl7::Hl7Params;
use super::http::{HttpParams, StatusAccept};
use super::rise_fall::{RiseFall, ServerHealth};
use super::tls::{TlsParams, TlsVerify, ca_from_pem, pin_from_hex};
use super::verdict::{FailReason, Verdict};
use crate::config::{CheckType, RealServer, TlsVerifyMode, VirtualService};
use crate::time::Instant;

/// Where a real server's checks go: the server's `check_port`, else the
/// service's, else the port the service would forward to (the first
/// service port, mapped for NAT/SNAT). Ping checks ignore the port.
pub fn check_target(vs: &VirtualService, rs: &RealServer) -> (core::net::Ipv4Addr, u16) {
    let port = match rs.check_port.or(vs.check_port) {
        Some(p) => p,
        None => rs.target_port(vs.forwarding, vs.effective_check_port()),
    };
    (rs.ip, port)
}

/// The fixed verdict of a service without checks: `none` is always up,
/// `off` always down (maintenance). `None` when checks run.
pub fn fixed_verdict(vs: &VirtualService) -> Option<Verdict> {
    match vs.check_type {
        CheckType::None => Some(Verdict::Pass),
        CheckType::Off => Some(Verdict::Fail(FailReason::Maintenance)),
        _ => None,
    }
}

/// The service's check for `status`: `check=connect`, `check=https
/// tls-verify=none`, ...
pub fn check_summary(vs: &VirtualService) -> String {
    let name = match vs.check_type {
        CheckType::Connect => "connect",
        CheckType::Ping => "ping",
        CheckType::Http => "http",
        CheckType::Https => "https",
        CheckType::DicomEcho => "dicom_echo",
        CheckType::Hl7 => "hl7",
        CheckType::None => "none",
        CheckType::Off => "off",
    };
    let mut s = alloc::format!("check={name}");
    if vs.check_type == CheckType::Https {
        s.push_str(match vs.check_tls_verify {
            TlsVerifyMode::None => " tls-verify=none",
            TlsVerifyMode::Ca => " tls-verify=ca",
            TlsVerifyMode::Pin => " tls-verify=pin",
        });
    }
    s
}

/// The TLS settings of `rs`'s HTTPS check (validated config: the CA and
/// pin parse; should they not, the check fails rather than pass).
fn tls_params(vs: &VirtualService, rs: &RealServer) -> TlsParams {
    let verify = match vs.check_tls_verify {
        TlsVerifyMode::None => TlsVerify::None,
        TlsVerifyMode::Ca => TlsVerify::Ca(
            vs.check_tls_ca
                .as_deref()
                .and_then(|pem| ca_from_pem(pem).ok())
                .unwrap_or_default(),
        ),
        TlsVerifyMode::Pin => TlsVerify::Pin(
            vs.check_tls_pin
                .as_deref()
                .and_then(pin_from_hex)
                .unwrap_or([0; 32]),
        ),
    };
    TlsParams {
        verify,
        server_name: vs
            .check_tls_name
            .clone()
            .unwrap_or_else(|| rs.ip.to_string()),
    }
}

impl CheckParams {
    /// The check of `rs` in `vs`; `None` when the service has no check
    /// (`check_type = none` or `off`: see [`fixed_verdict`]).
    ///
    /// HTTP(S): the Host header is the real server's address and only 2xx
    /// statuses pass (the configuration has no status field yet).
    pub fn from_config(vs: &VirtualService, rs: &RealServer) -> Option<CheckParams> {
        let http = || HttpParams {
            host: rs.ip.to_string(),
            path: String::from(vs.check_path()),
            accept: StatusAccept::Success,
            expect: vs.check_expect.clone().unwrap_or_default(),
        };
        let kind = match vs.check_type {
            CheckType::None | CheckType::Off => return None,
            CheckType::Connect => CheckKind::Tcp,
            CheckType::Ping => CheckKind::Ping,
            CheckType::Http => CheckKind::Http(http()),
            CheckType::Https => CheckKind::Https(http(), tls_params(vs, rs)),
            CheckType::DicomEcho => CheckKind::Dicom(DicomParams {
                calling_ae: String::from(vs.calling_ae()),
                called_ae: String::from(vs.called_ae()),
            }),
            CheckType::Hl7 => CheckKind::Hl7(Hl7Params {
                message: vs
                    .check_hl7_message
                    .clone()
                    .unwrap_or_else(|| String::from(super::hl7::DEFAULT_MESSAGE)),
                control_id_prefix: String::from(vs.hl7_control_id_prefix()),
            }),
        };
        Some(CheckParams {
            kind,
            timeout: vs.check_timeout.duration(),
        })
    }
}

impl ServerHealth {
    /// The check schedule of `rs` in `vs`, first check within a tenth of the
    /// interval. The server starts up but one failure from down
    /// ([`RiseFall::provisional_up`]): it takes traffic at once and leaves
    /// at the first failed check.
    pub fn from_config(vs: &VirtualService, rs: &RealServer, now: Instant) -> ServerHealth {
        let (ip, port) = check_target(vs, rs);
        let seed = (u64::from(u32::from(ip)) << 16) | u64::from(port);
        let counter = RiseFall::provisional_up(u32::from(vs.check_rise), u32::from(vs.check_fall));
        ServerHealth::with_counter(vs.check_interval.duration(), counter, now, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Forwarding};
    use crate::health::{Action, Dialog, Health, Transition, Verdict};

    fn service(toml_type: CheckType) -> (VirtualService, RealServer) {
        let text = include_str!("../../configs/medical.toml");
        let cfg: Config = crate::config::from_toml(text).expect("example config validates");
        let mut vs = cfg.virtual_services[0].clone();
        vs.check_type = toml_type;
        let rs = vs.real_servers[0].clone();
        (vs, rs)
    }

    #[test]
    fn every_check_type_makes_valid_params() {
        for t in [
            CheckType::Connect,
            CheckType::Ping,
            CheckType::Http,
            CheckType::Https,
            CheckType::DicomEcho,
            CheckType::Hl7,
        ] {
            let (vs, rs) = service(t);
            let p = CheckParams::from_config(&vs, &rs).unwrap();
            assert_eq!(p.timeout, vs.check_timeout.duration());
            let mut d = Dialog::new(&p, 0).unwrap_or_else(|e| panic!("{t:?}: {e}"));
            assert_eq!(d.start(Instant(0)), Action::Connect);
        }
        for (t, fixed) in [
            (CheckType::None, Verdict::Pass),
            (CheckType::Off, Verdict::Fail(FailReason::Maintenance)),
        ] {
            let (vs, rs) = service(t);
            assert_eq!(CheckParams::from_config(&vs, &rs), None);
            assert_eq!(fixed_verdict(&vs), Some(fixed));
        }
        let (vs, _) = service(CheckType::Connect);
        assert_eq!(fixed_verdict(&vs), None);
    }

    #[test]
    fn dicom_titles_and_http_fields_come_from_the_service() {
        let (mut vs, rs) = service(CheckType::DicomEcho);
        vs.check_called_ae = Some("PACS1".into());
        let p = CheckParams::from_config(&vs, &rs).unwrap();
        let CheckKind::Dicom(d) = p.kind else {
            panic!()
        };
        assert_eq!(d.called_ae, "PACS1");
        assert_eq!(d.calling_ae, vs.calling_ae());
        vs.check_type = CheckType::Http;
        vs.check_request = Some("/status".into());
        vs.check_expect = Some("UP".into());
        let p = CheckParams::from_config(&vs, &rs).unwrap();
        let CheckKind::Http(h) = p.kind else { panic!() };
        assert_eq!((h.path.as_str(), h.expect.as_str()), ("/status", "UP"));
        assert_eq!(h.host, rs.ip.to_string());
    }

    #[test]
    fn summary_names_the_check_and_tls_policy() {
        let (mut vs, _) = service(CheckType::Https);
        assert_eq!(check_summary(&vs), "check=https tls-verify=none");
        vs.check_type = CheckType::DicomEcho;
        assert_eq!(check_summary(&vs), "check=dicom_echo");
    }

    #[test]
    fn check_port_choice() {
        let (mut vs, mut rs) = service(CheckType::Connect);
        vs.check_port = Some(8080);
        assert_eq!(check_target(&vs, &rs).1, 8080);
        vs.check_port = None;
        vs.forwarding = Forwarding::Nat;
        rs.port = Some(11112);
        assert_eq!(check_target(&vs, &rs).1, 11112);
        vs.forwarding = Forwarding::Dr;
        assert_eq!(check_target(&vs, &rs).1, vs.ports[0]);
        // A server's own check port wins over the service's.
        vs.check_port = Some(8080);
        rs.check_port = Some(9443);
        assert_eq!(check_target(&vs, &rs).1, 9443);
    }

    #[test]
    fn schedule_from_config_is_up_until_the_first_failure() {
        let (vs, rs) = service(CheckType::Connect);
        let mut s = ServerHealth::from_config(&vs, &rs, Instant(0));
        assert_eq!(s.health(), Health::Up);
        let due = s.next_due();
        assert!(due.millis() <= vs.check_interval.duration().millis() / 10);
        s.begin(due).unwrap();
        let fail = Verdict::Fail(FailReason::Refused);
        assert_eq!(
            s.finish(due, fail),
            Some(Transition {
                from: Health::Up,
                to: Health::Down
            })
        );
    }
}
