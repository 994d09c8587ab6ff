//! DICOM C-ECHO check (PS3.8 upper layer, PS3.7 DIMSE):
//! A-ASSOCIATE-RQ → A-ASSOCIATE-AC → P-DATA-TF(C-ECHO-RQ) → C-ECHO-RSP
//! → A-RELEASE-RQ → A-RELEASE-RP.
//!
//! PDUs are reassembled from arbitrary reads in a buffer bounded by
//! [`MAX_PDU`]; several PDUs in one read are handled in order. Every length
//! field is checked against the bytes that carry it.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use super::dialog::{ParamsError, Step};
use super::verdict::{FailReason, Phase, Verdict};
use crate::wire::dicom::pdu_type::{
    ABORT as PDU_ABORT, ASSOCIATE_AC as PDU_ASSOCIATE_AC, ASSOCIATE_RJ as PDU_ASSOCIATE_RJ,
    ASSOCIATE_RQ as PDU_ASSOCIATE_RQ, P_DATA as PDU_P_DATA, RELEASE_RQ as PDU_RELEASE_RQ,
};
use crate::wire::dicom::{
    APPLICATION_CONTEXT, AbortRepr, AeTitle, HEADER_LEN, Items, Pdu, RejectRepr, item_type,
    pdu_name,
};
/// Verification SOP class.
const VERIFICATION: &[u8] = b"1.2.840.10008.1.1";
/// Implicit VR Little Endian transfer syntax.
const IMPLICIT_LE: &[u8] = b"1.2.840.10008.1.2";
/// Our implementation class UID (a UUID-derived UID under 2.25).
pub const IMPLEMENTATION_CLASS_UID: &[u8] = b"2.25.104778734817408606343595632606442857502";
/// Our implementation version name (at most 16 characters).
pub const IMPLEMENTATION_VERSION: &[u8] = b"LB_HEALTH_01";
/// Largest P-DATA PDU we ask the peer to send us.
pub const MAX_RECEIVE_PDU: u32 = 16 * 1024;
/// Largest PDU (of any type) accepted from the peer, header excluded.
pub const MAX_PDU: usize = 64 * 1024;
/// Largest command set reassembled from PDV fragments.
const MAX_COMMAND: usize = 4 * 1024;
/// The one presentation context we propose.
const PC_ID: u8 = 1;

const C_ECHO_RQ: u16 = 0x0030;
const C_ECHO_RSP: u16 = 0x8030;
const NO_DATA_SET: u16 = 0x0101;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DicomParams {
    /// Our AE title (calling).
    pub calling_ae: String,
    /// The real server's AE title (called).
    pub called_ae: String,
}

impl DicomParams {
    pub(super) fn validate(&self) -> Result<(), ParamsError> {
        let ok = AeTitle::is_valid_text;
        if !ok(&self.calling_ae) {
            return Err(ParamsError::BadField("dicom.calling_ae"));
        }
        if !ok(&self.called_ae) {
            return Err(ParamsError::BadField("dicom.called_ae"));
        }
        Ok(())
    }
}

/// Why a DICOM check failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DicomFailure {
    /// A-ASSOCIATE-RJ with its result, source and reason fields.
    AssociateRejected {
        result: u8,
        source: u8,
        reason: u8,
    },
    /// A-ABORT with its source and reason fields.
    Aborted {
        source: u8,
        reason: u8,
    },
    /// The Verification presentation context was not accepted.
    ContextRejected {
        result: u8,
    },
    /// The A-ASSOCIATE-AC did not answer our presentation context.
    ContextMissing,
    /// Accepted with a transfer syntax we did not propose.
    WrongTransferSyntax,
    /// A known PDU type that makes no sense at this point of the dialog.
    UnexpectedPdu {
        pdu_type: u8,
        waiting_for: Phase,
    },
    UnknownPdu(u8),
    /// A PDU length field larger than [`MAX_PDU`].
    PduTooLong(u32),
    /// A length or field that does not fit; names what.
    Malformed(&'static str),
    /// The response's command field is not C-ECHO-RSP.
    UnexpectedCommand(u16),
    MessageIdMismatch {
        expected: u16,
        got: u16,
    },
    /// C-ECHO-RSP with a status other than success.
    EchoStatus(u16),
}

fn context_result(result: u8) -> &'static str {
    match result {
        0 => "acceptance",
        1 => "user rejection",
        2 => "no reason (provider rejection)",
        3 => "abstract syntax not supported",
        4 => "transfer syntaxes not supported",
        _ => "reserved result",
    }
}

fn echo_status(status: u16) -> &'static str {
    match status {
        0x0122 => "SOP class not supported",
        0x0210 => "duplicate invocation",
        0x0211 => "unrecognized operation",
        0x0212 => "mistyped argument",
        0xA700..=0xA7FF => "out of resources",
        0xA900..=0xA9FF => "data set does not match SOP class",
        0xC000..=0xCFFF => "cannot understand",
        0x0001 | 0xB000..=0xBFFF => "warning",
        _ => "failure",
    }
}

