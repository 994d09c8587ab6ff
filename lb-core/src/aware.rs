//! Protocol-aware layer 7 services: what the relay does with a client's
//! first bytes before it chooses the real server (`protocol_aware`).
//!
//! A DICOM-aware service reads the fixed part of the A-ASSOCIATE-RQ (74
//! bytes, however the client's segments cut it) and routes by the called
//! AE title; an HL7-aware one reads the first message's MSH segment and
//! routes by MSH-5/MSH-6. The outcome is one of: wait for more bytes, bind
//! to one of a set of real servers (with the identity persistence may key
//! on), answer the client in the appliance's own name and close (DICOM
//! A-ASSOCIATE-RJ "called AE title not recognized", HL7 AR with an ERR
//! segment), or — bytes that are not the protocol at all — the standard's
//! answer to them (DICOM: A-ABORT, unexpected PDU) or a reset (HL7).
//!
//! Pure: the engine gives the contiguous bytes it holds and acts on the
//! outcome. The bytes themselves reach the chosen server unchanged.

use alloc::vec::Vec;

use crate::config::{PersistenceKey, ProtocolAware, VirtualService};
use crate::wire::dicom::{self, AbortRepr, AeTitle, Associate, RejectRepr, pdu_type};
use crate::wire::hl7::{self, AckRepr, Msh};

/// A route's match on one value: any, exact, or a prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    Any,
    Exact(Vec<u8>),
    Prefix(Vec<u8>),
}

impl Pattern {
    /// `*`, `PREFIX*` or a value (validated by the config).
    pub fn parse(text: &str) -> Pattern {
        match text.strip_suffix('*') {
            Some("") => Pattern::Any,
            Some(p) => Pattern::Prefix(p.as_bytes().to_vec()),
            None => Pattern::Exact(text.trim().as_bytes().to_vec()),
        }
    }

    /// Values compare as sent, without padding spaces (AE titles and HL7
    /// namespace IDs are case-sensitive).
    pub fn matches(&self, value: &[u8]) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(v) => v == value,
            Pattern::Prefix(p) => value.starts_with(p),
        }
    }
}

/// The routes of one service, compiled: server sets as a bit per real
/// server index (the config allows at most 64 servers).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Routes {
    /// Pattern, servers, the called AE title the server receives instead.
    Dicom(Vec<(Pattern, u64, Option<AeTitle>)>),
    Hl7(Vec<(Pattern, Pattern, u64)>),
}

/// A service's awareness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Awareness {
    routes: Routes,
    /// Persistence keys on the protocol's identity, not the address.
    by_identity: bool,
}

/// Who talks to whom, as the first protocol unit says: DICOM called and
/// calling AE titles; HL7 MSH-5 and MSH-3 (cut to 16 bytes). For counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pair {
    pub called: AeTitle,
    pub calling: AeTitle,
}

/// What to do with a connection whose first bytes were read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The first unit is not complete yet.
    NeedMore,
    /// Choose among `servers` (bit per real server index); `identity` is
    /// the persistence key when persistence is by identity.
    Bind {
        servers: u64,
        identity: Option<u32>,
        pair: Pair,
        /// DICOM: the called AE title to write into the request first.
        rewrite_called: Option<AeTitle>,
    },
    /// No route: send `reply` to the client, then close (FIN).
    Refuse { reply: Vec<u8>, pair: Pair },
    /// Not this protocol: send `reply` if any (then FIN), else reset.
    NotProtocol { reply: Option<Vec<u8>> },
}

/// Longest MSH segment read for routing (the relay holds at most
/// [`crate::splice::HOLD_PER_CONN`] early bytes anyway).
pub const MAX_MSH: usize = 2048;

impl Awareness {
    /// The service's awareness, `None` when it routes blindly. Route
    /// servers are resolved by label (validated by the config).
    pub fn from_config(vs: &VirtualService) -> Option<Awareness> {
        let mask = |labels: &[alloc::string::String]| {
            labels.iter().fold(0u64, |m, l| {
                match vs.real_servers.iter().position(|rs| &rs.label == l) {
                    Some(i) if i < 64 => m | 1 << i,
                    _ => m,
                }
            })
        };
        let routes = match vs.protocol_aware {
            ProtocolAware::None => return None,
            ProtocolAware::Dicom => Routes::Dicom(
                vs.ae_routes
                    .iter()
                    .map(|r| {
                        (
                            Pattern::parse(&r.called_ae),
                            mask(&r.servers),
                            r.rewrite_called_ae.as_deref().map(AeTitle::new),
                        )
                    })
                    .collect(),
            ),
            ProtocolAware::Hl7 => Routes::Hl7(
                vs.hl7_routes
                    .iter()
                    .map(|r| {
                        (
                            Pattern::parse(&r.receiving_application),
                            Pattern::parse(&r.receiving_facility),
                            mask(&r.servers),
                        )
                    })
                    .collect(),
            ),
        };
        Some(Awareness {
            routes,
            by_identity: vs.persistence != PersistenceKey::SourceIp
                && vs.persistence_timeout.is_some(),
        })
    }

