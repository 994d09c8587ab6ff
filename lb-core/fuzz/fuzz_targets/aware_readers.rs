//! The readers protocol-aware services run on a client's first bytes:
//! the A-ASSOCIATE-RQ view and its full parse, the PDU cursor that follows
//! PDU boundaries through segments, the first-MSH reader and the AR the
//! appliance writes from it. Must never panic, and:
//! - the cursor, fed the bytes split at arbitrary points (each piece
//!   twice, the second time after the next piece), finds the same PDU
//!   headers as one pass over the whole;
//! - an MSH found in a prefix is the MSH found in the whole;
//! - the AR written for any MSH is one MLLP frame whose MSH, MSA and ERR
//!   segments parse, with MSA-2 holding the message's control ID.
//!
//! - the decision of a DICOM- and an HL7-aware service (with routes and
//!   persistence by identity) on every prefix never panics, and once it is
//!   not "need more" a longer prefix decides the same.
//!
//! Input: byte 0 is the split size (1..=256), the rest the client's bytes.
#![no_main]
use std::sync::OnceLock;

use lb_core::aware::{Awareness, Outcome};
use lb_core::config::from_toml;
use lb_core::wire::dicom::{Associate, AssociateRqRepr, PduCursor};
use lb_core::wire::hl7::{AckRepr, first_msh, frame, segments};
use libfuzzer_sys::fuzz_target;

const SERVICES: &str = include_str!("../../testdata/aware/services.toml");

fn services() -> &'static [Awareness] {
    static S: OnceLock<Vec<Awareness>> = OnceLock::new();
    S.get_or_init(|| {
        let cfg = from_toml(SERVICES).expect("the fuzz services validate");
        cfg.virtual_services
            .iter()
            .map(|vs| Awareness::from_config(vs).expect("aware"))
            .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, bytes)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).max(1);

    if let Ok(a) = Associate::new_checked(bytes) {
        let _ = a.called_ae().display();
        let _ = a.calling_ae().text();
        for item in a.items() {
            let _ = item;
        }
        if let Ok(r) = AssociateRqRepr::parse(&a) {
            assert!(a.is_complete());
            assert!(r.presentation_contexts > 0);
        }
    }

    let mut whole = Vec::new();
    PduCursor::new(7).feed(7, bytes, |t, n| whole.push((t, n)));
    let mut cut = Vec::new();
    let mut c = PduCursor::new(7);
    let pieces: Vec<(usize, &[u8])> = bytes
        .chunks(split)
        .enumerate()
        .map(|(i, p)| (i * split, p))
        .collect();
    for (k, &(at, piece)) in pieces.iter().enumerate() {
        c.feed(7 + at as u32, piece, |t, n| cut.push((t, n)));
        if let Some(&(nat, next)) = pieces.get(k + 1) {
            c.feed(7 + nat as u32, next, |t, n| cut.push((t, n)));
        }
        c.feed(7 + at as u32, piece, |t, n| cut.push((t, n)));
    }
    assert_eq!(whole, cut);

    for aware in services() {
        let mut decided: Option<Outcome> = None;
        for n in (0..=bytes.len()).step_by(split) {
            let o = aware.read(&bytes[..n], b"LB1");
            if let Some(d) = &decided {
                assert_eq!(&o, d, "a longer prefix decides otherwise");
            } else if o != Outcome::NeedMore {
                decided = Some(o);
            }
        }
    }

    let limit = 4096;
    let full = first_msh(bytes, limit);
    for n in (0..bytes.len()).step_by(split) {
        if let Ok(Some(m)) = first_msh(&bytes[..n], limit) {
            assert_eq!(full, Ok(Some(m)));
        }
    }
    if let Ok(Some(msh)) = full {
        let ack = AckRepr::unrouted(msh, msh.segment(), b"LB1", b"").emit();
        let (s, e) = frame(&ack).unwrap().expect("one whole frame");
        assert_eq!(e + 2, ack.len());
        let segs: Vec<&[u8]> = segments(&ack[s..e]).collect();
        assert_eq!(segs.len(), 3, "{:?}", String::from_utf8_lossy(&ack));
        let reply = first_msh(&ack, ack.len()).unwrap().unwrap();
        assert_eq!(reply.field_sep, msh.field_sep);
        assert!(segs[1].starts_with(b"MSA"));
        assert!(segs[2].starts_with(b"ERR"));
    }
});
