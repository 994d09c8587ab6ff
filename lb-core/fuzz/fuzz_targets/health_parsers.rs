//! Arbitrary peer bytes, split at arbitrary points, into every health-check
//! dialog after it has sent its request. Must never panic; once a dialog has
//! a verdict, every later event must repeat it.
//!
//! Input layout: byte 0 picks the dialog (and, for DICOM and HL7, whether a
//! real captured answer prefix is fed first to reach the later phases);
//! byte 1 the number of split sizes that follow; then the split sizes
//! (cycled); then the peer's bytes. The last byte's low bit picks a close
//! or a timeout at the end.
//!
//! HTTPS dialogs run rustls: the bytes are TLS records answering our client
//! hello (record framing, alerts, server hello, certificates), which is as
//! far into TLS as a fuzzer can go without the server's keys. The agent
//! dialog gets arbitrary agent replies.
#![no_main]
use std::fmt::Write;

use lb_core::health::{
    Action, CheckKind, CheckParams, Dialog, DicomParams, Hl7Params, HttpParams, StatusAccept,
    TlsParams, TlsVerify, parse_agent_reply,
};
use lb_core::time::{Duration, Instant};
use libfuzzer_sys::fuzz_target;

const DICOM_OK: &[u8] = include_bytes!("../../testdata/health/dicom/echo_ok.s2c.bin");
const HL7_HEAD: &[u8] = b"\x0bMSH|^~\\&|X|Y\rMSA|";
const CA: &str = include_str!("../../testdata/health/tls/ca.pem");

fn params(selector: u8) -> (CheckParams, &'static [u8]) {
    let http = |expect: &str, accept| HttpParams {
        host: "rs1.example".into(),
        path: "/health".into(),
        accept,
        expect: expect.into(),
    };
    let tls = |verify, name: &str| TlsParams {
        verify,
        server_name: name.into(),
    };
    let (kind, prefix): (CheckKind, &'static [u8]) = match selector % 12 {
        0 => (CheckKind::Tcp, b""),
        1 => (CheckKind::Http(http("OK", StatusAccept::Success)), b""),
        2 => (
            CheckKind::Https(
                http("", StatusAccept::SuccessOrRedirect),
                tls(TlsVerify::None, "10.1.2.3"),
            ),
            b"",
        ),
        8 => (
            CheckKind::Https(
                http("OK", StatusAccept::Success),
                tls(TlsVerify::Pin([7; 32]), "viewer.example"),
            ),
            // A plausible record header first, so more inputs reach the handshake.
            b"\x16\x03\x03",
        ),
        9 => (
            CheckKind::Https(
                http("OK", StatusAccept::Success),
                tls(
                    TlsVerify::Ca(lb_core::health::ca_from_pem(CA).expect("test CA parses")),
                    "viewer.test",
                ),
            ),
            b"",
        ),
        10 | 11 => (CheckKind::Agent, b""),
        3 => (
            CheckKind::Http(http("a longer expected text", StatusAccept::Exactly(200))),
            b"",
        ),
        4 | 5 => {
            let p = DicomParams {
                calling_ae: "LBHEALTH".into(),
                called_ae: "STORESCP".into(),
            };
            // 5: the real A-ASSOCIATE-AC first (length from its header), so the
            // fuzzer works on the echo and release phases.
            let prefix = if selector % 12 == 5 {
                let n = 6
                    + u32::from_be_bytes([DICOM_OK[2], DICOM_OK[3], DICOM_OK[4], DICOM_OK[5]])
                        as usize;
                &DICOM_OK[..n]
            } else {
                b""
            };
            (CheckKind::Dicom(p), prefix)
        }
        6 => (CheckKind::Hl7(Hl7Params::default()), b""),
        _ => (CheckKind::Hl7(Hl7Params::default()), HL7_HEAD),
    };
    (
        CheckParams {
            kind,
            timeout: Duration::from_secs(10),
        },
        prefix,
    )
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    // The agent's line parser on its own, too.
    let _ = parse_agent_reply(&data[1..]);
    let (params, prefix) = params(data[0]);
    let n_splits = usize::from(data[1] % 16);
    let Some(splits) = data.get(2..2 + n_splits) else {
        return;
    };
    let body = &data[2 + n_splits..];
    let mut stream = prefix.to_vec();
    stream.extend_from_slice(body);

    let mut d = Dialog::new(&params, u32::from(data[0])).expect("fuzz params are valid");
    assert_eq!(d.start(Instant(0)), Action::Connect);
    let mut t = 1u64;
    let mut verdict = match d.on_connected(Instant(t)) {
        Action::Done(v) => Some(v),
        Action::Send(req) => {
            assert!(!req.is_empty());
            None
        }
        // The agent speaks first.
        Action::Wait if matches!(params.kind, CheckKind::Agent) => None,
        a => panic!("on_connected gave {a:?}"),
    };

    let mut rest = stream.as_slice();
    let mut i = 0;
    while !rest.is_empty() {
        let size = splits
            .get(i % splits.len().max(1))
            .map_or(rest.len(), |&s| usize::from(s).max(1))
            .min(rest.len());
        let (piece, tail) = rest.split_at(size);
        rest = tail;
        i += 1;
        t += 1;
        let a = d.on_data(piece, Instant(t));
        match (&verdict, a) {
            (Some(v), a) => assert_eq!(a, Action::Done(v.clone()), "verdict changed"),
            (None, Action::Done(v)) => verdict = Some(v),
            (None, Action::Send(b)) => assert!(!b.is_empty()),
            (None, Action::Wait) => {}
            (None, Action::Connect) => panic!("Connect after connected"),
        }
    }

    let end = if data[data.len() - 1] & 1 == 0 {
        d.on_closed(Instant(t + 1))
    } else {
        d.on_timeout(Instant(10_000))
    };
    let Action::Done(v) = end else {
        panic!("close/timeout left the check open: {end:?}");
    };
    if let Some(old) = verdict {
        assert_eq!(old, v, "verdict changed at the end");
    }
    // Every reason prints.
    let mut s = String::new();
    write!(s, "{v}").unwrap();
    assert!(!s.is_empty());
});
