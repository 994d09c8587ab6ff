//! The System Overview page, `/api/status`, `/api/events` and `/metrics`
//! on TCP port 9080, served by `picoserve` (one connection per task, see
//! [`SLOTS`]). Read-only: changes go through signed commands.

use super::slots::{Cut, Slots};
use super::{Ctx, events, snapshot};
use alloc::boxed::Box;
use embassy_futures::select::{Either, select};
use embassy_net::Stack;
use embassy_net::tcp::TcpSocket;
use embassy_time::Duration;
use lb_core::mgmt::{HTTP_PORT, page, status};
use lb_core::time::Duration as LbDuration;
use picoserve::response::Response;
use picoserve::routing::get;

/// Connections served at once.
pub const SLOTS: usize = 3;
/// Events `/api/events` returns.
const EVENTS: usize = 200;
/// A connection's whole life, request and answer.
const DEADLINE_MS: u64 = 20_000;

static POOL: Slots = Slots::new();

const CONFIG: picoserve::Config = picoserve::Config::new(picoserve::Timeouts {
    start_read_request: Duration::from_secs(5),
    persistent_start_read_request: Duration::from_secs(1),
    read_request: Duration::from_secs(5),
    write: Duration::from_secs(5),
});

/// Serves one slot forever.
#[embassy_executor::task(pool_size = SLOTS)]
pub async fn task(ctx: Ctx, stack: Stack<'static>, slot: usize) {
    let rx = Box::leak(alloc::vec![0u8; 2048].into_boxed_slice());
    let tx = Box::leak(alloc::vec![0u8; 8192].into_boxed_slice());
    let buf = Box::leak(alloc::vec![0u8; 2048].into_boxed_slice());
    let app = picoserve::Router::new()
        .route(
            "/",
            get(async move || {
                let dp = ctx.dp.borrow();
                Response::ok(page::render(&snapshot(&dp, ctx.nics)))
                    .with_content_type("text/html; charset=utf-8")
            }),
        )
        .route(
            "/api/status",
            get(async move || {
                let dp = ctx.dp.borrow();
                Response::ok(status::to_json(&snapshot(&dp, ctx.nics)))
                    .with_content_type("application/json")
            }),
        )
        .route(
            "/api/events",
            get(async move || {
                let body = serde_json::to_string(&events::recent(EVENTS)).unwrap_or_default();
                Response::ok(body).with_content_type("application/json")
            }),
        )
        .route(
            "/metrics",
            get(async move || {
                let dp = ctx.dp.borrow();
                Response::ok(snapshot(&dp, ctx.nics).to_metrics())
                    .with_content_type("text/plain; version=0.0.4; charset=utf-8")
            }),
        );
    loop {
        let mut socket = TcpSocket::new(stack, rx, tx);
        if socket.accept(HTTP_PORT).await.is_err() {
            continue;
        }
        POOL.accepted(slot, SLOTS);
        socket.set_timeout(Some(Duration::from_secs(30)));
        let deadline = crate::datapath::now().add(LbDuration::from_millis(DEADLINE_MS));
        let server = picoserve::Server::new(&app, &CONFIG, buf);
        match select(server.serve(socket), POOL.cut(slot, deadline)).await {
            Either::First(_) => {}
            // Dropping the serving future drops the socket, which aborts
            // the connection (RST): the slot listens again at once.
            Either::Second(Cut::Evicted | Cut::Deadline) => {}
        }
        POOL.released(slot, SLOTS);
    }
}
