//! Health checks of real servers over the appliance's own TCP/IP stacks.
//!
//! The schedule (interval, rise, fall, which check or feedback-agent poll
//! is due) is lb-core's health board, held by the [`Datapath`]. [`WORKERS`]
//! tasks take due polls from it, run lb-core's sans-IO [`Dialog`] (connect,
//! HTTP(S), DICOM C-ECHO, HL7, agent) over an `embassy-net` `TcpSocket` —
//! or an ICMP socket for ping checks — on the stack of the NIC the frame
//! path names, and report verdicts; the frame path passes what changes
//! (health, an agent's weight or drain) to the engine and logs it. So at most `WORKERS` checks
//! run at once and each stack needs at most `WORKERS` sockets; a check that
//! is due while every worker is busy waits for one. HTTPS checks run TLS
//! inside the dialog (lb-core's rustls layer): the worker moves ciphertext
//! like any other bytes.

use crate::datapath::{self, print_log};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::net::Ipv4Addr;
use embassy_net::Stack;
use embassy_net::tcp::{State, TcpSocket};
use embassy_time::{Duration as EDuration, Timer, with_timeout};
use lb_core::datapath::Datapath;
use lb_core::health::{Action, AgentReply, CheckParams, ConnectError, Dialog, FailReason, Verdict};
use lb_core::time::Instant;

/// Checks running at once (and sockets each stack must have for them).
pub const WORKERS: usize = 4;
/// Socket buffers of one check: requests and answers are small.
const BUF: usize = 2048;
/// How often an idle worker looks for due checks.
const IDLE_POLL_MS: u64 = 50;
/// Grace for a closing connection to finish (FIN exchange) before abort.
const CLOSE_GRACE_MS: u64 = 300;
/// ICMP socket buffers of a ping check.
const PING_BUF: usize = 256;

/// The IP stack of each NIC (`None`: the NIC has none).
pub struct Stacks(pub Vec<Option<Stack<'static>>>);

impl Stacks {
    /// NIC `nic`'s stack, else eth0's.
    fn for_nic(&self, nic: usize) -> Option<Stack<'static>> {
        self.0
            .get(nic)
            .copied()
            .flatten()
            .or(self.0.first().copied().flatten())
    }
}

/// A check a worker runs.
struct Job {
    index: usize,
    seq: u32,
    stack: Stack<'static>,
    ip: Ipv4Addr,
    port: u16,
    params: CheckParams,
}

/// Milliseconds left until `deadline`.
fn left(deadline: Option<Instant>) -> EDuration {
    let now = datapath::now();
    EDuration::from_millis(deadline.map_or(0, |d| d.0.saturating_sub(now.0)))
}

/// What a finished poll found.
struct Finished {
    verdict: Verdict,
    agent: Option<AgentReply>,
}

/// Runs one check (or agent poll) to its verdict.
async fn run_check(job: &Job, rx: &mut [u8], tx: &mut [u8]) -> Finished {
    let mut dialog = match Dialog::new(&job.params, job.seq) {
        Ok(d) => d.with_wall_clock(crate::rtc::unix_secs()),
        Err(_) => {
            return Finished {
                verdict: Verdict::Fail(FailReason::ConnectFailed),
                agent: None,
            };
        }
    };
    if dialog.is_ping() {
        return Finished {
            verdict: run_ping(job, &mut dialog).await,
            agent: None,
        };
    }
    let mut socket = TcpSocket::new(job.stack, rx, tx);
    let mut action = dialog.start(datapath::now());
    let mut buf = [0u8; 512];
    let verdict = loop {
        let deadline = dialog.deadline();
        action = match action {
            Action::Done(v) => break v,
            Action::Connect => {
                // The source port must not be one SNAT or layer 7 uses.
                crate::stack_ports::steer(job.stack);
                match with_timeout(left(deadline), socket.connect((job.ip, job.port))).await {
                    Ok(Ok(())) => dialog.on_connected(datapath::now()),
                    Ok(Err(e)) => {
                        let why = match e {
                            embassy_net::tcp::ConnectError::ConnectionReset => {
                                ConnectError::Refused
                            }
                            embassy_net::tcp::ConnectError::NoRoute => ConnectError::Unreachable,
                            _ => ConnectError::Failed,
                        };
                        dialog.on_connect_failed(why, datapath::now())
                    }
                    Err(_) => dialog.on_timeout(datapath::now()),
                }
            }
            Action::Send(bytes) => {
                let mut sent = 0;
                let mut failed = false;
                while sent < bytes.len() {
                    match with_timeout(left(deadline), socket.write(&bytes[sent..])).await {
                        Ok(Ok(n)) if n > 0 => sent += n,
                        Ok(_) => {
                            failed = true;
                            break;
                        }
                        Err(_) => break,
                    }
                }
                if failed {
                    dialog.on_closed(datapath::now())
                } else if sent < bytes.len() {
                    dialog.on_timeout(datapath::now())
                } else {
                    Action::Wait
                }
            }
            Action::Wait => match with_timeout(left(deadline), socket.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => dialog.on_closed(datapath::now()),
                Ok(Ok(n)) => dialog.on_data(&buf[..n], datapath::now()),
                Err(_) => dialog.on_timeout(datapath::now()),
            },
        };
    };
    if let Some(bye) = dialog.goodbye() {
        // Best effort, bounded by the close grace: the server hears an
        // A-RELEASE-RQ, not a reset.
        let grace = EDuration::from_millis(CLOSE_GRACE_MS);
        let _ = with_timeout(grace, socket.write(&bye)).await;
        let _ = with_timeout(grace, socket.flush()).await;
    }
    close(&mut socket).await;
    Finished {
        verdict,
        agent: dialog.agent_reply().cloned(),
    }
}

