//! Signed uploads and commands on TCP port 9081: one request frame in, one
//! reply frame out (see `lb_core::mgmt::wire`). The frame reader bounds
//! what a client can make the appliance hold; lb-core's admission policy
//! decides; this task applies what was admitted.

use super::slots::{Cut, Slots};
use super::{Ctx, count, events};
use crate::datapath;
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use embassy_futures::select::{Either, select};
use embassy_net::Stack;
use embassy_net::tcp::TcpSocket;
use embassy_time::Duration;
use lb_core::mgmt::admission::{Admit, Admitted, Kind, Rejection, admit};
use lb_core::mgmt::events::{Category, Severity};
use lb_core::mgmt::status::admin_name;
use lb_core::mgmt::wire::{FrameReader, Progress, REQUEST_MAGIC, Reply};
use lb_core::mgmt::{COMMAND_PORT, MAX_REQUEST, REQUEST_DEADLINE_MS};
use lb_core::time::Duration as LbDuration;

/// Connections served at once (a newer one evicts the oldest).
pub const SLOTS: usize = 4;

static POOL: Slots = Slots::new();

/// Serves one slot forever.
#[embassy_executor::task(pool_size = SLOTS)]
pub async fn task(ctx: Ctx, stack: Stack<'static>, slot: usize) {
    let rx = Box::leak(alloc::vec![0u8; 4096].into_boxed_slice());
    let tx = Box::leak(alloc::vec![0u8; 2048].into_boxed_slice());
    loop {
        let mut socket = TcpSocket::new(stack, rx, tx);
        if socket.accept(COMMAND_PORT).await.is_err() {
            continue;
        }
        POOL.accepted(slot, SLOTS);
        socket.set_timeout(Some(Duration::from_secs(30)));
        let peer = socket.remote_endpoint();
        let deadline = datapath::now().add(LbDuration::from_millis(REQUEST_DEADLINE_MS));
        let mut reader = FrameReader::new(REQUEST_MAGIC, MAX_REQUEST);
        let got = match select(receive(&mut socket, &mut reader), POOL.cut(slot, deadline)).await {
            Either::First(p) => p,
            Either::Second(Cut::Evicted) => {
                socket.abort();
                let _ = socket.flush().await;
                POOL.released(slot, SLOTS);
                continue;
            }
            Either::Second(Cut::Deadline) => Err(Rejection::new(
                Kind::TimedOut,
                format!(
                    "timed out: {} bytes arrived in {} s",
                    reader.received(),
                    REQUEST_DEADLINE_MS / 1000
                ),
            )),
        };
        let reply = match got {
            Ok(()) => handle(ctx, reader.payload().unwrap_or_default()).await,
            Err(r) => reject(r),
        };
        if !reply.applied {
            let from = peer.map_or(String::from("?"), |p| format!("{p}"));
            events::log(
                Severity::Warning,
                Category::Config,
                format!("request from {from} rejected: {}", reply.message),
            );
        }
        let _ = write_all(&mut socket, &reply.to_frame()).await;
        // Close gracefully, taking (and dropping) whatever the client still
        // sends, so it reads the answer before the connection goes.
        socket.close();
        let _ = embassy_time::with_timeout(Duration::from_secs(5), socket.flush()).await;
        if embassy_time::with_timeout(Duration::from_secs(5), drain(&mut socket))
            .await
            .is_err()
        {
            socket.abort();
            let _ = embassy_time::with_timeout(Duration::from_secs(1), socket.flush()).await;
        }
        POOL.released(slot, SLOTS);
    }
}

/// Reads until the frame is complete or refused.
async fn receive(socket: &mut TcpSocket<'_>, reader: &mut FrameReader) -> Result<(), Rejection> {
    let mut buf = [0u8; 1024];
    loop {
        let n = socket.read(&mut buf).await.unwrap_or(0);
        let p = if n == 0 {
            reader.end()
        } else {
            reader.feed(&buf[..n])
        };
        match p {
            Progress::NeedMore => {}
            Progress::Done { .. } => return Ok(()),
            Progress::Failed(e) => return Err(e.into()),
        }
    }
}