impl fmt::Display for DicomFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DicomFailure::AssociateRejected {
                result,
                source,
                reason,
            } => {
                let kind = match result {
                    1 => "permanent",
                    2 => "transient",
                    _ => "reserved result",
                };
                write!(
                    f,
                    "A-ASSOCIATE-RJ result={result} source={source} reason={reason} ({}, {kind})",
                    RejectRepr {
                        result,
                        source,
                        reason
                    }
                    .reason_text()
                )
            }
            DicomFailure::Aborted { source, reason } => write!(
                f,
                "A-ABORT source={source} reason={reason} ({})",
                AbortRepr { source, reason }.reason_text()
            ),
            DicomFailure::ContextRejected { result } => write!(
                f,
                "Verification presentation context rejected: result={result} ({})",
                context_result(result)
            ),
            DicomFailure::ContextMissing => {
                f.write_str("A-ASSOCIATE-AC does not answer the Verification presentation context")
            }
            DicomFailure::WrongTransferSyntax => {
                f.write_str("A-ASSOCIATE-AC accepted a transfer syntax that was not proposed")
            }
            DicomFailure::UnexpectedPdu {
                pdu_type,
                waiting_for,
            } => write!(
                f,
                "unexpected {} (PDU type 0x{pdu_type:02x}) while waiting for {waiting_for}",
                pdu_name(pdu_type)
            ),
            DicomFailure::UnknownPdu(t) => write!(f, "unknown PDU type 0x{t:02x}"),
            DicomFailure::PduTooLong(n) => {
                write!(f, "PDU length {n} exceeds the limit of {MAX_PDU} bytes")
            }
            DicomFailure::Malformed(what) => write!(f, "malformed {what}"),
            DicomFailure::UnexpectedCommand(c) => {
                write!(f, "response command field 0x{c:04x} is not C-ECHO-RSP")
            }
            DicomFailure::MessageIdMismatch { expected, got } => write!(
                f,
                "C-ECHO-RSP answers message ID {got}, expected {expected}"
            ),
            DicomFailure::EchoStatus(s) => {
                write!(f, "C-ECHO-RSP status=0x{s:04x} ({})", echo_status(s))
            }
        }
    }
}

fn fail(e: DicomFailure) -> Step {
    Step::Done(e.into())
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Awaiting {
    Accept,
    Echo,
    /// The echo verdict is known; only the release is left.
    Release(Verdict),
}

#[derive(Debug)]
pub(super) struct DicomCheck {
    called: [u8; 16],
    calling: [u8; 16],
    message_id: u16,
    stage: Awaiting,
    /// Unparsed bytes from the peer: at most one PDU plus its header.
    buf: Vec<u8>,
    /// Command set fragments received so far.
    command: Vec<u8>,
}

fn item(out: &mut Vec<u8>, item_type: u8, value: &[u8]) {
    out.push(item_type);
    out.push(0);
    // Every item we build is far below 64 KiB.
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value);
}