    pub fn is_dicom(&self) -> bool {
        matches!(self.routes, Routes::Dicom(_))
    }

    /// Reads the client's first bytes (contiguous from its first byte).
    /// `control_id` names an HL7 reject the appliance writes.
    pub fn read(&self, first: &[u8], control_id: &[u8]) -> Outcome {
        match &self.routes {
            Routes::Dicom(routes) => self.read_dicom(routes, first),
            Routes::Hl7(routes) => self.read_hl7(routes, first, control_id),
        }
    }

    fn read_dicom(&self, routes: &[(Pattern, u64, Option<AeTitle>)], first: &[u8]) -> Outcome {
        let unexpected = || Outcome::NotProtocol {
            reply: Some(AbortRepr::UNEXPECTED_PDU.emit().to_vec()),
        };
        if first.first().is_some_and(|&t| t != pdu_type::ASSOCIATE_RQ) {
            return unexpected();
        }
        let a = match Associate::new_checked(first) {
            Ok(a) => a,
            Err(dicom::Error::Truncated) => return Outcome::NeedMore,
            Err(dicom::Error::Malformed(_)) => return unexpected(),
        };
        let pair = Pair {
            called: a.called_ae(),
            calling: a.calling_ae(),
        };
        if a.protocol_version() & 1 == 0 {
            return Outcome::Refuse {
                reply: RejectRepr::PROTOCOL_VERSION.emit().to_vec(),
                pair,
            };
        }
        let called = pair.called.text();
        let route = if routes.is_empty() {
            Some((u64::MAX, None))
        } else {
            routes
                .iter()
                .find(|(p, _, _)| p.matches(called))
                .map(|&(_, s, rewrite)| (s, rewrite))
        };
        match route {
            Some((servers, rewrite_called)) => Outcome::Bind {
                servers,
                identity: self.by_identity.then(|| identity(&[pair.calling.text()])),
                pair,
                rewrite_called,
            },
            None => Outcome::Refuse {
                reply: RejectRepr::CALLED_AE_NOT_RECOGNIZED.emit().to_vec(),
                pair,
            },
        }
    }

    fn read_hl7(
        &self,
        routes: &[(Pattern, Pattern, u64)],
        first: &[u8],
        control_id: &[u8],
    ) -> Outcome {
        let msh = match hl7::first_msh(first, MAX_MSH) {
            Ok(Some(m)) => m,
            Ok(None) => return Outcome::NeedMore,
            Err(_) => return Outcome::NotProtocol { reply: None },
        };
        let (app, facility) = msh.receiving();
        let pair = Pair {
            called: AeTitle::from_field(app),
            calling: AeTitle::from_field(msh.sending().0),
        };
        let servers = if routes.is_empty() {
            Some(u64::MAX)
        } else {
            routes
                .iter()
                .find(|(a, f, _)| a.matches(app) && f.matches(facility))
                .map(|&(_, _, s)| s)
        };
        match servers {
            Some(servers) => {
                let (sa, sf) = msh.sending();
                Outcome::Bind {
                    servers,
                    identity: self.by_identity.then(|| identity(&[sa, sf])),
                    pair,
                    rewrite_called: None,
                }
            }
            None => Outcome::Refuse {
                reply: reject_hl7(&msh, control_id),
                pair,
            },
        }
    }
}

/// The AR the appliance answers an unrouted HL7 message with: MSH-5 is
/// the field in error (HL7 table 0357 code 103, table value not found).
fn reject_hl7(msh: &Msh<'_>, control_id: &[u8]) -> Vec<u8> {
    let (app, facility) = msh.receiving();
    let mut text = Vec::with_capacity(64);
    text.extend_from_slice(b"no route for receiving application ");
    text.extend_from_slice(app);
    text.extend_from_slice(b" facility ");
    text.extend_from_slice(facility);
    AckRepr::unrouted(*msh, &text, control_id, b"").emit()
}

