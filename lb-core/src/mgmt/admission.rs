//! Whether the appliance takes a signed request: the whole policy, from the
//! frame's payload and the running configuration to an action or a reason.
//!
//! Checks, in order (the first that fails is the reason):
//! 1. the payload holds a key and a signature ([`Kind::Malformed`]);
//! 2. the running config has admin keys ([`Kind::NoAdminKeys`]) and the
//!    request's key is one of them ([`Kind::UnknownKey`]);
//! 3. the signature is that key's over the body ([`Kind::BadSignature`]);
//! 4. the body is a request ([`Kind::Malformed`]);
//! 5. it is meant for this appliance ([`Kind::OtherAppliance`]);
//! 6. its serial is above the running one ([`Kind::Replay`] when equal,
//!    [`Kind::OldSerial`] when lower);
//! 7. the action makes sense: an upload's config envelope decodes and
//!    validates ([`Kind::BadConfig`]), a state change names a real server
//!    that exists ([`Kind::UnknownServer`]).
//!
//! Nothing is decoded before the signature is known good, so only an
//! administrator's bytes reach the config decoder.

use alloc::format;
use alloc::string::String;
use core::fmt;

use serde::{Deserialize, Serialize};

use super::keys::PublicKey;
use super::request::{Action, Signed};
use super::wire::FrameError;
use crate::config::{AdminState, Config};
use crate::envelope;

/// A request the appliance takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Admitted {
    pub serial: u64,
    /// Who signed it (for the log).
    pub key: PublicKey,
    pub action: Admit,
}

/// What to do, already checked against the running configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Apply this configuration (validated).
    Upload(alloc::boxed::Box<Config>),
    /// Apply the previous stored configuration (the caller has the store).
    Rollback,
    /// Set real server `server` of virtual service `service` to `state`.
    SetState {
        service: usize,
        server: usize,
        state: AdminState,
    },
}

/// Which rejection (for counters and programs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Kind {
    /// Not a signed request frame (a bare config blob, another protocol).
    NotSigned,
    /// The request frame claims or streams more than the limit.
    Oversized,
    /// The connection ended before the request did.
    Truncated,
    /// The request did not arrive within the deadline.
    TimedOut,
    /// Too short for a key and signature, or a body that is not a request.
    Malformed,
    /// The running config has no admin keys: nothing can be signed for it.
    NoAdminKeys,
    UnknownKey,
    BadSignature,
    /// Signed for another appliance.
    OtherAppliance,
    /// The serial equals the running one: a replay.
    Replay,
    /// The serial is below the running one: a replay or a downgrade.
    OldSerial,
    /// The uploaded config does not decode or validate.
    BadConfig,
    /// A state change for a service or server that does not exist.
    UnknownServer,
    /// Rollback with no previous stored config.
    NothingToRollBack,
    /// The appliance could not store or apply it (disk error, ...).
    NotApplied,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::NotSigned,
        Kind::Oversized,
        Kind::Truncated,
        Kind::TimedOut,
        Kind::Malformed,
        Kind::NoAdminKeys,
        Kind::UnknownKey,
        Kind::BadSignature,
        Kind::OtherAppliance,
        Kind::Replay,
        Kind::OldSerial,
        Kind::BadConfig,
        Kind::UnknownServer,
        Kind::NothingToRollBack,
        Kind::NotApplied,
    ];

    /// Name in metrics and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::NotSigned => "not_signed",
            Kind::Oversized => "oversized",
            Kind::Truncated => "truncated",
            Kind::TimedOut => "timed_out",
            Kind::Malformed => "malformed",
            Kind::NoAdminKeys => "no_admin_keys",
            Kind::UnknownKey => "unknown_key",
            Kind::BadSignature => "bad_signature",
            Kind::OtherAppliance => "other_appliance",
            Kind::Replay => "replay",
            Kind::OldSerial => "old_serial",
            Kind::BadConfig => "bad_config",
            Kind::UnknownServer => "unknown_server",
            Kind::NothingToRollBack => "nothing_to_roll_back",
            Kind::NotApplied => "not_applied",
        }
    }
}

/// A rejection: its kind and the reason in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub kind: Kind,
    pub reason: String,
}

impl Rejection {
    pub fn new(kind: Kind, reason: impl Into<String>) -> Rejection {
        Rejection {
            kind,
            reason: reason.into(),
        }
    }
}