fn pdu(pdu_type: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(6 + body.len());
    out.push(pdu_type);
    out.push(0);
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// One implicit-VR little-endian command element of group 0000.
fn element(out: &mut Vec<u8>, elem: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl DicomCheck {
    pub(super) fn new(p: &DicomParams, seq: u32) -> Self {
        DicomCheck {
            called: AeTitle::new(&p.called_ae).0,
            calling: AeTitle::new(&p.calling_ae).0,
            // 1..=65535, different for consecutive checks.
            message_id: (seq % 0xFFFF) as u16 + 1,
            stage: Awaiting::Accept,
            buf: Vec::new(),
            command: Vec::new(),
        }
    }

    /// The A-ASSOCIATE-RQ.
    pub(super) fn request(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        body.extend_from_slice(&1u16.to_be_bytes()); // protocol version
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&self.called);
        body.extend_from_slice(&self.calling);
        body.extend_from_slice(&[0; 32]);
        item(
            &mut body,
            item_type::APPLICATION_CONTEXT,
            APPLICATION_CONTEXT,
        );
        let mut pc = alloc::vec![PC_ID, 0, 0, 0];
        item(&mut pc, item_type::ABSTRACT_SYNTAX, VERIFICATION);
        item(&mut pc, item_type::TRANSFER_SYNTAX, IMPLICIT_LE);
        item(&mut body, item_type::PRESENTATION_CONTEXT_RQ, &pc);
        let mut user = Vec::new();
        item(
            &mut user,
            item_type::MAX_LENGTH,
            &MAX_RECEIVE_PDU.to_be_bytes(),
        );
        item(
            &mut user,
            item_type::IMPLEMENTATION_CLASS_UID,
            IMPLEMENTATION_CLASS_UID,
        );
        item(
            &mut user,
            item_type::IMPLEMENTATION_VERSION,
            IMPLEMENTATION_VERSION,
        );
        item(&mut body, item_type::USER_INFORMATION, &user);
        pdu(PDU_ASSOCIATE_RQ, &body)
    }

    /// The P-DATA-TF carrying the C-ECHO-RQ command set.
    fn echo_request(&self) -> Vec<u8> {
        let mut sop = VERIFICATION.to_vec();
        sop.push(0); // UI values are padded to even length with NUL
        let mut elements = Vec::with_capacity(64);
        element(&mut elements, 0x0002, &sop);
        element(&mut elements, 0x0100, &C_ECHO_RQ.to_le_bytes());
        element(&mut elements, 0x0110, &self.message_id.to_le_bytes());
        element(&mut elements, 0x0800, &NO_DATA_SET.to_le_bytes());
        let mut command = Vec::with_capacity(12 + elements.len());
        element(&mut command, 0x0000, &(elements.len() as u32).to_le_bytes());
        command.extend_from_slice(&elements);
        let mut body = Vec::with_capacity(6 + command.len());
        body.extend_from_slice(&(2 + command.len() as u32).to_be_bytes());
        body.push(PC_ID);
        body.push(0x03); // command, last fragment
        body.extend_from_slice(&command);
        pdu(PDU_P_DATA, &body)
    }

    fn release_request() -> Vec<u8> {
        pdu(PDU_RELEASE_RQ, &[0; 4])
    }

    fn waiting_for(&self) -> Phase {
        match self.stage {
            Awaiting::Accept => Phase::AssociateResponse,
            Awaiting::Echo => Phase::EchoResponse,
            Awaiting::Release(_) => Phase::ReleaseResponse,
        }
    }

    pub(super) fn on_timeout(&self) -> Verdict {
        match &self.stage {
            // The echo was answered; a slow release does not undo that.
            Awaiting::Release(v) => v.clone(),
            _ => Verdict::Fail(FailReason::Timeout(self.waiting_for())),
        }
    }

    pub(super) fn on_closed(&self) -> Verdict {
        match &self.stage {
            Awaiting::Release(v) => v.clone(),
            _ => Verdict::Fail(FailReason::Closed(self.waiting_for())),
        }
    }

    pub(super) fn on_data(&mut self, mut data: &[u8]) -> Step {
        let mut out = Vec::new();
        loop {
            // Top the buffer up to one whole PDU, never more, so memory
            // stays bounded however much the peer sends at once.
            if self.buf.len() < HEADER_LEN {
                let take = (HEADER_LEN - self.buf.len()).min(data.len());
                self.buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.buf.len() < HEADER_LEN {
                    break;
                }
            }
            let len = Pdu::new_unchecked(&self.buf[..]).length();
            if len as usize > MAX_PDU {
                return fail(DicomFailure::PduTooLong(len));
            }
            let need = HEADER_LEN + len as usize;
            let take = (need - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < need {
                break;
            }
            let pdu = core::mem::take(&mut self.buf);
            match self.on_pdu(Pdu::new_unchecked(&pdu[..])) {
                Step::Send(b) => out.extend_from_slice(&b),
                Step::Wait => {}
                done @ Step::Done(_) => return done,
            }
        }
        if out.is_empty() {
            Step::Wait
        } else {
            Step::Send(out)
        }
    }

    fn on_pdu(&mut self, pdu: Pdu<&[u8]>) -> Step {
        let (pdu_type, body) = (pdu.pdu_type(), pdu.body());
        let waiting_for = self.waiting_for();
        if let Awaiting::Release(v) = &self.stage {
            // Release reply, abort, release collision, stray data: the
            // verdict stands.
            if pdu_type == PDU_P_DATA {
                return Step::Wait;
            }
            return Step::Done(v.clone());
        }
        match pdu_type {
            PDU_ASSOCIATE_RJ => match RejectRepr::parse(&pdu) {
                Ok(RejectRepr {
                    result,
                    source,
                    reason,
                }) => fail(DicomFailure::AssociateRejected {
                    result,
                    source,
                    reason,
                }),
                Err(_) => fail(DicomFailure::Malformed("A-ASSOCIATE-RJ")),
            },
            PDU_ABORT => match AbortRepr::parse(&pdu) {
                Ok(AbortRepr { source, reason }) => fail(DicomFailure::Aborted { source, reason }),
                Err(_) => fail(DicomFailure::Malformed("A-ABORT")),
            },
            PDU_ASSOCIATE_AC if self.stage == Awaiting::Accept => match self.on_accept(body) {
                Ok(()) => {
                    self.stage = Awaiting::Echo;
                    Step::Send(self.echo_request())
                }
                // Associated, but no use: release it rather than drop it.
                Err(e) => self.release_with(e.into()),
            },
            PDU_P_DATA if self.stage == Awaiting::Echo => self.on_p_data(body),
            PDU_ASSOCIATE_RQ..=PDU_ABORT => {
                let e = DicomFailure::UnexpectedPdu {
                    pdu_type,
                    waiting_for,
                };
                self.fail_associated(e)
            }
            _ => self.fail_associated(DicomFailure::UnknownPdu(pdu_type)),
        }
    }

    /// Ends with `verdict` after releasing the association (A-RELEASE-RQ,
    /// then the peer's A-RELEASE-RP or close).
    fn release_with(&mut self, verdict: Verdict) -> Step {
        self.stage = Awaiting::Release(verdict);
        Step::Send(Self::release_request())
    }

    /// A failure: released if the association is up, else final at once.
    fn fail_associated(&mut self, e: DicomFailure) -> Step {
        match self.stage {
            Awaiting::Echo => self.release_with(e.into()),
            _ => fail(e),
        }
    }

    /// What to send before closing when the dialog ends early (a timeout
    /// while associated): the release request, so checks never leave an
    /// association to be cut by a reset.
    pub(super) fn goodbye(&self) -> Option<Vec<u8>> {
        (self.stage == Awaiting::Echo).then(Self::release_request)
    }

    fn on_accept(&mut self, body: &[u8]) -> Result<(), DicomFailure> {
        let malformed = DicomFailure::Malformed("A-ASSOCIATE-AC");
        // version, reserved, 16 + 16 AE (echoed, not checked per PS3.8), 32 reserved
        let variable = body.get(68..).ok_or(malformed.clone())?;
        let mut answer = None;
        for item in Items::new(variable) {
            let (t, value) = item
                .map(|i| (i.item_type, i.value))
                .map_err(|_| malformed.clone())?;
            if t != item_type::PRESENTATION_CONTEXT_AC {
                continue; // application context and user information: nothing to check
            }
            if value.len() < 4 {
                return Err(malformed);
            }
            if value[0] != PC_ID {
                continue;
            }
            let mut transfer = None;
            for s in Items::new(&value[4..]) {
                let s = s.map_err(|_| malformed.clone())?;
                if s.item_type == item_type::TRANSFER_SYNTAX && transfer.is_none() {
                    transfer = Some(s.value);
                }
            }
            answer = Some((value[2], transfer));
        }
        match answer {
            None => Err(DicomFailure::ContextMissing),
            Some((0, Some(ts))) if trim_uid(ts) == IMPLICIT_LE => Ok(()),
            Some((0, _)) => Err(DicomFailure::WrongTransferSyntax),
            Some((result, _)) => Err(DicomFailure::ContextRejected { result }),
        }
    }

    fn on_p_data(&mut self, mut body: &[u8]) -> Step {
        while !body.is_empty() {
            if body.len() < 6 {
                return self.fail_associated(DicomFailure::Malformed("P-DATA-TF item"));
            }
            let len = be32(&body[..4]) as usize;
            let Some(pdv) = body.get(4..4usize.saturating_add(len)) else {
                return self.fail_associated(DicomFailure::Malformed("P-DATA-TF item"));
            };
            if len < 2 {
                return self.fail_associated(DicomFailure::Malformed("P-DATA-TF item"));
            }
            body = &body[4 + len..];
            let (context, header, fragment) = (pdv[0], pdv[1], &pdv[2..]);
            if context != PC_ID {
                return self
                    .fail_associated(DicomFailure::Malformed("P-DATA-TF presentation context"));
            }
            if header & 0x01 == 0 {
                continue; // data set fragment: a C-ECHO-RSP has none to use
            }
            if self.command.len() + fragment.len() > MAX_COMMAND {
                return self.fail_associated(DicomFailure::Malformed("command set (too long)"));
            }
            self.command.extend_from_slice(fragment);
            if header & 0x02 != 0 {
                let command = core::mem::take(&mut self.command);
                let verdict = match self.echo_response(&command) {
                    Ok(()) => Verdict::Pass,
                    Err(e @ DicomFailure::EchoStatus(_)) => e.into(),
                    Err(e) => e.into(),
                };
                // Release politely whatever the status said.
                return self.release_with(verdict);
            }
        }
        Step::Wait
    }

    fn echo_response(&self, mut command: &[u8]) -> Result<(), DicomFailure> {
        let (mut field, mut answered, mut status) = (None, None, None);
        while !command.is_empty() {
            let malformed = DicomFailure::Malformed("command set element");
            if command.len() < 8 {
                return Err(malformed);
            }
            let group = u16::from_le_bytes([command[0], command[1]]);
            let elem = u16::from_le_bytes([command[2], command[3]]);
            let len = u32::from_le_bytes([command[4], command[5], command[6], command[7]]) as usize;
            let value = command
                .get(8..8usize.saturating_add(len))
                .ok_or(malformed.clone())?;
            command = &command[8 + len..];
            if group != 0 {
                return Err(malformed);
            }
            let us = || {
                <[u8; 2]>::try_from(value)
                    .map(u16::from_le_bytes)
                    .map_err(|_| DicomFailure::Malformed("command set US value"))
            };
            match elem {
                0x0100 => field = Some(us()?),
                0x0120 => answered = Some(us()?),
                0x0900 => status = Some(us()?),
                _ => {}
            }
        }
        let field = field.ok_or(DicomFailure::Malformed("C-ECHO-RSP (no command field)"))?;
        if field != C_ECHO_RSP {
            return Err(DicomFailure::UnexpectedCommand(field));
        }
        let got = answered.ok_or(DicomFailure::Malformed("C-ECHO-RSP (no message ID)"))?;
        if got != self.message_id {
            return Err(DicomFailure::MessageIdMismatch {
                expected: self.message_id,
                got,
            });
        }
        match status.ok_or(DicomFailure::Malformed("C-ECHO-RSP (no status)"))? {
            0 => Ok(()),
            s => Err(DicomFailure::EchoStatus(s)),
        }
    }
}

/// A UID without the trailing NUL or space some peers pad with.
fn trim_uid(uid: &[u8]) -> &[u8] {
    let end = uid
        .iter()
        .rposition(|&b| b != 0 && b != b' ')
        .map_or(0, |e| e + 1);
    &uid[..end]
}

#[cfg(test)]
mod tests {
    use super::super::dialog::{Action, CheckKind, CheckParams, Dialog};
    use super::*;
    use crate::time::{Duration, Instant};
    use alloc::string::ToString;

    // Captured from dcmtk 3.6.7 (see testdata/health/README.md).
    const OK_S2C: &[u8] = include_bytes!("../../testdata/health/dicom/echo_ok.s2c.bin");
    const OK_C2S: &[u8] = include_bytes!("../../testdata/health/dicom/echo_ok.c2s.bin");
    const BADCALLED_S2C: &[u8] =
        include_bytes!("../../testdata/health/dicom/echo_badcalled.s2c.bin");
    const REFUSED_S2C: &[u8] = include_bytes!("../../testdata/health/dicom/echo_refused.s2c.bin");
    const ABORT_S2C: &[u8] = include_bytes!("../../testdata/health/dicom/echo_abort.s2c.bin");
    const NOVERIFY_S2C: &[u8] = include_bytes!("../../testdata/health/dicom/echo_noverify.s2c.bin");

    fn be16(b: &[u8]) -> u16 {
        u16::from_be_bytes([b[0], b[1]])
    }

    /// The items of `b` as (type, value) pairs; `None` if one overruns.
    fn items(b: &[u8]) -> Option<Vec<(u8, &[u8])>> {
        Items::new(b)
            .map(|i| i.ok().map(|i| (i.item_type, i.value)))
            .collect()
    }

    /// Splits a byte stream into its PDUs.
    fn pdus(mut b: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        while !b.is_empty() {
            let n = 6 + be32(&b[2..6]) as usize;
            out.push(&b[..n]);
            b = &b[n..];
        }
        out
    }

    fn params(called: &str) -> CheckParams {
        CheckParams {
            kind: CheckKind::Dicom(DicomParams {
                calling_ae: "ECHOSCU".to_string(),
                called_ae: called.to_string(),
            }),
            timeout: Duration::from_secs(5),
        }
    }

    /// A dialog that has sent its A-ASSOCIATE-RQ (seq 0: message ID 1, as echoscu).
    fn dialog() -> (Dialog, Vec<u8>) {
        let mut d = Dialog::new(&params("STORESCP"), 0).unwrap();
        assert_eq!(d.start(Instant(0)), Action::Connect);
        let Action::Send(rq) = d.on_connected(Instant(1)) else {
            panic!("no A-ASSOCIATE-RQ")
        };
        (d, rq)
    }

    fn feed(d: &mut Dialog, bytes: &[u8], step: usize) -> Action {
        let mut last = Action::Wait;
        for piece in bytes.chunks(step.max(1)) {
            last = d.on_data(piece, Instant(2));
            if let Action::Done(_) = last {
                return last;
            }
        }
        last
    }

    fn failed(e: DicomFailure) -> Action {
        Action::Done(e.into())
    }

    /// `a` is the release request of an association that failed with `e`:
    /// after the peer's A-RELEASE-RP the check ends with `e`.
    fn released(d: &mut Dialog, a: Action, e: DicomFailure) {
        assert_eq!(a, Action::Send(DicomCheck::release_request()), "{e:?}");
        assert_eq!(d.goodbye(), None, "release already sent");
        let rp = pdu(0x06, &[0; 4]);
        assert_eq!(d.on_data(&rp, Instant(9)), failed(e));
    }

    #[test]
    fn associate_rq_layout() {
        let (_, rq) = dialog();
        assert_eq!(rq[0], 0x01);
        assert_eq!(be32(&rq[2..6]) as usize, rq.len() - 6);
        assert_eq!(be16(&rq[6..8]), 1, "protocol version");
        assert_eq!(&rq[10..26], b"STORESCP        ");
        assert_eq!(&rq[26..42], b"ECHOSCU         ");
        assert_eq!(&rq[42..74], &[0; 32]);
        let it = items(&rq[74..]).unwrap();
        let types: Vec<u8> = it.iter().map(|i| i.0).collect();
        assert_eq!(types, [0x10, 0x20, 0x50]);
        assert_eq!(it[0].1, APPLICATION_CONTEXT);
        let pc = it[1].1;
        assert_eq!(pc[0], PC_ID);
        let sub = items(&pc[4..]).unwrap();
        assert_eq!(sub, [(0x30, VERIFICATION), (0x40, IMPLICIT_LE)]);
        let user = items(it[2].1).unwrap();
        assert_eq!(user[0], (0x51, &MAX_RECEIVE_PDU.to_be_bytes()[..]));
        assert_eq!(user[1], (0x52, IMPLEMENTATION_CLASS_UID));
        assert_eq!(user[2], (0x55, IMPLEMENTATION_VERSION));
        assert!(IMPLEMENTATION_CLASS_UID.len() <= 64 && IMPLEMENTATION_VERSION.len() <= 16);
    }

    #[test]
    fn associate_rq_matches_echoscu_up_to_user_information() {
        // Same AE titles, application context and presentation context as
        // dcmtk's echoscu; only the user information (ours) differs.
        let (_, rq) = dialog();
        let mut theirs = pdus(OK_C2S)[0].to_vec();
        // dcmtk fills the reserved byte after the context ID with 0xFF; PS3.8
        // says send 00H (receivers ignore it).
        let pc = 74 + 4 + APPLICATION_CONTEXT.len();
        assert_eq!(theirs[pc], 0x20);
        theirs[pc + 6] = 0;
        let theirs = theirs.as_slice();
        let user_at = |b: &[u8]| {
            74 + items(&b[74..]).unwrap()[..2]
                .iter()
                .map(|i| 4 + i.1.len())
                .sum::<usize>()
        };
        assert_eq!(&rq[6..user_at(&rq)], &theirs[6..user_at(theirs)]);
    }

    #[test]
    fn echo_and_release_requests_equal_echoscu_bytes() {
        let (mut d, _) = dialog();
        let theirs = pdus(OK_C2S);
        let ours = pdus(OK_S2C);
        assert_eq!(ours.len(), 3, "AC, P-DATA (C-ECHO-RSP), RP");
        assert_eq!(
            d.on_data(ours[0], Instant(2)),
            Action::Send(theirs[1].to_vec())
        );
        assert_eq!(
            d.on_data(ours[1], Instant(3)),
            Action::Send(theirs[2].to_vec())
        );
        assert_eq!(d.on_data(ours[2], Instant(4)), Action::Done(Verdict::Pass));
    }

    #[test]
    fn storescp_exchange_passes_at_every_split() {
        let ours = pdus(OK_S2C);
        for step in 1..=OK_S2C.len() {
            let (mut d, _) = dialog();
            // Feed each PDU (as the server would send it, after our request) in
            // pieces of `step` bytes.
            let mut last = Action::Wait;
            for p in &ours {
                last = feed(&mut d, p, step);
            }
            assert_eq!(last, Action::Done(Verdict::Pass), "step {step}");
        }
    }

    #[test]
    fn all_pdus_in_one_read_pass() {
        let (mut d, _) = dialog();
        assert_eq!(d.on_data(OK_S2C, Instant(2)), Action::Done(Verdict::Pass));
    }

    #[test]
    fn several_pdus_in_one_read_send_both_requests() {
        let (mut d, _) = dialog();
        let ours = pdus(OK_S2C);
        let mut two = ours[0].to_vec();
        two.extend_from_slice(ours[1]);
        let Action::Send(out) = d.on_data(&two, Instant(2)) else {
            panic!()
        };
        let theirs = pdus(OK_C2S);
        assert_eq!(out, [theirs[1], theirs[2]].concat());
    }

    #[test]
    fn called_ae_not_recognized() {
        let (mut d, _) = dialog();
        let a = feed(&mut d, BADCALLED_S2C, 3);
        assert_eq!(
            a,
            failed(DicomFailure::AssociateRejected {
                result: 1,
                source: 1,
                reason: 7
            })
        );
        assert_eq!(
            d.verdict().unwrap().to_string(),
            "fail: DICOM A-ASSOCIATE-RJ result=1 source=1 reason=7 \
             (called AE title not recognized, permanent)"
        );
    }

    #[test]
    fn refused_association() {
        let (mut d, _) = dialog();
        let a = feed(&mut d, REFUSED_S2C, 100);
        let e = DicomFailure::AssociateRejected {
            result: 1,
            source: 1,
            reason: 1,
        };
        assert_eq!(
            e.to_string(),
            "A-ASSOCIATE-RJ result=1 source=1 reason=1 (no reason given, permanent)"
        );
        assert_eq!(a, failed(e));
    }

    #[test]
    fn verification_not_supported() {
        let (mut d, _) = dialog();
        let a = feed(&mut d, NOVERIFY_S2C, 7);
        released(&mut d, a, DicomFailure::ContextRejected { result: 3 });
        assert_eq!(
            DicomFailure::ContextRejected { result: 3 }.to_string(),
            "Verification presentation context rejected: result=3 (abstract syntax not supported)"
        );
    }

    /// The captured AC with its transfer syntax sub-item replaced.
    fn ac_with_ts(ts: &[u8]) -> Vec<u8> {
        let ac = pdus(OK_S2C)[0];
        let body = &ac[6..];
        let mut out = body[..68].to_vec();
        for (t, v) in items(&body[68..]).unwrap() {
            if t == 0x21 {
                let mut pc = v[..4].to_vec();
                item(&mut pc, item_type::TRANSFER_SYNTAX, ts);
                item(&mut out, 0x21, &pc);
            } else {
                item(&mut out, t, v);
            }
        }
        pdu(PDU_ASSOCIATE_AC, &out)
    }

    #[test]
    fn transfer_syntax_checked() {
        let (mut d, _) = dialog();
        let a = d.on_data(&ac_with_ts(b"1.2.840.10008.1.2.1"), Instant(2));
        released(&mut d, a, DicomFailure::WrongTransferSyntax);
        // A NUL-padded UID is the same UID.
        let (mut d, _) = dialog();
        let a = d.on_data(&ac_with_ts(b"1.2.840.10008.1.2\0"), Instant(2));
        assert!(matches!(a, Action::Send(_)));
    }

    #[test]
    fn context_missing() {
        let ac = pdus(OK_S2C)[0];
        let body = &ac[6..];
        let mut out = body[..68].to_vec();
        for (t, v) in items(&body[68..]).unwrap() {
            if t != 0x21 {
                item(&mut out, t, v);
            }
        }
        let (mut d, _) = dialog();
        let a = d.on_data(&pdu(PDU_ASSOCIATE_AC, &out), Instant(2));
        released(&mut d, a, DicomFailure::ContextMissing);
    }

    /// The captured C-ECHO-RSP with its status and message ID changed.
    fn echo_rsp(status: u16, message_id: u16) -> Vec<u8> {
        let mut rsp = pdus(OK_S2C)[1].to_vec();
        let n = rsp.len();
        rsp[n - 2..].copy_from_slice(&status.to_le_bytes());
        // (0000,0120) follows (0000,0100); find it.
        let at = rsp
            .windows(4)
            .position(|w| w == [0, 0, 0x20, 0x01])
            .unwrap();
        rsp[at + 8..at + 10].copy_from_slice(&message_id.to_le_bytes());
        rsp
    }

    fn associated() -> Dialog {
        let (mut d, _) = dialog();
        assert!(matches!(
            d.on_data(pdus(OK_S2C)[0], Instant(2)),
            Action::Send(_)
        ));
        d
    }

    #[test]
    fn echo_failure_status_still_releases() {
        let mut d = associated();
        let a = d.on_data(&echo_rsp(0x0122, 1), Instant(3));
        assert_eq!(a, Action::Send(DicomCheck::release_request()));
        let rp = pdus(OK_S2C)[2];
        let e = DicomFailure::EchoStatus(0x0122);
        assert_eq!(d.on_data(rp, Instant(4)), failed(e.clone()));
        assert_eq!(
            e.to_string(),
            "C-ECHO-RSP status=0x0122 (SOP class not supported)"
        );
    }

    #[test]
    fn echo_message_id_mismatch() {
        let mut d = associated();
        let a = d.on_data(&echo_rsp(0, 9), Instant(3));
        let e = DicomFailure::MessageIdMismatch {
            expected: 1,
            got: 9,
        };
        released(&mut d, a, e);
    }

    #[test]
    fn fragmented_command_set() {
        let rsp = pdus(OK_S2C)[1];
        let command = &rsp[12..];
        let mut body = Vec::new();
        let (a, b) = command.split_at(10);
        for (part, header) in [(a, 0x01u8), (b, 0x03u8)] {
            body.extend_from_slice(&(2 + part.len() as u32).to_be_bytes());
            body.push(PC_ID);
            body.push(header);
            body.extend_from_slice(part);
        }
        let mut d = associated();
        let a = d.on_data(&pdu(PDU_P_DATA, &body), Instant(3));
        assert_eq!(a, Action::Send(DicomCheck::release_request()));
    }

    #[test]
    fn abort_during_association() {
        let (mut d, _) = dialog();
        let a = d.on_data(&[0x07, 0, 0, 0, 0, 4, 0, 0, 2, 1], Instant(2));
        let e = DicomFailure::Aborted {
            source: 2,
            reason: 1,
        };
        assert_eq!(a, failed(e.clone()));
        assert_eq!(
            e.to_string(),
            "A-ABORT source=2 reason=1 (unrecognized PDU)"
        );
    }

    #[test]
    fn captured_storescp_abort_after_association() {
        // storescp accepted, then aborted (source 0, reason 0) on a bad command.
        for step in [1, 4, 200] {
            let (mut d, _) = dialog();
            let a = feed(&mut d, ABORT_S2C, step);
            let e = DicomFailure::Aborted {
                source: 0,
                reason: 0,
            };
            assert_eq!(a, failed(e.clone()), "step {step}");
            assert_eq!(
                e.to_string(),
                "A-ABORT source=0 reason=0 (aborted by the service user)"
            );
        }
    }

    #[test]
    fn abort_while_waiting_for_echo() {
        let mut d = associated();
        let a = d.on_data(&[0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0], Instant(2));
        assert_eq!(
            a,
            failed(DicomFailure::Aborted {
                source: 0,
                reason: 0
            })
        );
    }

    #[test]
    fn unexpected_and_unknown_pdus() {
        let (mut d, _) = dialog();
        let a = d.on_data(&[0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0], Instant(2));
        let e = DicomFailure::UnexpectedPdu {
            pdu_type: 6,
            waiting_for: Phase::AssociateResponse,
        };
        assert_eq!(a, failed(e.clone()));
        assert_eq!(
            e.to_string(),
            "unexpected A-RELEASE-RP (PDU type 0x06) while waiting for DICOM A-ASSOCIATE-AC"
        );
        let (mut d, _) = dialog();
        let a = d.on_data(&[0x48, 0x54, 0, 0, 0, 0], Instant(2));
        assert_eq!(a, failed(DicomFailure::UnknownPdu(0x48)));
        // A second AC while waiting for the echo answer.
        let mut d = associated();
        let a = d.on_data(pdus(OK_S2C)[0], Instant(2));
        let e = DicomFailure::UnexpectedPdu {
            pdu_type: 2,
            waiting_for: Phase::EchoResponse,
        };
        released(&mut d, a, e);
    }

    #[test]
    fn oversized_pdu_is_refused_before_buffering() {
        let (mut d, _) = dialog();
        let a = d.on_data(&[0x04, 0, 0x7f, 0xff, 0xff, 0xff], Instant(2));
        assert_eq!(a, failed(DicomFailure::PduTooLong(0x7fff_ffff)));
    }

    #[test]
    fn malformed_lengths() {
        // RJ with a short body.
        let (mut d, _) = dialog();
        let a = d.on_data(&[0x03, 0, 0, 0, 0, 2, 0, 1], Instant(2));
        assert_eq!(a, failed(DicomFailure::Malformed("A-ASSOCIATE-RJ")));
        // AC whose item length overruns the PDU.
        let mut ac = pdus(OK_S2C)[0].to_vec();
        ac[6 + 68 + 3] = 0xff;
        let (mut d, _) = dialog();
        let a = d.on_data(&ac, Instant(2));
        released(&mut d, a, DicomFailure::Malformed("A-ASSOCIATE-AC"));
        // AC too short for its fixed fields.
        let (mut d, _) = dialog();
        let a = d.on_data(&pdu(PDU_ASSOCIATE_AC, &[0; 10]), Instant(2));
        released(&mut d, a, DicomFailure::Malformed("A-ASSOCIATE-AC"));
        // P-DATA item longer than the PDU.
        let mut d = associated();
        let a = d.on_data(&pdu(PDU_P_DATA, &[0, 0, 1, 0, 1, 3]), Instant(2));
        released(&mut d, a, DicomFailure::Malformed("P-DATA-TF item"));
        // Command element longer than the command.
        let mut d = associated();
        let a = d.on_data(
            &pdu(PDU_P_DATA, &[0, 0, 0, 10, 1, 3, 0, 0, 0, 1, 9, 0, 0, 0]),
            Instant(2),
        );
        released(&mut d, a, DicomFailure::Malformed("command set element"));
    }

    #[test]
    fn wrong_command_field() {
        let mut rsp = pdus(OK_S2C)[1].to_vec();
        let at = rsp
            .windows(4)
            .position(|w| w == [0, 0, 0x00, 0x01])
            .unwrap();
        rsp[at + 8..at + 10].copy_from_slice(&0x8020u16.to_le_bytes());
        let mut d = associated();
        let a = d.on_data(&rsp, Instant(2));
        released(&mut d, a, DicomFailure::UnexpectedCommand(0x8020));
    }

    #[test]
    fn closed_and_timeout_by_phase() {
        let (mut d, _) = dialog();
        let v = Verdict::Fail(FailReason::Closed(Phase::AssociateResponse));
        assert_eq!(d.on_closed(Instant(2)), Action::Done(v));
        let mut d = associated();
        let v = Verdict::Fail(FailReason::Timeout(Phase::EchoResponse));
        assert_eq!(d.on_timeout(Instant(5000)), Action::Done(v));
        // Timed out while associated: the caller releases before closing.
        assert_eq!(d.goodbye(), Some(DicomCheck::release_request()));
        // After a successful echo, a missing release reply does not fail it.
        let mut d = associated();
        d.on_data(pdus(OK_S2C)[1], Instant(3));
        assert_eq!(d.on_closed(Instant(4)), Action::Done(Verdict::Pass));
        let mut d = associated();
        d.on_data(pdus(OK_S2C)[1], Instant(3));
        assert_eq!(d.on_timeout(Instant(6000)), Action::Done(Verdict::Pass));
    }

    #[test]
    fn message_id_follows_seq() {
        let p = DicomParams {
            calling_ae: "A".to_string(),
            called_ae: "B".to_string(),
        };
        assert_eq!(DicomCheck::new(&p, 0).message_id, 1);
        assert_eq!(DicomCheck::new(&p, 41).message_id, 42);
        assert_eq!(DicomCheck::new(&p, 0xFFFE).message_id, 0xFFFF);
        assert_eq!(DicomCheck::new(&p, 0xFFFF).message_id, 1);
    }

    #[test]
    fn ae_titles_validated() {
        for bad in ["", "                ", "SEVENTEEN_CHARS_X", "A\\B", "ÄE"] {
            let p = DicomParams {
                calling_ae: "LB".to_string(),
                called_ae: bad.to_string(),
            };
            assert_eq!(
                p.validate(),
                Err(ParamsError::BadField("dicom.called_ae")),
                "{bad:?}"
            );
        }
    }
}
