//! Health checks of real servers over the appliance's own TCP/IP stacks.
//!
//! Every real server of a service with a check gets a [`ServerHealth`]
//! schedule (interval, rise, fall from the config). [`WORKERS`] tasks take
//! due checks from the shared [`Board`], run lb-core's sans-IO [`Dialog`]
//! (connect, HTTP, DICOM C-ECHO, HL7) over an `embassy-net` `TcpSocket` on
//! the stack of the NIC that reaches the server, and report verdicts; a
//! change of health goes to the engine and the console. So at most
//! `WORKERS` checks run at once and each stack needs at most `WORKERS`
//! sockets; a check that is due while every worker is busy waits for one.
//! HTTPS checks run TLS inside the dialog (lb-core's rustls layer): the
//! worker moves ciphertext like any other bytes.

use crate::datapath::{self, Datapath};
use crate::println;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::net::Ipv4Addr;
use embassy_net::Stack;
use embassy_net::tcp::{State, TcpSocket};
use embassy_time::{Duration as EDuration, Timer, with_timeout};
use lb_core::health::{
    Action, CheckParams, ConnectError, Dialog, FailReason, Health, ServerHealth, Verdict,
    check_target, fixed_verdict,
};
use lb_core::time::Instant;

/// Checks running at once (and sockets each stack must have for them).
pub const WORKERS: usize = 4;
/// Socket buffers of one check: requests and answers are small.
const BUF: usize = 2048;
/// How often an idle worker looks for due checks.
const IDLE_POLL_MS: u64 = 50;
/// Grace for a closing connection to finish (FIN exchange) before abort.
const CLOSE_GRACE_MS: u64 = 300;

/// One real server's checks.
struct Target {
    service: usize,
    server: usize,
    name: String,
    ip: Ipv4Addr,
    port: u16,
    params: CheckParams,
    schedule: ServerHealth,
    /// What the engine was last told.
    told: Option<Health>,
}

/// A stack and the subnet it is on.
#[derive(Clone, Copy)]
pub struct StackRef {
    pub stack: Stack<'static>,
    pub net: Option<(Ipv4Addr, u8)>,
}

/// Every check, shared by the workers.
pub struct Board {
    targets: Vec<Target>,
    stacks: Vec<StackRef>,
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

fn holds(net: (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(net.1.min(32)))
        .unwrap_or(0);
    u32::from(net.0) & mask == u32::from(ip) & mask
}

impl Board {
    /// Checks for every real server of every service; servers of services
    /// with `check_type = "none"` are marked up in the engine at once.
    pub fn new(dp: &mut Datapath, stacks: Vec<StackRef>, now: Instant) -> Board {
        let mut targets = Vec::new();
        for (si, vs) in dp.config.virtual_services.iter().enumerate() {
            for (ri, rs) in vs.real_servers.iter().enumerate() {
                if let Some(fixed) = fixed_verdict(vs) {
                    let up = fixed.is_pass();
                    dp.engine.set_server_health(si, ri, up);
                    if let Verdict::Fail(why) = fixed {
                        println!("health: {}/{} {} down ({why})", vs.label, rs.label, rs.ip);
                    }
                    continue;
                }
                match CheckParams::from_config(vs, rs) {
                    None => {
                        dp.engine.set_server_health(si, ri, true);
                    }
                    Some(params) => {
                        let (ip, port) = check_target(vs, rs);
                        targets.push(Target {
                            service: si,
                            server: ri,
                            name: format!("{}/{}", vs.label, rs.label),
                            ip,
                            port,
                            params,
                            schedule: ServerHealth::from_config(vs, rs, now),
                            told: None,
                        });
                    }
                }
            }
        }
        Board { targets, stacks }
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// The stack on the subnet of `ip`, else eth0's (towards the gateway).
    fn stack_for(&self, ip: Ipv4Addr) -> Option<Stack<'static>> {
        self.stacks
            .iter()
            .find(|s| s.net.is_some_and(|n| holds(n, ip)))
            .or(self.stacks.first())
            .map(|s| s.stack)
    }

    /// The most overdue check that is due and not running, marked started.
    fn take_due(&mut self, now: Instant) -> Option<Job> {
        let index = self
            .targets
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.schedule.in_flight() && t.schedule.next_due() <= now)
            .min_by_key(|(_, t)| t.schedule.next_due())
            .map(|(i, _)| i)?;
        let stack = self.stack_for(self.targets[index].ip)?;
        let t = &mut self.targets[index];
        let seq = t.schedule.begin(now)?;
        Some(Job {
            index,
            seq,
            stack,
            ip: t.ip,
            port: t.port,
            params: t.params.clone(),
        })
    }

    /// Records a verdict; tells the engine and the console when the
    /// server's health changes (or is first known).
    fn finish(&mut self, dp: &mut Datapath, index: usize, verdict: Verdict, now: Instant) {
        let Some(t) = self.targets.get_mut(index) else {
            return;
        };
        let reason = verdict.clone();
        t.schedule.finish(now, verdict);
        let health = t.schedule.health();
        if t.told == Some(health) {
            return;
        }
        let up = health == Health::Up;
        dp.engine.set_server_health(t.service, t.server, up);
        let first = t.told.is_none();
        t.told = Some(health);
        match (&reason, up) {
            (Verdict::Fail(r), false) => {
                println!("health: {} {}:{} down ({r})", t.name, t.ip, t.port)
            }
            (_, true) if first => println!("health: {} {}:{} up", t.name, t.ip, t.port),
            (_, true) => println!("health: {} {}:{} up (recovered)", t.name, t.ip, t.port),
            (Verdict::Pass, false) => println!("health: {} {}:{} down", t.name, t.ip, t.port),
        }
    }
}

/// Milliseconds left until `deadline`.
fn left(deadline: Option<Instant>) -> EDuration {
    let now = datapath::now();
    EDuration::from_millis(deadline.map_or(0, |d| d.0.saturating_sub(now.0)))
}

/// Runs one check to its verdict.
async fn run_check(job: &Job, rx: &mut [u8], tx: &mut [u8]) -> Verdict {
    let mut dialog = match Dialog::new(&job.params, job.seq) {
        Ok(d) => d.with_wall_clock(crate::rtc::unix_secs()),
        Err(_) => return Verdict::Fail(FailReason::ConnectFailed),
    };
    let mut socket = TcpSocket::new(job.stack, rx, tx);
    let mut action = dialog.start(datapath::now());
    let mut buf = [0u8; 512];
    let verdict = loop {
        let deadline = dialog.deadline();
        action = match action {
            Action::Done(v) => break v,
            Action::Connect => {
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
    close(&mut socket).await;
    verdict
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
pub async fn worker(board: &'static RefCell<Board>, dp: &'static RefCell<Datapath>) {
    let rx: &'static mut [u8] = Box::leak(alloc::vec![0u8; BUF].into_boxed_slice());
    let tx: &'static mut [u8] = Box::leak(alloc::vec![0u8; BUF].into_boxed_slice());
    loop {
        let job = board.borrow_mut().take_due(datapath::now());
        let Some(job) = job else {
            Timer::after_millis(IDLE_POLL_MS).await;
            continue;
        };
        let verdict = run_check(&job, rx, tx).await;
        board
            .borrow_mut()
            .finish(&mut dp.borrow_mut(), job.index, verdict, datapath::now());
    }
}
