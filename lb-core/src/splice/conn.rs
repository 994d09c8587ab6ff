//! The state of one spliced connection, and the arithmetic of its two
//! sequence spaces.

use core::net::Ipv4Addr;

use super::segment::{Edit, Originate, seq_ge, seq_gt};
use super::{OUR_MSS, OUR_WSCALE, SynOptions};
use crate::config::SendProxy;
use crate::flow::Endpoint;
use crate::frame::TcpFlags;
use crate::time::Instant;
use crate::wire::dicom::PduCursor;

/// Where a connection is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// SYN-ACK sent to the client, its ACK awaited.
    #[default]
    SynReceived,
    /// Client handshake complete; the server will be chosen once
    /// enough first bytes have arrived (the content-routing hook; plain
    /// layer 7 binds at once and never waits here).
    AwaitingData,
    /// SYN sent to a real server.
    Connecting,
    /// Both connections up: segments are relayed.
    Spliced,
    /// No server: the appliance answered the client itself (a
    /// protocol-aware service's reject) and closes; the answer is resent
    /// until acknowledged.
    Answered,
    /// Both FINs acknowledged, a RST passed, or the connection was
    /// aborted: the entry lingers for late segments.
    Closed,
    /// DICOM-aware: the appliance sent each side an A-ABORT and FIN; they
    /// are resent until acknowledged (nothing is relayed any more).
    Aborted,
}

const NO_WSCALE: u8 = 0xff;
const CLIENT_FIN: u8 = 1;
const SERVER_FIN: u8 = 2;
const CLIENT_FIN_ACKED: u8 = 4;
const SERVER_FIN_ACKED: u8 = 8;
/// The server acknowledged the PROXY header (sticky: a comparison with the
/// header's end would flip once 2 GiB have passed).
const PROXY_ACKED: u8 = 16;

/// Per-connection state (kept as the connection table's per-flow data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    pub phase: Phase,
    /// Generation, to recognise stale timer entries of a reused slot.
    pub generation: u32,
    /// Server-side source: the appliance's address and a port, or the
    /// client's endpoint when transparent.
    pub local: Endpoint,
    /// The real server's endpoint (current attempt).
    pub server: Endpoint,
    /// Client's ISN `c`.
    pub client_isn: u32,
    /// Our ISN towards the client `a`.
    pub our_isn: u32,
    /// Server's ISN `s` (once it answered).
    pub server_isn: u32,
    pub proxy: SendProxy,
    pub proxy_len: u8,
    pub client_mss: u16,
    client_ws: u8,
    server_ws: u8,
    pub sack: bool,
    /// Connect attempts made, and the servers tried (bit per index).
    pub attempts: u8,
    pub tried: u64,
    /// Next timer (SYN or PROXY retransmission), and when the connect
    /// attempt is given up.
    pub timer: Instant,
    pub connect_deadline: Instant,
    /// Current retransmission interval of the timer, ms.
    pub rto_ms: u32,
    pub last_client: Instant,
    pub last_server: Instant,
    /// One past the highest sequence number the client sent (client
    /// space = server space on this side).
    pub client_next: u32,
    /// One past the highest sequence number the server sent (server space).
    pub server_next: u32,
    /// Highest acknowledgement from the server (server space).
    pub server_acked: u32,
    /// Highest acknowledgement from the client (client space).
    pub client_acked: u32,
    /// Last window the client advertised (its units).
    pub client_window: u16,
    fins: u8,
    client_fin: u32,
    server_fin: u32,
    /// Early segments held for this connection, and their bytes.
    pub held_segments: u8,
    pub held_bytes: u16,
    /// Protocol-aware services: real servers the route leaves out (bit per
    /// index), and the persistence identity (0: the client's address).
    pub route_exclude: u64,
    pub identity: u32,
    /// Bytes of the appliance's own answer (phase `Answered`).
    pub answer_len: u16,
    /// DICOM-aware: where the PDUs of each direction begin (client to
    /// server, server to client, each in its sender's sequence space), so
    /// an A-ABORT can be put between two PDUs.
    pub dicom: bool,
    pub pdus: [PduCursor; 2],
    /// DICOM-aware, its server halted in the middle of a PDU: each
    /// direction finishes the PDU it is in, its next one is held back, and
    /// the association ends with an A-ABORT once both are between PDUs
    /// (see [`Conn::holds_for_halt`]).
    pub halting: bool,
    /// Protocol-aware: the (called, calling) pair's counter, index + 1
    /// (0: none).
    pub pair: u16,
}