impl From<FrameError> for Rejection {
    fn from(e: FrameError) -> Rejection {
        let kind = match e {
            FrameError::BadMagic(_) | FrameError::UnsupportedVersion(_) => Kind::NotSigned,
            FrameError::TooLarge { .. } => Kind::Oversized,
            FrameError::Truncated { .. } => Kind::Truncated,
        };
        Rejection::new(kind, format!("{e}"))
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

/// Judges a request frame's payload against the running configuration.
pub fn admit(running: &Config, payload: &[u8]) -> Result<Admitted, Rejection> {
    let Some(signed) = Signed::split(payload) else {
        return Err(Rejection::new(
            Kind::Malformed,
            format!(
                "malformed: {} bytes cannot hold a key and a signature",
                payload.len()
            ),
        ));
    };
    let keys = &running.management.admin_keys;
    if keys.is_empty() {
        return Err(Rejection::new(
            Kind::NoAdminKeys,
            "no admin key is configured: add one in management.admin_keys (boot config or console)",
        ));
    }
    if !keys
        .iter()
        .any(|k| PublicKey::parse(k).is_ok_and(|k| k == signed.key))
    {
        return Err(Rejection::new(
            Kind::UnknownKey,
            format!("signed by unknown key {}", signed.key.short()),
        ));
    }
    if !signed.verifies() {
        return Err(Rejection::new(
            Kind::BadSignature,
            format!(
                "bad signature (key {}): the request was altered or not signed by it",
                signed.key.short()
            ),
        ));
    }
    let Some(request) = signed.request() else {
        return Err(Rejection::new(
            Kind::Malformed,
            "malformed: the signed body is not a request of this version",
        ));
    };
    let hostname = &running.network.hostname;
    if !request.appliance.is_empty() && request.appliance != *hostname {
        return Err(Rejection::new(
            Kind::OtherAppliance,
            format!(
                "signed for appliance {:?}, this is {hostname:?}",
                request.appliance
            ),
        ));
    }
    let current = running.management.serial;
    if request.serial == current {
        return Err(Rejection::new(
            Kind::Replay,
            format!(
                "replayed: serial {} is the one already applied",
                request.serial
            ),
        ));
    }
    if request.serial < current {
        return Err(Rejection::new(
            Kind::OldSerial,
            format!(
                "old serial {}: the running config has serial {current} (replay or downgrade)",
                request.serial
            ),
        ));
    }
    let action = match request.action {
        Action::Upload(blob) => match envelope::decode(&blob) {
            Ok(mut config) => {
                config.management.serial = request.serial;
                Admit::Upload(alloc::boxed::Box::new(config))
            }
            Err(e) => {
                return Err(Rejection::new(
                    Kind::BadConfig,
                    format!("config rejected: {e}"),
                ));
            }
        },
        Action::Rollback => Admit::Rollback,
        Action::SetState {
            service,
            server,
            state,
        } => {
            let found = running
                .virtual_services
                .iter()
                .enumerate()
                .find(|(_, vs)| vs.label == service)
                .and_then(|(si, vs)| {
                    let ri = vs.real_servers.iter().position(|rs| rs.label == server)?;
                    Some((si, ri))
                });
            let Some((service, server)) = found else {
                return Err(Rejection::new(
                    Kind::UnknownServer,
                    format!("no real server {service}/{server} in the running config"),
                ));
            };
            Admit::SetState {
                service,
                server,
                state,
            }
        }
    };
    Ok(Admitted {
        serial: request.serial,
        key: signed.key,
        action,
    })
}

/// Counters of the management endpoint (shown on the page and in metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub applied: u64,
    /// Rejections by [`Kind`], in [`Kind::ALL`] order.
    pub rejected: [u64; Kind::ALL.len()],
    /// Connections cut to make room for a newer one (slow senders).
    pub evicted: u64,
}

impl Counters {
    pub fn reject(&mut self, kind: Kind) {
        if let Some(i) = Kind::ALL.iter().position(|k| *k == kind) {
            self.rejected[i] += 1;
        }
    }

    pub fn rejected(&self, kind: Kind) -> u64 {
        Kind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| self.rejected[i])
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;
    use crate::mgmt::keys::SigningKey;
    use crate::mgmt::request::{Request, sign};
    use alloc::string::ToString;
    use alloc::vec::Vec;

    const MEDICAL: &str = include_str!("../../configs/medical.toml");

    fn admin() -> SigningKey {
        SigningKey::from_seed([1; 32])
    }

    fn running() -> Config {
        let mut c = from_toml(MEDICAL).unwrap();
        c.management.admin_keys = alloc::vec![admin().public().to_string()];
        c.management.serial = 100;
        c
    }

    fn req(serial: u64, action: Action) -> Request {
        Request {
            serial,
            appliance: "lbmed1".into(),
            action,
        }
    }

    fn upload(cfg: &Config) -> Action {
        Action::Upload(envelope::encode(cfg).unwrap())
    }

