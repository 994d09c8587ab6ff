//! HL7 v2 check over MLLP: send a configured message framed
//! `0x0B … 0x1C 0x0D` with a fresh control ID (MSH-10) and expect an ACK
//! whose MSA-1 accepts (AA or CA) and whose MSA-2 echoes that control ID.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::dialog::{ParamsError, Step};
use super::verdict::{FailReason, Phase, Verdict};
use crate::wire::hl7::{CR, END_BLOCK, FrameError, Msh, START_BLOCK, frame_from, segments, trim};
/// Largest configured message and largest reply frame accepted.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Longest text kept from the reply for a failure reason.
const MAX_REASON_TEXT: usize = 64;
/// Prefix of our control IDs when none is configured; the check sequence
/// number follows.
pub const DEFAULT_CONTROL_ID_PREFIX: &str = crate::config::DEFAULT_HL7_CONTROL_ID_PREFIX;
/// Longest control-ID prefix (MSH-10 holds 20 characters; 10 digits follow).
const MAX_PREFIX: usize = 10;

/// A read-only patient query: harmless to any receiving system, and every
/// HL7 v2 receiver must acknowledge it even if it does not support queries.
pub const DEFAULT_MESSAGE: &str = "MSH|^~\\&|LBHEALTH|LB|||20260101000000||QRY^A19^QRY_A19|LBHC0000000000|P|2.3\r\
                                   QRD|20260101000000|R|I|LBHEALTH|||1^RD|HEALTHCHECK|DEM\r";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hl7Params {
    /// The message to send; segments separated by CR (LF or CRLF are
    /// converted). MSH-10 is replaced by a fresh control ID on every check.
    pub message: String,
    /// The control ID is this prefix and the check's 10-digit sequence
    /// number, so interface engines can recognise and filter checks.
    pub control_id_prefix: String,
}

impl Default for Hl7Params {
    fn default() -> Self {
        Hl7Params {
            message: String::from(DEFAULT_MESSAGE),
            control_id_prefix: String::from(DEFAULT_CONTROL_ID_PREFIX),
        }
    }
}

impl Hl7Params {
    pub(super) fn validate(&self) -> Result<(), ParamsError> {
        let m = self.message.as_bytes();
        let bad = ParamsError::BadField("hl7.message");
        // "MSH" + field separator + encoding characters.
        if m.len() < 8 || m.len() > MAX_MESSAGE || !m.starts_with(b"MSH") {
            return Err(bad);
        }
        if m[3].is_ascii_alphanumeric() || m[3].is_ascii_whitespace() {
            return Err(bad);
        }
        if m.iter().any(|&b| b == START_BLOCK || b == END_BLOCK) {
            return Err(bad);
        }
        let p = self.control_id_prefix.as_bytes();
        if p.len() > MAX_PREFIX
            || !p
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ParamsError::BadField("hl7.control_id_prefix"));
        }
        Ok(())
    }
}

/// Why an HL7 check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hl7Failure {
    /// The reply does not begin with the MLLP start block.
    NoStartBlock,
    /// The end block is not followed by a carriage return.
    BadFrameEnd,
    FrameTooLarge,
    /// The reply holds no MSH segment.
    NoMsh,
    /// The reply holds no MSA segment.
    NoMsa,
    /// MSA-1 is AE, AR, CE or CR; the text of MSA-3 and of the ERR
    /// segment (truncated), if any.
    NegativeAck {
        code: String,
        text: String,
    },
    UnknownAckCode(String),
    /// MSA-2 does not echo our control ID.
    ControlIdMismatch {
        expected: String,
        got: String,
    },
}

fn ack_meaning(code: &str) -> &'static str {
    match code {
        "AE" => "application error",
        "AR" => "application reject",
        "CE" => "commit error",
        "CR" => "commit reject",
        _ => "unknown",
    }
}