impl Conn {
    /// A connection whose client SYN (`isn`, options `opts`) was answered
    /// with our ISN `our_isn`.
    pub fn new(generation: u32, isn: u32, our_isn: u32, opts: &SynOptions, now: Instant) -> Conn {
        Conn {
            generation,
            client_isn: isn,
            our_isn,
            client_mss: opts.mss.unwrap_or(536).min(OUR_MSS),
            client_ws: opts.wscale.unwrap_or(NO_WSCALE),
            server_ws: NO_WSCALE,
            sack: opts.sack_permitted,
            last_client: now,
            last_server: now,
            client_next: isn.wrapping_add(1),
            client_acked: our_isn.wrapping_add(1),
            ..Conn::default()
        }
    }

    /// The options of our SYN-ACK to the client.
    pub fn synack_options(&self) -> SynOptions {
        SynOptions {
            mss: Some(OUR_MSS),
            wscale: self.client_scales().then_some(OUR_WSCALE),
            sack_permitted: self.sack,
            timestamps: false,
        }
    }

    /// The options of our SYN to the server: the client's.
    pub fn syn_options(&self) -> SynOptions {
        SynOptions {
            mss: Some(self.client_mss),
            wscale: self.client_scales().then_some(self.client_ws),
            sack_permitted: self.sack,
            timestamps: false,
        }
    }

    fn client_scales(&self) -> bool {
        self.client_ws != NO_WSCALE
    }

    /// Window scaling is on for the server-side connection (offered by us
    /// because the client offered it, and accepted by the server).
    fn server_scales(&self) -> bool {
        self.client_scales() && self.server_ws != NO_WSCALE
    }

    /// Our ISN towards the server for PROXY header length `proxy_len`.
    pub fn syn_isn(&self) -> u32 {
        self.client_isn.wrapping_sub(u32::from(self.proxy_len))
    }

    /// Offset from server sequence space to client sequence space, for
    /// the server's bytes: `a − s`.
    fn offset(&self) -> u32 {
        self.our_isn.wrapping_sub(self.server_isn)
    }

    /// The server answered our SYN: its ISN and window shift.
    pub fn server_answered(&mut self, isn: u32, opts: &SynOptions, now: Instant) {
        self.server_isn = isn;
        self.server_ws = opts.wscale.unwrap_or(NO_WSCALE);
        self.server_next = isn.wrapping_add(1);
        self.server_acked = self.syn_isn().wrapping_add(1);
        self.last_server = now;
        self.phase = Phase::Spliced;
        self.fins &= !PROXY_ACKED;
        self.pdus[1] = PduCursor::new(isn.wrapping_add(1));
    }

    /// Follows the PDUs of a DICOM-aware connection's relayed payload
    /// (`from_client`: client to server), before the segment is rewritten.
    pub fn follow_pdus(&mut self, from_client: bool, seq: u32, payload: &[u8]) {
        if self.dicom && !payload.is_empty() {
            self.pdus[usize::from(!from_client)].feed(seq, payload, |_, _| {});
        }
    }

    /// A DICOM-aware connection between PDUs in both directions, with all
    /// data sent acknowledged: an A-ABORT to each side lands where each
    /// expects the next PDU.
    pub fn quiet_between_pdus(&self) -> bool {
        self.dicom
            && self.phase == Phase::Spliced
            && self.pdus[0].at_boundary()
            && self.pdus[0].next() == self.client_next
            && seq_ge(self.server_acked, self.client_next)
            && self.pdus[1].at_boundary()
            && self.pdus[1].next() == self.server_next
            && seq_ge(
                self.client_acked,
                self.server_next.wrapping_add(self.offset()),
            )
    }

    /// Halting: whether `len` bytes at `seq` from the client
    /// (`from_client`) or the server begin a new PDU, and so are held back
    /// (not relayed, not counted as sent: the sender's TCP sends them again
    /// until the association ends).
    pub fn holds_for_halt(&self, from_client: bool, seq: u32, len: u32) -> bool {
        let cursor = &self.pdus[usize::from(!from_client)];
        self.halting && len > 0 && cursor.at_boundary() && seq_ge(seq, cursor.next())
    }