    #[test]
    fn a_signed_upload_with_a_higher_serial_is_admitted_with_its_serial() {
        let mut new = running();
        new.virtual_services[0].real_servers[0].weight = 200;
        new.management.serial = 5; // whatever the file says, the request's serial wins
        let got = admit(&running(), &sign(&admin(), &req(101, upload(&new)))).unwrap();
        let Admit::Upload(cfg) = got.action else {
            panic!()
        };
        assert_eq!(cfg.management.serial, 101);
        assert_eq!(cfg.virtual_services[0].real_servers[0].weight, 200);
        assert_eq!(got.key, admin().public());
    }

    #[test]
    fn every_rejection_has_its_kind() {
        let run = running();
        let kind = |payload: &[u8]| admit(&run, payload).unwrap_err().kind;
        let good = sign(&admin(), &req(101, upload(&run)));

        assert_eq!(kind(&good[..50]), Kind::Malformed);
        let stranger = SigningKey::from_seed([2; 32]);
        assert_eq!(
            kind(&sign(&stranger, &req(101, upload(&run)))),
            Kind::UnknownKey
        );
        let mut forged = good.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(kind(&forged), Kind::BadSignature);
        let mut zero_sig = good.clone();
        zero_sig[32..96].fill(0);
        assert_eq!(kind(&zero_sig), Kind::BadSignature);
        assert_eq!(kind(&sign(&admin(), &req(100, upload(&run)))), Kind::Replay);
        assert_eq!(
            kind(&sign(&admin(), &req(99, upload(&run)))),
            Kind::OldSerial
        );
        let mut other = req(101, Action::Rollback);
        other.appliance = "lbmed2".into();
        assert_eq!(kind(&sign(&admin(), &other)), Kind::OtherAppliance);
        let mut corrupt = envelope::encode(&run).unwrap();
        let n = corrupt.len();
        corrupt[n - 3] ^= 0xff;
        assert_eq!(
            kind(&sign(&admin(), &req(101, Action::Upload(corrupt)))),
            Kind::BadConfig
        );
        let mut invalid = run.clone();
        invalid.virtual_services[0].real_servers.clear();
        let blob = envelope::wrap(
            envelope::FORMAT_VERSION,
            &postcard::to_allocvec(&invalid).unwrap(),
        );
        let e = admit(&run, &sign(&admin(), &req(101, Action::Upload(blob)))).unwrap_err();
        assert_eq!(e.kind, Kind::BadConfig);
        assert!(e.reason.contains("real_server"), "{}", e.reason);
        let set = |svc: &str, rs: &str| Action::SetState {
            service: svc.into(),
            server: rs.into(),
            state: AdminState::Drain,
        };
        assert_eq!(
            kind(&sign(&admin(), &req(101, set("DICOM-Modalities", "NOPE")))),
            Kind::UnknownServer
        );
        // A signed body that is not a request.
        let body = b"not postcard".to_vec();
        let mut msg = crate::mgmt::request::CONTEXT.to_vec();
        msg.extend_from_slice(&body);
        let mut raw = admin().public().0.to_vec();
        raw.extend_from_slice(&admin().sign(&msg));
        raw.extend_from_slice(&body);
        assert_eq!(kind(&raw), Kind::Malformed);

        let mut keyless = run.clone();
        keyless.management.admin_keys.clear();
        assert_eq!(admit(&keyless, &good).unwrap_err().kind, Kind::NoAdminKeys);

        let got = admit(
            &run,
            &sign(&admin(), &req(101, set("DICOM-Modalities", "DICOM2"))),
        )
        .unwrap();
        assert_eq!(
            got.action,
            Admit::SetState {
                service: 0,
                server: 1,
                state: AdminState::Drain
            }
        );
    }

    #[test]
    fn a_new_config_can_rotate_the_keys() {
        let next = SigningKey::from_seed([9; 32]);
        let mut rotated = running();
        rotated.management.admin_keys = alloc::vec![next.public().to_string()];
        let Admit::Upload(now_running) =
            admit(&running(), &sign(&admin(), &req(101, upload(&rotated))))
                .unwrap()
                .action
        else {
            panic!()
        };
        // The old key is out, the new one in.
        let old = admit(&now_running, &sign(&admin(), &req(102, Action::Rollback)));
        assert_eq!(old.unwrap_err().kind, Kind::UnknownKey);
        assert!(admit(&now_running, &sign(&next, &req(102, Action::Rollback))).is_ok());
    }

    #[test]
    fn counters_count_by_kind() {
        let mut c = Counters::default();
        c.reject(Kind::Replay);
        c.reject(Kind::Replay);
        c.reject(Kind::Oversized);
        assert_eq!(c.rejected(Kind::Replay), 2);
        assert_eq!(c.rejected_total(), 3);
        let names: Vec<_> = Kind::ALL.iter().map(|k| k.name()).collect();
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), names.len());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_payloads_are_rejected_not_panicking(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)
        ) {
            proptest::prop_assert!(admit(&running(), &bytes).is_err());
        }
    }
}