/// Reads and drops until the client closes its side.
async fn drain(socket: &mut TcpSocket<'_>) {
    let mut buf = [0u8; 1024];
    while let Ok(n) = socket.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

async fn write_all(socket: &mut TcpSocket<'_>, mut bytes: &[u8]) -> Result<(), ()> {
    while !bytes.is_empty() {
        match socket.write(bytes).await {
            Ok(0) | Err(_) => return Err(()),
            Ok(n) => bytes = &bytes[n..],
        }
    }
    Ok(())
}

fn reject(r: Rejection) -> Reply {
    count(|c| c.reject(r.kind));
    Reply {
        applied: false,
        rejection: Some(r.kind),
        serial: crate::running::get().management.serial,
        message: r.reason,
    }
}

/// Judges and applies one request.
async fn handle(ctx: Ctx, payload: &[u8]) -> Reply {
    let running = crate::running::get();
    match admit(&running, payload) {
        Err(r) => reject(r),
        Ok(a) => match apply(ctx, a).await {
            Ok(message) => {
                count(|c| c.applied += 1);
                // The backup of a pair follows the master's config.
                datapath::offer_running_config(ctx.dp);
                Reply {
                    applied: true,
                    rejection: None,
                    serial: crate::running::get().management.serial,
                    message,
                }
            }
            Err(r) => reject(r),
        },
    }
}

/// Stores an admitted change, then applies it live. A change that cannot
/// be stored (a disk error) is not applied: the running config stays.
async fn apply(ctx: Ctx, a: Admitted) -> Result<String, Rejection> {
    let who = a.key.short();
    match a.action {
        Admit::SetState {
            service,
            server,
            state,
        } => {
            let mut next = crate::running::get();
            let Some(vs) = next.virtual_services.get_mut(service) else {
                return Err(Rejection::new(
                    Kind::UnknownServer,
                    "the config changed meanwhile",
                ));
            };
            let Some(rs) = vs.real_servers.get_mut(server) else {
                return Err(Rejection::new(
                    Kind::UnknownServer,
                    "the config changed meanwhile",
                ));
            };
            rs.state = state;
            let name = format!("{}/{}", vs.label, rs.label);
            next.management.serial = a.serial;
            let saved = store(&next).await?;
            ctx.dp
                .borrow_mut()
                .engine
                .set_server_admin(service, server, state);
            if let Some(rs) = ctx
                .dp
                .borrow_mut()
                .config
                .virtual_services
                .get_mut(service)
                .and_then(|vs| vs.real_servers.get_mut(server))
            {
                rs.state = state;
            }
            crate::running::set(next);
            let text = format!(
                "{name} set {} (serial {}, key {who}){saved}",
                admin_name(state),
                a.serial
            );
            events::log(Severity::Notice, Category::Admin, text.clone());
            Ok(text)
        }
        Admit::Upload(config) => apply_config(ctx, *config, "upload", &who).await,
        Admit::Rollback => {
            let mut config = match crate::storage::previous() {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return Err(Rejection::new(
                        Kind::NothingToRollBack,
                        "nothing to roll back to: the disk holds one config",
                    ));
                }
                Err(crate::storage::Refused::NoDisk) => {
                    return Err(Rejection::new(
                        Kind::NothingToRollBack,
                        "nothing to roll back to: no config disk",
                    ));
                }
                Err(e) => {
                    return Err(Rejection::new(
                        Kind::NothingToRollBack,
                        format!("the previous config cannot be read: {e}"),
                    ));
                }
            };
            config.management.serial = a.serial;
            apply_config(ctx, config, "rollback", &who).await
        }
    }
}

/// A config the master of the pair sent over the sync link (with a
/// serial above ours): merged with this appliance's own `[network]` and
/// `[ha]`, then stored and applied like an upload. A config that does not
/// decode, or whose serial is not the one announced, is refused and
/// counted on the sync link.
pub async fn synced(ctx: Ctx, serial: u64, envelope: &[u8]) {
    let running = crate::running::get();
    let received = match lb_core::envelope::decode(envelope) {
        Ok(c) if c.management.serial == serial && serial > running.management.serial => c,
        Ok(c) => {
            ctx.dp.borrow_mut().synced_config_refused();
            events::log(
                Severity::Error,
                Category::Pair,
                format!(
                    "config from the master refused: serial {} (announced {serial}, ours {})",
                    c.management.serial, running.management.serial
                ),
            );
            return;
        }
        Err(e) => {
            ctx.dp.borrow_mut().synced_config_refused();
            events::log(
                Severity::Error,
                Category::Pair,
                format!("config from the master refused: {e}"),
            );
            return;
        }
    };
    let next = lb_core::ha::merge_synced(&running, received);
    match apply_config(ctx, next, "sync", "the master").await {
        Ok(text) => events::log(Severity::Notice, Category::Pair, text),
        Err(r) => {
            ctx.dp.borrow_mut().synced_config_refused();
            events::log(
                Severity::Error,
                Category::Pair,
                format!(
                    "config serial {serial} from the master not applied: {}",
                    r.reason
                ),
            );
        }
    }
}

/// Stores a whole new configuration, then applies it live (the path the
/// console's `config paste` takes): what continues keeps its connections,
/// what was removed drains, what is new starts unchecked.
async fn apply_config(
    ctx: Ctx,
    config: lb_core::config::Config,
    what: &str,
    who: &str,
) -> Result<String, Rejection> {
    let serial = config.management.serial;
    let summary = crate::running::with(|old| lb_core::mgmt::diff::summary(old, &config));
    let saved = store(&config).await?;
    let later = crate::apply::apply(
        ctx.dp,
        ctx.nics,
        config,
        &format!("{what} (serial {serial}, key {who})"),
    )
    .await
    .map_err(|e| {
        Rejection::new(
            Kind::NotApplied,
            format!("stored but not applied (it takes effect at the next boot): {e}"),
        )
    })?;
    let later = if later.is_empty() {
        String::new()
    } else {
        format!("; at the next boot: {}", later.join(", "))
    };
    Ok(format!(
        "{what} applied (serial {serial}, key {who}): {summary}{saved}{later}"
    ))
}

/// Saves `config` to the store; the note to add to the answer.
async fn store(config: &lb_core::config::Config) -> Result<&'static str, Rejection> {
    match crate::storage::save(config).await {
        Ok(_) => Ok(""),
        Err(crate::storage::Refused::NoDisk) => {
            Ok(" (not saved: no disk attached, lost at reboot)")
        }
        Err(e) => Err(Rejection::new(Kind::NotApplied, format!("not stored: {e}"))),
    }
}