    /// `payload` (an A-ABORT) and FIN to the client, after the server's
    /// last byte.
    pub fn abort_client<'p>(
        &self,
        client: Endpoint,
        vip: Endpoint,
        payload: &'p [u8],
    ) -> Originate<'p> {
        Originate {
            src: vip,
            dst: client,
            seq: self.server_next.wrapping_add(self.offset()),
            ack: Some(self.client_next),
            control: TcpFlags::FIN,
            window: 0,
            syn: SynOptions::default(),
            payload,
        }
    }

    /// Phase `Aborted`: whether the client and the server have
    /// acknowledged the `len`-byte A-ABORT and FIN each was sent.
    pub fn abort_acked(&self, len: u32) -> (bool, bool) {
        let (to_client, to_server) = self.abort_ends(len);
        (
            seq_ge(self.client_acked, to_client),
            seq_ge(self.server_acked, to_server),
        )
    }

    /// Phase `Aborted`: one past our FIN after the `len`-byte A-ABORT, to
    /// the client (its space) and to the server.
    pub fn abort_ends(&self, len: u32) -> (u32, u32) {
        (
            self.server_next
                .wrapping_add(self.offset())
                .wrapping_add(len + 1),
            self.client_next.wrapping_add(len + 1),
        )
    }

    /// Phase `Aborted`: a bare ACK (after our A-ABORT and FIN of `len`
    /// bytes) of the client's sequence numbers up to `upto` (its FIN).
    pub fn abort_ack_client(
        &self,
        client: Endpoint,
        vip: Endpoint,
        len: u32,
        upto: u32,
    ) -> Originate<'static> {
        Originate {
            src: vip,
            dst: client,
            seq: self
                .server_next
                .wrapping_add(self.offset())
                .wrapping_add(len + 1),
            ack: Some(upto),
            control: 0,
            window: 0,
            syn: SynOptions::default(),
            payload: &[],
        }
    }

    /// Phase `Aborted`: the same towards the server.
    pub fn abort_ack_server(&self, len: u32, upto: u32) -> Originate<'static> {
        Originate {
            src: self.local,
            dst: self.server,
            seq: self.client_next.wrapping_add(len + 1),
            ack: Some(upto),
            control: 0,
            window: 0,
            syn: SynOptions::default(),
            payload: &[],
        }
    }

    /// `payload` (an A-ABORT) and FIN to the server, after the client's
    /// last byte.
    pub fn abort_server<'p>(&self, payload: &'p [u8]) -> Originate<'p> {
        Originate {
            src: self.local,
            dst: self.server,
            seq: self.client_next,
            ack: Some(self.server_next),
            control: TcpFlags::FIN,
            window: 0,
            syn: SynOptions::default(),
            payload,
        }
    }

    /// Whether the server has acknowledged the PROXY header (or there is
    /// none).
    pub fn proxy_acked(&self) -> bool {
        self.proxy_len == 0 || self.fins & PROXY_ACKED != 0
    }

    /// How a client→server segment changes.
    pub fn client_to_server(&self) -> Edit {
        let (from, to) = if !self.client_scales() {
            (0, 0)
        } else if self.server_scales() {
            (self.client_ws, self.client_ws)
        } else {
            (self.client_ws, 0)
        };
        Edit {
            seq_add: 0,
            ack_add: self.offset().wrapping_neg(),
            ack_floor: None,
            window_from: from,
            window_to: to,
        }
    }

    /// How a server→client segment changes.
    pub fn server_to_client(&self) -> Edit {
        let from = if self.server_scales() {
            self.server_ws
        } else {
            0
        };
        let to = if self.client_scales() { OUR_WSCALE } else { 0 };
        Edit {
            seq_add: self.offset(),
            ack_add: 0,
            // Only while the server may still acknowledge PROXY header
            // bytes (later, a fixed floor would misread acknowledgements
            // once 2 GiB have passed).
            ack_floor: (!self.proxy_acked()).then(|| self.client_isn.wrapping_add(1)),
            window_from: from,
            window_to: to,
        }
    }

    /// The client's window as the server reads windows.
    pub fn client_window_for_server(&self) -> u16 {
        let e = self.client_to_server();
        super::segment::rescale(self.client_window, e.window_from, e.window_to)
    }

    /// Records a segment from the client (seq, end, ack, flags, window).
    pub fn saw_client(
        &mut self,
        seq_end: u32,
        ack: Option<u32>,
        flags: TcpFlags,
        window: u16,
        now: Instant,
    ) {
        self.last_client = now;
        if seq_gt(seq_end, self.client_next) {
            self.client_next = seq_end;
        }
        if flags.fin() && self.fins & CLIENT_FIN == 0 {
            self.fins |= CLIENT_FIN;
            self.client_fin = seq_end.wrapping_sub(1);
        }
        if let Some(ack) = ack {
            if seq_gt(ack, self.client_acked) {
                self.client_acked = ack;
            }
            self.client_window = window;
            if self.fins & SERVER_FIN != 0
                && seq_gt(ack, self.server_fin.wrapping_add(self.offset()))
            {
                self.fins |= SERVER_FIN_ACKED;
            }
        }
    }

    /// Records a segment from the server.
    pub fn saw_server(&mut self, seq_end: u32, ack: Option<u32>, flags: TcpFlags, now: Instant) {
        self.last_server = now;
        if seq_gt(seq_end, self.server_next) {
            self.server_next = seq_end;
        }
        if flags.fin() && self.fins & SERVER_FIN == 0 {
            self.fins |= SERVER_FIN;
            self.server_fin = seq_end.wrapping_sub(1);
        }
        if let Some(ack) = ack {
            if seq_gt(ack, self.server_acked) {
                self.server_acked = ack;
            }
            if seq_ge(ack, self.client_isn.wrapping_add(1)) {
                self.fins |= PROXY_ACKED;
            }
            if self.fins & CLIENT_FIN != 0 && seq_gt(ack, self.client_fin) {
                self.fins |= CLIENT_FIN_ACKED;
            }
        }
    }

    /// Both directions closed with acknowledged FINs.
    pub fn fully_closed(&self) -> bool {
        self.fins & (CLIENT_FIN_ACKED | SERVER_FIN_ACKED) == CLIENT_FIN_ACKED | SERVER_FIN_ACKED
    }

    /// The RST that tells the client its connection is gone.
    pub fn reset_client(&self, client: Endpoint, vip: Endpoint) -> Originate<'static> {
        let seq = match self.phase {
            Phase::Spliced | Phase::Closed | Phase::Aborted => {
                self.server_next.wrapping_add(self.offset())
            }
            Phase::Answered => self.answer_end(),
            _ => self.our_isn.wrapping_add(1),
        };
        Originate {
            src: vip,
            dst: client,
            seq,
            ack: Some(self.client_next),
            control: TcpFlags::RST,
            window: 0,
            syn: SynOptions::default(),
            payload: &[],
        }
    }

    /// One past our FIN after the appliance's own answer.
    pub fn answer_end(&self) -> u32 {
        self.our_isn
            .wrapping_add(2)
            .wrapping_add(u32::from(self.answer_len))
    }

    /// The appliance's own answer to the client, with FIN: it acknowledges
    /// the client's bytes up to `client_next`.
    pub fn answer<'p>(&self, client: Endpoint, vip: Endpoint, payload: &'p [u8]) -> Originate<'p> {
        Originate {
            src: vip,
            dst: client,
            seq: self.our_isn.wrapping_add(1),
            ack: Some(self.client_next),
            control: TcpFlags::FIN,
            window: super::HOLD_PER_CONN,
            syn: SynOptions::default(),
            payload,
        }
    }

    /// The ACK of the client's FIN after our answer.
    pub fn answer_ack(&self, client: Endpoint, vip: Endpoint) -> Originate<'static> {
        Originate {
            src: vip,
            dst: client,
            seq: self.answer_end(),
            ack: Some(self.client_next),
            control: 0,
            window: super::HOLD_PER_CONN,
            syn: SynOptions::default(),
            payload: &[],
        }
    }

    /// The RST that tells the server the connection is gone.
    pub fn reset_server(&self) -> Originate<'static> {
        let (seq, ack) = match self.phase {
            Phase::Spliced | Phase::Closed | Phase::Aborted => {
                (self.client_next, Some(self.server_next))
            }
            _ => (self.syn_isn().wrapping_add(1), None),
        };
        Originate {
            src: self.local,
            dst: self.server,
            seq,
            ack,
            control: TcpFlags::RST,
            window: 0,
            syn: SynOptions::default(),
            payload: &[],
        }
    }

    /// Our SYN-ACK to the client.
    pub fn synack(&self, client: Endpoint, vip: Endpoint) -> Originate<'static> {
        Originate {
            src: vip,
            dst: client,
            seq: self.our_isn,
            ack: Some(self.client_isn.wrapping_add(1)),
            control: TcpFlags::SYN,
            window: super::HOLD_PER_CONN,
            syn: self.synack_options(),
            payload: &[],
        }
    }

    /// Our SYN to the server.
    pub fn syn(&self) -> Originate<'static> {
        Originate {
            src: self.local,
            dst: self.server,
            seq: self.syn_isn(),
            ack: None,
            control: TcpFlags::SYN,
            window: 0xffff,
            syn: self.syn_options(),
            payload: &[],
        }
    }

    /// Our ACK of the server's SYN-ACK, with the PROXY header if any.
    pub fn handshake_ack<'p>(&self, proxy: &'p [u8]) -> Originate<'p> {
        Originate {
            src: self.local,
            dst: self.server,
            seq: self.syn_isn().wrapping_add(1),
            ack: Some(self.server_isn.wrapping_add(1)),
            control: if proxy.is_empty() { 0 } else { 0x08 },
            window: self.client_window_for_server(),
            syn: SynOptions::default(),
            payload: proxy,
        }
    }

    /// Whether the transparent mode is in use (the server sees the client).
    pub fn transparent(&self, client: Ipv4Addr) -> bool {
        self.local.addr == client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(ws: Option<u8>) -> Conn {
        let opts = SynOptions {
            mss: Some(1460),
            wscale: ws,
            sack_permitted: true,
            timestamps: false,
        };
        let mut c = Conn::new(1, 1000, 0x8000_0000, &opts, Instant(0));
        c.proxy_len = 28;
        c
    }

    #[test]
    fn sequence_spaces() {
        let mut c = conn(Some(7));
        assert_eq!(c.syn_isn(), 972);
        c.server_answered(
            5000,
            &SynOptions {
                wscale: Some(9),
                ..SynOptions::default()
            },
            Instant(0),
        );
        let s2c = c.server_to_client();
        // Server byte 5001 is client-side byte a+1.
        assert_eq!(5001u32.wrapping_add(s2c.seq_add), 0x8000_0001);
        assert_eq!((s2c.window_from, s2c.window_to), (9, 7));
        // The client acknowledging a+1 acknowledges server byte 5001.
        let c2s = c.client_to_server();
        assert_eq!(0x8000_0001u32.wrapping_add(c2s.ack_add), 5001);
        assert_eq!((c2s.window_from, c2s.window_to), (7, 7));
        // The server acknowledging the PROXY header only reads as c+1.
        assert_eq!(s2c.ack_floor, Some(1001));
        assert!(!c.proxy_acked());
        c.saw_server(5001, Some(1001), TcpFlags(0x10), Instant(1));
        assert!(c.proxy_acked());
    }

    #[test]
    fn long_connections_cross_the_sequence_space() {
        let mut c = conn(Some(7));
        c.server_answered(5000, &SynOptions::default(), Instant(0));
        assert!(!c.proxy_acked());
        c.saw_server(5001, Some(1001), TcpFlags(0x10), Instant(1));
        // 3 GiB later (mod 2^32) nothing floors or flips.
        let far = 1001u32.wrapping_add(3 << 30);
        for step in 1..=12u32 {
            c.saw_server(
                5001,
                Some(1001u32.wrapping_add(step << 28)),
                TcpFlags(0x10),
                Instant(2),
            );
        }
        assert!(c.proxy_acked());
        assert_eq!(c.server_to_client().ack_floor, None);
        assert!(seq_ge(c.server_acked, far));
    }

    #[test]
    fn windows_when_scaling_is_not_on_both_sides() {
        let mut c = conn(Some(7));
        c.server_answered(1, &SynOptions::default(), Instant(0));
        assert_eq!(
            (
                c.client_to_server().window_from,
                c.client_to_server().window_to
            ),
            (7, 0)
        );
        assert_eq!(
            (
                c.server_to_client().window_from,
                c.server_to_client().window_to
            ),
            (0, 7)
        );
        let mut c = conn(None);
        c.server_answered(1, &SynOptions::default(), Instant(0));
        assert_eq!(c.syn_options().wscale, None);
        assert_eq!(c.synack_options().wscale, None);
        assert_eq!(c.server_to_client().window_to, 0);
    }

    #[test]
    fn closes_after_both_fins_are_acknowledged() {
        let mut c = conn(None);
        c.server_answered(5000, &SynOptions::default(), Instant(0));
        c.saw_client(1011, Some(0x8000_0001), TcpFlags(0x11), 100, Instant(1));
        assert!(!c.fully_closed());
        c.saw_server(5001 + 1, Some(1011), TcpFlags(0x11), Instant(2));
        assert!(!c.fully_closed());
        // The client acknowledges the server's FIN (client space).
        c.saw_client(1011, Some(0x8000_0002), TcpFlags(0x10), 100, Instant(3));
        assert!(c.fully_closed());
    }
}
