//! `fallback = { page = "..." }`: while no real server of a service may
//! take a new connection, the appliance answers HTTP itself with
//! `503 Service Unavailable` and the configured page.
//!
//! It keeps no state, so a flood of clients costs no table entry:
//! - the SYN is answered with a SYN-ACK whose ISN is a SYN cookie
//!   ([`Cookies`], keyed apart from the layer 7 relay's);
//! - the first data segment (the request) proves the handshake (seq =
//!   client ISN + 1, ack = our ISN + 1) and is answered with the whole
//!   response and FIN at once (the page is bounded to fit any first
//!   window); a retransmitted request, when the answer was lost, is
//!   answered again;
//! - the client's FIN is acknowledged, so its side closes at once.
//!
//! Everything else (ACKs of the answer, the rest of a long request) is
//! dropped as belonging to no flow. The cost of statelessness: a client
//! whose request spans several segments gets the answer after the first,
//! and an answer lost in part is not repaired (LANs rarely lose one; the
//! client's own timeout ends it).

use alloc::format;
use alloc::vec::Vec;

use super::{Decision, Engine};
use crate::config::MAX_FALLBACK_PAGE;
use crate::frame::{DropReason, L4Packet, TcpFlags};
use crate::splice::cookie::Cookies;
use crate::splice::options::{SynOptions, parse_syn};
use crate::splice::segment::{Originate, Seg};
use crate::time::Instant;

/// The window the appliance offers: a request fits, nothing more is
/// wanted.
const WINDOW: u16 = 8192;
/// The MSS the appliance announces and the largest segment it sends.
const MSS: u16 = 1460;

/// The HTTP response the page is served as (built once, at configuration).
pub(super) fn response(body: &str) -> Vec<u8> {
    debug_assert!(body.len() <= MAX_FALLBACK_PAGE);
    let mut r = format!(
        "HTTP/1.1 503 Service Unavailable\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\n\
         Retry-After: 60\r\n\
         Cache-Control: no-store\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

/// The responder's key (one per engine, from the boot-time seed).
pub(super) fn cookies(seed: u64) -> Cookies {
    Cookies::new(seed ^ 0x7061_6765_5f35_3033)
}

impl Engine {
    /// A SYN to service `svc` while none of its real servers may take it:
    /// answered with a cookie SYN-ACK.
    pub(super) fn page_syn(
        &mut self,
        frame: &[u8],
        pkt: &L4Packet,
        svc: usize,
        now: Instant,
    ) -> Result<Decision, DropReason> {
        let seg = Seg::read(frame, pkt)?;
        let opts = parse_syn(seg.options(frame));
        let isn = self.page_cookies.make(&pkt.key, seg.seq, &opts, now);
        let synack = Originate {
            src: pkt.key.dst,
            dst: pkt.key.src,
            seq: isn,
            ack: Some(seg.seq.wrapping_add(1)),
            control: TcpFlags::SYN,
            window: WINDOW,
            syn: SynOptions {
                mss: Some(MSS),
                wscale: None,
                sack_permitted: false,
                timestamps: false,
            },
            payload: &[],
        };
        self.l7.send(&self.routes, &synack);
        self.services[svc].stats.fallback_syns += 1;
        Ok(Decision::Consumed)
    }

    /// A TCP segment without a flow to a service with a fallback page:
    /// `Some` if it was the page's (a request on a handshake the page
    /// answered, or a FIN), `None` to handle it as usual.
    pub(super) fn page_segment(
        &mut self,
        frame: &[u8],
        pkt: &L4Packet,
        svc: usize,
        now: Instant,
    ) -> Option<Result<Decision, DropReason>> {
        let seg = Seg::read(frame, pkt).ok()?;
        let f = seg.flags;
        if !f.ack() || f.syn() || f.rst() {
            return None;
        }
        let (vip, client) = (pkt.key.dst, pkt.key.src);
        if seg.len > 0 {
            let co = self.page_cookies.check(&pkt.key, seg.seq, seg.ack, now)?;
            let response = self.services[svc].page.as_deref()?;
            let mss = usize::from(co.mss.min(MSS));
            let mut seq = seg.ack;
            let ack = seg.end();
            let chunks = response.chunks(mss);
            let last = chunks.len().saturating_sub(1);
            for (i, chunk) in chunks.enumerate() {
                let segment = Originate {
                    src: vip,
                    dst: client,
                    seq,
                    ack: Some(ack),
                    control: if i == last { TcpFlags::FIN } else { 0x08 },
                    window: WINDOW,
                    syn: SynOptions::default(),
                    payload: chunk,
                };
                // `response` borrows `services`; the outbox is another field.
                self.l7.send(&self.routes, &segment);
                seq = seq.wrapping_add(chunk.len() as u32);
            }
            self.services[svc].stats.fallback_pages += 1;
            return Some(Ok(Decision::Consumed));
        }
        if f.fin() {
            // The client closes after reading the page: acknowledge its
            // FIN so it need not retransmit. One bare ACK for one FIN.
            let ack = Originate {
                src: vip,
                dst: client,
                seq: seg.ack,
                ack: Some(seg.end()),
                control: 0,
                window: WINDOW,
                syn: SynOptions::default(),
                payload: &[],
            };
            self.l7.send(&self.routes, &ack);
            return Some(Ok(Decision::Consumed));
        }
        None
    }
}