/// An ICMP echo to the server: "connect" is the request, "connected" its reply.
async fn run_ping(job: &Job, dialog: &mut Dialog) -> Verdict {
    use embassy_net::icmp::{IcmpEndpoint, IcmpSocket, PacketMetadata};
    use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr};
    let mut rx_meta = [PacketMetadata::EMPTY; 2];
    let mut tx_meta = [PacketMetadata::EMPTY; 2];
    let mut rx = [0u8; PING_BUF];
    let mut tx = [0u8; PING_BUF];
    let mut socket = IcmpSocket::new(job.stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
    // One identifier per check: the server's check number and a little of
    // its address keep concurrent pings apart.
    let ident = (job.seq as u16) ^ (u32::from(job.ip) as u16).rotate_left(8);
    let seq_no = (job.seq >> 16) as u16;
    if socket.bind(IcmpEndpoint::Ident(ident)).is_err() {
        return Verdict::Fail(FailReason::ConnectFailed);
    }
    dialog.start(datapath::now());
    let payload = *b"lb-health-ping\0\0";
    let repr = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data: &payload,
    };
    let to = embassy_net::IpAddress::Ipv4(job.ip);
    let sent = socket
        .send_to_with(repr.buffer_len(), to, |buf| {
            let mut packet = Icmpv4Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut packet, &smoltcp::phy::ChecksumCapabilities::default());
            (repr.buffer_len(), ())
        })
        .await;
    if sent.is_err() {
        return match dialog.on_connect_failed(ConnectError::Failed, datapath::now()) {
            Action::Done(v) => v,
            _ => Verdict::Fail(FailReason::ConnectFailed),
        };
    }
    let mut buf = [0u8; PING_BUF];
    let caps = smoltcp::phy::ChecksumCapabilities::default();
    loop {
        match with_timeout(left(dialog.deadline()), socket.recv_from(&mut buf)).await {
            Ok(Ok((n, from))) if from == to => {
                let Ok(packet) = Icmpv4Packet::new_checked(&buf[..n]) else {
                    continue;
                };
                if let Ok(Icmpv4Repr::EchoReply {
                    ident: i,
                    seq_no: s,
                    ..
                }) = Icmpv4Repr::parse(&packet, &caps)
                    && (i, s) == (ident, seq_no)
                    && let Action::Done(v) = dialog.on_connected(datapath::now())
                {
                    return v;
                }
            }
            Ok(_) => {}
            Err(_) => {
                if let Action::Done(v) = dialog.on_timeout(datapath::now()) {
                    return v;
                }
            }
        }
    }
}

/// Closes gracefully if the peer cooperates within [`CLOSE_GRACE_MS`], else
/// resets; either way the segment leaves before the socket is freed.
async fn close(socket: &mut TcpSocket<'_>) {
    socket.close();
    let mut waited = 0;
    while !matches!(socket.state(), State::Closed | State::TimeWait) && waited < CLOSE_GRACE_MS {
        Timer::after_millis(10).await;
        waited += 10;
    }
    if !matches!(socket.state(), State::Closed | State::TimeWait) {
        socket.abort();
        Timer::after_millis(10).await;
    }
}

/// One checker: takes due checks one at a time.
#[embassy_executor::task(pool_size = WORKERS)]
pub async fn worker(dp: &'static RefCell<Datapath>, stacks: &'static Stacks) {
    let rx: &'static mut [u8] = Box::leak(alloc::vec![0u8; BUF].into_boxed_slice());
    let tx: &'static mut [u8] = Box::leak(alloc::vec![0u8; BUF].into_boxed_slice());
    loop {
        let due = dp.borrow_mut().next_check(datapath::now());
        let Some(check) = due else {
            Timer::after_millis(IDLE_POLL_MS).await;
            continue;
        };
        let Some(stack) = stacks.for_nic(check.nic) else {
            // No stack at all (cannot happen: eth0 always has one); a
            // started check must still end.
            let fail = Verdict::Fail(FailReason::ConnectFailed);
            dp.borrow_mut()
                .check_done(check.job.index, fail, None, datapath::now());
            continue;
        };
        let job = Job {
            index: check.job.index,
            seq: check.job.seq,
            stack,
            ip: check.job.ip,
            port: check.job.port,
            params: check.job.params,
        };
        let done = run_check(&job, rx, tx).await;
        let mut dp = dp.borrow_mut();
        dp.check_done(
            job.index,
            done.verdict,
            done.agent.as_ref(),
            datapath::now(),
        );
        print_log(&mut dp);
    }
}