/// The persistence key of an identity (FNV-1a of its parts), never 0 (the
/// engine's "key on the address").
pub fn identity(parts: &[&[u8]]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            h = (h ^ u32::from(b'^')).wrapping_mul(0x0100_0193);
        }
        for &b in *p {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AeRoute, Hl7Route, from_toml};
    use alloc::string::ToString;

    const STORESCU: &[u8] = include_bytes!("../testdata/aware/rq_storescu.bin");
    const ADT: &[u8] = b"\x0bMSH|^~\\&|ADT1|GOOD HEALTH|LAB|MAIN|198808181126||ADT^A01^ADT_A01|MSG00001|P|2.5.1\rEVN|A01\r\x1c\r";

    fn service(toml_extra: &str) -> VirtualService {
        let text = alloc::format!(
            r#"
[[network.interface]]
name = "eth0"
address = "10.0.0.2"
prefix = 24
[[virtual_service]]
label = "PACS"
vip = "10.0.0.10"
ports = 104
forwarding = "layer7"
{toml_extra}
[[virtual_service.real_server]]
label = "A1"
ip = "10.0.0.21"
[[virtual_service.real_server]]
label = "A2"
ip = "10.0.0.22"
[[virtual_service.real_server]]
label = "B1"
ip = "10.0.0.23"
"#
        );
        let cfg = from_toml(&text).unwrap_or_else(|e| panic!("{e:?}"));
        cfg.virtual_services[0].clone()
    }

    fn dicom(persist: bool) -> Awareness {
        let mut vs = service("protocol_aware = \"dicom\"");
        vs.ae_routes = alloc::vec![
            AeRoute {
                called_ae: "PACS_A".to_string(),
                servers: alloc::vec!["A1".to_string(), "A2".to_string()],
                rewrite_called_ae: None,
            },
            AeRoute {
                called_ae: "ARCH*".to_string(),
                servers: alloc::vec!["B1".to_string()],
                rewrite_called_ae: Some("ARCHIVE".to_string()),
            },
        ];
        if persist {
            vs.persistence = PersistenceKey::CallingAe;
            vs.persistence_timeout = Some(crate::config::Secs(3600));
        }
        Awareness::from_config(&vs).unwrap()
    }

    fn with_called(called: &str) -> Vec<u8> {
        let mut b = STORESCU.to_vec();
        Associate::new_checked(&mut b[..])
            .unwrap()
            .set_called_ae(&AeTitle::new(called));
        b
    }

    #[test]
    fn plain_layer7_is_not_aware() {
        assert_eq!(Awareness::from_config(&service("")), None);
    }

    #[test]
    fn routes_by_called_ae_once_the_fixed_part_is_in() {
        let a = dicom(false);
        for n in 0..dicom::ASSOCIATE_FIXED_LEN {
            assert_eq!(a.read(&STORESCU[..n], b""), Outcome::NeedMore, "{n}");
        }
        let pair = Pair {
            called: AeTitle::new("PACS_A"),
            calling: AeTitle::new("MODALITY1"),
        };
        let want = Outcome::Bind {
            servers: 0b011,
            identity: None,
            pair,
            rewrite_called: None,
        };
        assert_eq!(a.read(&STORESCU[..dicom::ASSOCIATE_FIXED_LEN], b""), want);
        assert_eq!(a.read(STORESCU, b""), want);
        match a.read(&with_called("ARCHIVE2"), b"") {
            Outcome::Bind {
                servers,
                rewrite_called,
                ..
            } => {
                assert_eq!(servers, 0b100);
                assert_eq!(rewrite_called, Some(AeTitle::new("ARCHIVE")));
            }
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn unknown_called_ae_is_rejected_as_dcmtk_expects() {
        let a = dicom(false);
        match a.read(&with_called("NOBODY"), b"") {
            Outcome::Refuse { reply, pair } => {
                assert_eq!(reply, [3, 0, 0, 0, 0, 4, 0, 1, 1, 7]);
                assert_eq!(pair.called.text(), b"NOBODY");
            }
            o => panic!("{o:?}"),
        }
        // A wildcard route takes everything left.
        let mut vs = service("protocol_aware = \"dicom\"");
        vs.ae_routes = alloc::vec![AeRoute {
            called_ae: "*".to_string(),
            servers: alloc::vec!["B1".to_string()],
            rewrite_called_ae: None,
        }];
        let any = Awareness::from_config(&vs).unwrap();
        assert!(matches!(
            any.read(&with_called("NOBODY"), b""),
            Outcome::Bind { servers: 0b100, .. }
        ));
        // No routes at all: every server.
        let none = Awareness::from_config(&service("protocol_aware = \"dicom\"")).unwrap();
        assert!(matches!(
            none.read(STORESCU, b""),
            Outcome::Bind {
                servers: u64::MAX,
                ..
            }
        ));
    }

    #[test]
    fn not_an_association_request_is_aborted() {
        let a = dicom(false);
        let abort = Some(AbortRepr::UNEXPECTED_PDU.emit().to_vec());
        assert_eq!(
            a.read(b"GET / HTTP/1.1\r\n", b""),
            Outcome::NotProtocol {
                reply: abort.clone()
            }
        );
        assert_eq!(
            a.read(&dicom::release(pdu_type::RELEASE_RQ), b""),
            Outcome::NotProtocol { reply: abort }
        );
        let mut old = STORESCU.to_vec();
        old[7] = 0; // protocol version 0
        assert!(matches!(a.read(&old, b""), Outcome::Refuse { reply, .. }
            if reply == RejectRepr::PROTOCOL_VERSION.emit()));
    }

    #[test]
    fn identity_is_the_calling_ae_whatever_the_called() {
        let a = dicom(true);
        let id = |b: &[u8]| match a.read(b, b"") {
            Outcome::Bind { identity, .. } => identity.unwrap(),
            o => panic!("{o:?}"),
        };
        assert_eq!(id(STORESCU), id(&with_called("ARCHIVE9")));
        let mut other = STORESCU.to_vec();
        Associate::new_checked(&mut other[..]).unwrap();
        other[26..42].copy_from_slice(&AeTitle::new("MODALITY2").0);
        assert_ne!(id(STORESCU), id(&other));
        assert_eq!(identity(&[b"X"]), identity(&[b"X"]));
        assert_ne!(identity(&[b"A", b"BC"]), identity(&[b"AB", b"C"]));
    }

    fn hl7(persist: bool) -> Awareness {
        let mut vs = service("protocol_aware = \"hl7\"");
        vs.hl7_routes = alloc::vec![
            Hl7Route {
                receiving_application: "LAB".to_string(),
                receiving_facility: "*".to_string(),
                servers: alloc::vec!["A1".to_string()],
            },
            Hl7Route {
                receiving_application: "RIS".to_string(),
                receiving_facility: "NORTH".to_string(),
                servers: alloc::vec!["B1".to_string()],
            },
        ];
        if persist {
            vs.persistence = PersistenceKey::Sender;
            vs.persistence_timeout = Some(crate::config::Secs(60));
        }
        Awareness::from_config(&vs).unwrap()
    }

    #[test]
    fn routes_by_msh5_and_msh6() {
        let a = hl7(true);
        let end = ADT.iter().position(|&b| b == b'\r').unwrap();
        for n in 0..end {
            assert_eq!(a.read(&ADT[..n], b""), Outcome::NeedMore, "{n}");
        }
        match a.read(&ADT[..=end], b"") {
            Outcome::Bind {
                servers, identity, ..
            } => {
                assert_eq!(servers, 0b001);
                assert_eq!(identity, Some(super::identity(&[b"ADT1", b"GOOD HEALTH"])));
            }
            o => panic!("{o:?}"),
        }
        let ris = b"\x0bMSH|^~\\&|ADT1|GH|RIS|NORTH|||ADT^A01|9|P|2.3\r";
        assert!(matches!(
            a.read(ris, b""),
            Outcome::Bind { servers: 0b100, .. }
        ));
        assert_eq!(
            a.read(b"GET / HTTP/1.1\r\n", b""),
            Outcome::NotProtocol { reply: None }
        );
    }

    #[test]
    fn unrouted_message_gets_ar_with_err() {
        let a = hl7(false);
        let msg = b"\x0bMSH|^~\\&|ADT1|GH|RIS|SOUTH|||ADT^A01|MSG9|P|2.5\r";
        let Outcome::Refuse { reply, pair } = a.read(msg, b"LB0000000001") else {
            panic!()
        };
        assert_eq!(pair.called.text(), b"RIS");
        let (s, e) = hl7::frame(&reply).unwrap().unwrap();
        let segs: Vec<&[u8]> = hl7::segments(&reply[s..e]).collect();
        assert_eq!(
            segs[1],
            &b"MSA|AR|MSG9|no route for receiving application RIS facility SOUTH"[..]
        );
        assert!(segs[2].starts_with(b"ERR||MSH^1^5|103^Table value not found^HL70357|E"));
        assert!(segs[0].starts_with(b"MSH|^~\\&|RIS|SOUTH|ADT1|GH|"));
        assert!(segs[0].contains(&b'|'));
    }

    #[test]
    fn patterns() {
        assert!(Pattern::parse("*").matches(b""));
        assert!(Pattern::parse("CT*").matches(b"CT_SCANNER"));
        assert!(!Pattern::parse("CT*").matches(b"MR1"));
        assert!(Pattern::parse("PACS").matches(b"PACS"));
        assert!(!Pattern::parse("PACS").matches(b"pacs"));
    }
}