impl fmt::Display for Hl7Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hl7Failure::NoStartBlock => {
                f.write_str("reply does not start with MLLP start block 0x0B")
            }
            Hl7Failure::BadFrameEnd => f.write_str("MLLP end block 0x1C not followed by 0x0D"),
            Hl7Failure::FrameTooLarge => write!(f, "reply frame larger than {MAX_MESSAGE} bytes"),
            Hl7Failure::NoMsh => f.write_str("reply has no MSH segment"),
            Hl7Failure::NoMsa => f.write_str("reply has no MSA segment"),
            Hl7Failure::NegativeAck { code, text } => {
                write!(f, "ACK MSA-1={code} ({})", ack_meaning(code))?;
                if !text.is_empty() {
                    write!(f, ": {text}")?;
                }
                Ok(())
            }
            Hl7Failure::UnknownAckCode(c) => {
                write!(f, "ACK MSA-1={c:?} is not an acknowledgment code")
            }
            Hl7Failure::ControlIdMismatch { expected, got } => {
                write!(
                    f,
                    "ACK MSA-2={got:?} does not match control ID {expected:?}"
                )
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct Hl7Check {
    control_id: String,
    framed: Vec<u8>,
    buf: Vec<u8>,
}

/// Lossy text of at most [`MAX_REASON_TEXT`] bytes for a failure reason.
fn text(b: &[u8]) -> String {
    let b = &b[..b.len().min(MAX_REASON_TEXT)];
    String::from_utf8_lossy(b).into_owned()
}

impl Hl7Check {
    pub(super) fn new(p: &Hl7Params, seq: u32) -> Self {
        let control_id = alloc::format!("{}{seq:010}", p.control_id_prefix);
        // One segment per line, CR-terminated.
        let normalized = p.message.replace("\r\n", "\r").replace('\n', "\r");
        let mut framed = Vec::with_capacity(normalized.len() + 32);
        framed.push(START_BLOCK);
        for (i, segment) in normalized.split('\r').filter(|s| !s.is_empty()).enumerate() {
            if i == 0 {
                // validate() guarantees MSH and a one-byte field separator.
                let sep = segment.as_bytes()[3] as char;
                let mut fields: Vec<&str> = segment.split(sep).collect();
                // fields[0] is "MSH", fields[1] MSH-2, so MSH-10 is fields[9].
                if fields.len() < 10 {
                    fields.resize(10, "");
                }
                fields[9] = &control_id;
                for (j, f) in fields.iter().enumerate() {
                    if j > 0 {
                        framed.push(sep as u8);
                    }
                    framed.extend_from_slice(f.as_bytes());
                }
            } else {
                framed.extend_from_slice(segment.as_bytes());
            }
            framed.push(CR);
        }
        framed.extend_from_slice(&[END_BLOCK, CR]);
        Hl7Check {
            control_id,
            framed,
            buf: Vec::new(),
        }
    }

    pub(super) fn request(&self) -> Vec<u8> {
        self.framed.clone()
    }

    pub(super) fn on_closed(&self) -> Verdict {
        Verdict::Fail(FailReason::Closed(Phase::Hl7Ack))
    }

    pub(super) fn on_data(&mut self, data: &[u8]) -> Step {
        let old = self.buf.len();
        let room = (MAX_MESSAGE + 4).saturating_sub(old);
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
        match frame_from(&self.buf, old) {
            Ok(Some((start, end))) => Step::Done(self.judge(&self.buf[start..end])),
            Ok(None) if self.buf.len() > MAX_MESSAGE => {
                Step::Done(Hl7Failure::FrameTooLarge.into())
            }
            Ok(None) => Step::Wait,
            Err(FrameError::NoStartBlock) => Step::Done(Hl7Failure::NoStartBlock.into()),
            Err(FrameError::BadFrameEnd) => Step::Done(Hl7Failure::BadFrameEnd.into()),
        }
    }

    fn judge(&self, message: &[u8]) -> Verdict {
        let segments = || segments(message);
        let Some(msh) = segments().next().and_then(|s| Msh::parse(s).ok()) else {
            return Hl7Failure::NoMsh.into();
        };
        let (sep, component, subcomponent) =
            (msh.field_sep, msh.component_sep, msh.subcomponent_sep);
        let Some(msa) = segments().find(|s| s.starts_with(b"MSA") && s.get(3) == Some(&sep)) else {
            return Hl7Failure::NoMsa.into();
        };
        let mut fields = msa.split(|&b| b == sep).skip(1);
        let code = trim(fields.next().unwrap_or(b""));
        let got = trim(fields.next().unwrap_or(b""));
        let reason = fields.next().map(trim).unwrap_or(b"");
        match code {
            b"AA" | b"CA" => {}
            b"AE" | b"AR" | b"CE" | b"CR" => {
                let err = segments()
                    .find(|s| s.starts_with(b"ERR") && s.get(3) == Some(&sep))
                    .map(|s| err_text(s, sep, component, subcomponent))
                    .unwrap_or_default();
                let mut why = text(reason);
                if !err.is_empty() && err.as_bytes() != reason {
                    if !why.is_empty() {
                        why.push_str("; ");
                    }
                    why.push_str(&err);
                }
                return Hl7Failure::NegativeAck {
                    code: text(code),
                    text: text(why.as_bytes()),
                }
                .into();
            }
            _ => return Hl7Failure::UnknownAckCode(text(code)).into(),
        }
        if got != self.control_id.as_bytes() {
            return Hl7Failure::ControlIdMismatch {
                expected: self.control_id.clone(),
                got: text(got),
            }
            .into();
        }
        Verdict::Pass
    }
}

/// The human text of an ERR segment: ERR-8 (user message, v2.5), else the
/// text of ERR-3 (HL7 error code, `code^text^...`), else the text in ERR-1
/// (v2.3 error code and location, `seg^seq^field^code&text&table`).
fn err_text(err: &[u8], sep: u8, component: u8, subcomponent: u8) -> String {
    let fields: Vec<&[u8]> = err.split(|&b| b == sep).collect();
    let field = |i: usize| fields.get(i).map(|f| trim(f)).unwrap_or(b"");
    let part = |f: &[u8], c: u8, i: usize| -> Vec<u8> {
        f.split(|&b| b == c)
            .nth(i)
            .map(trim)
            .unwrap_or(b"")
            .to_vec()
    };
    let user = field(8);
    if !user.is_empty() {
        return text(user);
    }
    let code = part(field(3), component, 1);
    if !code.is_empty() {
        return text(&code);
    }
    let location = part(field(1), component, 3);
    let within = part(&location, subcomponent, 1);
    if !within.is_empty() {
        return text(&within);
    }
    text(field(1))
}

#[cfg(test)]
mod tests {
    use super::super::dialog::{Action, CheckKind, CheckParams, Dialog};
    use super::*;
    use crate::time::{Duration, Instant};
    use alloc::string::ToString;

    // Captured from the PyPI `hl7` 0.4.5 MLLP server (testdata/health/README.md);
    // the request carried control ID LBHC0000000001 (seq 1).
    const QUERY: &str = include_str!("../../testdata/health/hl7/query.hl7");
    const SENT: &[u8] = include_bytes!("../../testdata/health/hl7/ack_aa.c2s.bin");
    const AA: &[u8] = include_bytes!("../../testdata/health/hl7/ack_aa.s2c.bin");
    const AE: &[u8] = include_bytes!("../../testdata/health/hl7/ack_ae.s2c.bin");
    const AR: &[u8] = include_bytes!("../../testdata/health/hl7/ack_ar.s2c.bin");
    const CA: &[u8] = include_bytes!("../../testdata/health/hl7/ack_ca.s2c.bin");
    const WRONG_ID: &[u8] = include_bytes!("../../testdata/health/hl7/ack_wrong_id.s2c.bin");

    fn dialog(message: &str, seq: u32) -> (Dialog, Vec<u8>) {
        let p = CheckParams {
            kind: CheckKind::Hl7(Hl7Params {
                message: message.to_string(),
                ..Hl7Params::default()
            }),
            timeout: Duration::from_secs(5),
        };
        let mut d = Dialog::new(&p, seq).unwrap();
        assert_eq!(d.start(Instant(0)), Action::Connect);
        let Action::Send(req) = d.on_connected(Instant(1)) else {
            panic!("no request")
        };
        (d, req)
    }

    fn feed(d: &mut Dialog, bytes: &[u8], step: usize) -> Action {
        for piece in bytes.chunks(step.max(1)) {
            match d.on_data(piece, Instant(2)) {
                Action::Wait => {}
                a => return a,
            }
        }
        Action::Wait
    }

    fn failed(e: Hl7Failure) -> Action {
        Action::Done(e.into())
    }

    #[test]
    fn request_equals_what_the_library_server_received() {
        // The library parsed our framing and its re-serialization is identical.
        let (_, req) = dialog(QUERY, 1);
        assert_eq!(req, SENT);
    }

    #[test]
    fn fresh_control_id_per_check() {
        let (_, a) = dialog(DEFAULT_MESSAGE, 7);
        let (_, b) = dialog(DEFAULT_MESSAGE, 8);
        let a = String::from_utf8(a).unwrap();
        let b = String::from_utf8(b).unwrap();
        assert!(a.contains("|QRY^A19^QRY_A19|LBHC0000000007|P|2.3\r"));
        assert!(b.contains("|LBHC0000000008|"));
        assert!(a.starts_with("\x0bMSH|^~\\&|") && a.ends_with("\r\x1c\r"));
    }

    #[test]
    fn short_msh_is_padded_to_msh_10() {
        let (_, req) = dialog("MSH|^~\\&|A\nPID|1", 3);
        assert_eq!(req, b"\x0bMSH|^~\\&|A|||||||LBHC0000000003\rPID|1\r\x1c\r");
    }

    #[test]
    fn captured_aa_and_ca_pass_at_any_split() {
        for reply in [AA, CA] {
            for step in 1..=reply.len() {
                let (mut d, _) = dialog(QUERY, 1);
                assert_eq!(
                    feed(&mut d, reply, step),
                    Action::Done(Verdict::Pass),
                    "step {step}"
                );
            }
        }
    }

    #[test]
    fn captured_negative_acks_fail_with_code() {
        for (reply, code, meaning) in [
            (AE, "AE", "application error"),
            (AR, "AR", "application reject"),
        ] {
            let (mut d, _) = dialog(QUERY, 1);
            let e = Hl7Failure::NegativeAck {
                code: code.to_string(),
                text: String::new(),
            };
            assert_eq!(feed(&mut d, reply, 5), failed(e));
            assert_eq!(
                d.verdict().unwrap().to_string(),
                alloc::format!("fail: HL7 ACK MSA-1={code} ({meaning})")
            );
        }
    }

    #[test]
    fn captured_wrong_control_id_fails() {
        let (mut d, _) = dialog(QUERY, 1);
        let e = Hl7Failure::ControlIdMismatch {
            expected: "LBHC0000000001".to_string(),
            got: "NOT-LBHC0000000001".to_string(),
        };
        assert_eq!(feed(&mut d, WRONG_ID, 4), failed(e));
        // The captured AA answers seq 1, not seq 2.
        let (mut d, _) = dialog(QUERY, 2);
        assert!(matches!(
            feed(&mut d, AA, 1000),
            Action::Done(Verdict::Fail(FailReason::Hl7(
                Hl7Failure::ControlIdMismatch { .. }
            )))
        ));
    }

    #[test]
    fn commit_error_and_reject_with_text() {
        for code in ["CE", "CR"] {
            let (mut d, _) = dialog(QUERY, 1);
            let r = alloc::format!("\x0bMSH|^~\\&|X\rMSA|{code}|LBHC0000000001|queue full\r\x1c\r");
            let e = Hl7Failure::NegativeAck {
                code: code.to_string(),
                text: "queue full".to_string(),
            };
            assert_eq!(feed(&mut d, r.as_bytes(), 3), failed(e));
        }
    }

    #[test]
    fn malformed_replies() {
        let cases: &[(&[u8], Hl7Failure)] = &[
            (
                b"HTTP/1.0 400 Bad Request\r\n\r\n",
                Hl7Failure::NoStartBlock,
            ),
            (
                b"\x0bMSH|^~\\&|X\rMSA|AA|LBHC0000000001\r\x1cX",
                Hl7Failure::BadFrameEnd,
            ),
            (b"\x0bPID|1\r\x1c\r", Hl7Failure::NoMsh),
            (b"\x0bMSH|^~\\&|X\rERR|1\r\x1c\r", Hl7Failure::NoMsa),
            (
                b"\x0bMSH|^~\\&|X\rMSA|ZZ|LBHC0000000001\r\x1c\r",
                Hl7Failure::UnknownAckCode("ZZ".to_string()),
            ),
            (b"\x0bMSH|^~\\&|X\rMSA\r\x1c\r", Hl7Failure::NoMsa),
        ];
        for (reply, e) in cases {
            let (mut d, _) = dialog(QUERY, 1);
            assert_eq!(feed(&mut d, reply, 2), failed(e.clone()), "{reply:?}");
        }
    }

    #[test]
    fn err_segment_text_is_reported() {
        let cases: &[(&str, &str)] = &[
            // v2.5 ERR-8 user message.
            (
                "MSA|AE|LBHC0000000001\rERR||PID^1^3|204^Unknown key^HL70357|E||||Patient unknown",
                "Patient unknown",
            ),
            // v2.5 ERR-3 text only.
            (
                "MSA|AR|LBHC0000000001\rERR|||207^Application internal error^HL70357|E",
                "Application internal error",
            ),
            // v2.3 ERR-1 with code&text in its fourth component.
            (
                "MSA|AE|LBHC0000000001|Rejected\rERR|MSH^1^9^200&Unsupported message type&HL70357",
                "Rejected; Unsupported message type",
            ),
            ("MSA|AE|LBHC0000000001\rERR|oops", "oops"),
        ];
        for (segments, want) in cases {
            let (mut d, _) = dialog(QUERY, 1);
            let r = alloc::format!("\x0bMSH|^~\\&|X\r{segments}\r\x1c\r");
            let Action::Done(Verdict::Fail(FailReason::Hl7(Hl7Failure::NegativeAck {
                text, ..
            }))) = feed(&mut d, r.as_bytes(), 7)
            else {
                panic!("{segments}")
            };
            assert_eq!(text, *want);
        }
    }

    #[test]
    fn control_id_prefix_is_configurable() {
        let p = CheckParams {
            kind: CheckKind::Hl7(Hl7Params {
                control_id_prefix: "HC-".to_string(),
                ..Hl7Params::default()
            }),
            timeout: Duration::from_secs(5),
        };
        let mut d = Dialog::new(&p, 42).unwrap();
        d.start(Instant(0));
        let Action::Send(req) = d.on_connected(Instant(1)) else {
            panic!()
        };
        assert!(String::from_utf8(req).unwrap().contains("|HC-0000000042|"));
        let r = b"\x0bMSH|^~\\&|X\rMSA|AA|HC-0000000042\r\x1c\r";
        assert_eq!(feed(&mut d, r, 3), Action::Done(Verdict::Pass));
        let bad = Hl7Params {
            control_id_prefix: "A|B".to_string(),
            ..Hl7Params::default()
        };
        assert_eq!(
            bad.validate(),
            Err(ParamsError::BadField("hl7.control_id_prefix"))
        );
    }

    #[test]
    fn leading_blank_lines_and_lf_segments_are_tolerated() {
        let (mut d, _) = dialog(QUERY, 1);
        let r = b"\r\n\x0bMSH|^~\\&|X\nMSA|AA|LBHC0000000001\n\x1c\r";
        assert_eq!(feed(&mut d, r, 1), Action::Done(Verdict::Pass));
    }

    #[test]
    fn endless_frame_is_bounded() {
        let (mut d, _) = dialog(QUERY, 1);
        let mut last = d.on_data(b"\x0bMSH|^~\\&|", Instant(2));
        let junk = [b'x'; 4096];
        for _ in 0..(MAX_MESSAGE / junk.len() + 2) {
            last = d.on_data(&junk, Instant(2));
            if last != Action::Wait {
                break;
            }
        }
        assert_eq!(last, failed(Hl7Failure::FrameTooLarge));
    }

    #[test]
    fn closed_or_timeout_without_ack() {
        let (mut d, _) = dialog(QUERY, 1);
        d.on_data(b"\x0bMSH", Instant(2));
        let v = Verdict::Fail(FailReason::Closed(Phase::Hl7Ack));
        assert_eq!(d.on_closed(Instant(3)), Action::Done(v));
        let (mut d, _) = dialog(QUERY, 1);
        let v = Verdict::Fail(FailReason::Timeout(Phase::Hl7Ack));
        assert_eq!(d.on_timeout(Instant(5000)), Action::Done(v.clone()));
        assert_eq!(v.to_string(), "fail: timeout waiting for HL7 ACK");
    }

    #[test]
    fn bad_messages_are_rejected() {
        for m in ["", "PID|1", "MSHX^~\\&", "MSH|^~\\&|\x1c", "MSH|^~\\&|\x0b"] {
            let p = Hl7Params {
                message: m.to_string(),
                ..Hl7Params::default()
            };
            assert_eq!(
                p.validate(),
                Err(ParamsError::BadField("hl7.message")),
                "{m:?}"
            );
        }
        assert_eq!(Hl7Params::default().validate(), Ok(()));
    }
}
