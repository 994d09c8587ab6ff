//! Check parameters and schedules from the configuration model.

use alloc::string::{String, ToString};

use super::dialog::{CheckKind, CheckParams};
use super::dicom::DicomParams;
use super::hl7::Hl7Params;
use super::http::{HttpParams, StatusAccept};
use super::rise_fall::{RiseFall, ServerHealth};
use crate::config::{CheckType, RealServer, VirtualService};
use crate::time::Instant;

/// Where a real server's checks go: `check_port` if set, else the port the
/// service would forward to (the first service port, mapped for NAT/SNAT).
pub fn check_target(vs: &VirtualService, rs: &RealServer) -> (core::net::Ipv4Addr, u16) {
    let port = match vs.check_port {
        Some(p) => p,
        None => rs.target_port(vs.forwarding, vs.effective_check_port()),
    };
    (rs.ip, port)
}

impl CheckParams {
    /// The check of `rs` in `vs`; `None` when the service has no check
    /// (`check_type = none`: always up).
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
            CheckType::None => return None,
            CheckType::Connect => CheckKind::Tcp,
            CheckType::Http => CheckKind::Http(http()),
            CheckType::Https => CheckKind::Https(http()),
            CheckType::DicomEcho => CheckKind::Dicom(DicomParams {
                calling_ae: String::from(vs.calling_ae()),
                called_ae: String::from(vs.called_ae()),
            }),
            CheckType::Hl7 => CheckKind::Hl7(match &vs.check_hl7_message {
                Some(m) => Hl7Params { message: m.clone() },
                None => Hl7Params::default(),
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
        let (vs, rs) = service(CheckType::None);
        assert_eq!(CheckParams::from_config(&vs, &rs), None);
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
    }

    #[test]
    fn schedule_from_config_is_up_until_the_first_failure() {
        let (vs, rs) = service(CheckType::Connect);
        let mut s = ServerHealth::from_config(&vs, &rs, Instant(0));
        assert_eq!(s.health(), Health::Up);
        let due = s.next_due();
        assert!(due.millis() <= vs.check_interval.duration().millis() / 10);
        s.begin(due).unwrap();
        let fail = Verdict::Fail(crate::health::FailReason::ConnectFailed);
        assert_eq!(
            s.finish(due, fail),
            Some(Transition {
                from: Health::Up,
                to: Health::Down
            })
        );
    }
}
