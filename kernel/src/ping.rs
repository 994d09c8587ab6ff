//! `ping` at the console: ICMP echo requests from the appliance's own stack
//! (the NIC on the target's subnet, else eth0 towards the gateway), one a
//! second, each reply with its round-trip time, then a summary.

use crate::{Nics, console, netif, println};
use core::cell::RefCell;
use core::net::Ipv4Addr;
use embassy_net::icmp::PacketMetadata;
use embassy_net::icmp::ping::{PingManager, PingParams};
use embassy_time::{Duration, Instant, Timer};
use lb_core::datapath::Datapath;

/// How long one echo may take to come back.
const REPLY_TIMEOUT_MS: u64 = 1_000;
const PAYLOAD: &[u8] = b"lbmed console ping";

fn holds(net: (Ipv4Addr, u8), ip: Ipv4Addr) -> bool {
    let mask = u32::MAX
        .checked_shl(32 - u32::from(net.1.min(32)))
        .unwrap_or(0);
    u32::from(net.0) & mask == u32::from(ip) & mask
}

pub async fn ping(dp: &RefCell<Datapath>, nics: &'static Nics, target: Ipv4Addr, count: u16) {
    let nic = (0..nics.len())
        .find(|&i| dp.borrow().address(i).is_some_and(|a| holds(a, target)))
        .unwrap_or(0);
    let Some(stack) = netif::stack(nic) else {
        println!("ping: eth{nic} has no network stack");
        return;
    };
    let (mut rx_meta, mut tx_meta) = ([PacketMetadata::EMPTY; 2], [PacketMetadata::EMPTY; 2]);
    let (mut rx, mut tx) = ([0u8; 256], [0u8; 256]);
    let mut pinger = PingManager::new(stack, &mut rx_meta, &mut rx, &mut tx_meta, &mut tx);
    println!(
        "PING {target} from eth{nic}: {} bytes of data",
        PAYLOAD.len()
    );
    let mut rtts: alloc::vec::Vec<u64> = alloc::vec::Vec::new();
    for seq in 0..count {
        let started = Instant::now();
        let mut params = PingParams::new(target);
        params.set_payload(PAYLOAD);
        params.set_count(1);
        params.set_timeout(Duration::from_millis(REPLY_TIMEOUT_MS));
        match pinger.ping(&params).await {
            Ok(rtt) => {
                let us = rtt.as_micros();
                rtts.push(us);
                println!(
                    "reply from {target}: seq={seq} time={}.{:03} ms",
                    us / 1000,
                    us % 1000
                );
            }
            Err(_) => println!("no reply from {target}: seq={seq}"),
        }
        console::pace().await;
        if seq + 1 < count {
            let spent = started.elapsed();
            if let Some(rest) = Duration::from_secs(1).checked_sub(spent) {
                Timer::after(rest).await;
            }
        }
    }
    let received = rtts.len() as u16;
    let loss = u32::from(count - received) * 100 / u32::from(count);
    match (rtts.iter().min(), rtts.iter().max()) {
        (Some(min), Some(max)) => {
            let avg = rtts.iter().sum::<u64>() / rtts.len() as u64;
            let ms = |us: u64| alloc::format!("{}.{:03}", us / 1000, us % 1000);
            println!(
                "{count} sent, {received} received, {loss}% loss, rtt min/avg/max = {}/{}/{} ms",
                ms(*min),
                ms(avg),
                ms(*max)
            );
        }
        _ => println!("{count} sent, 0 received, 100% loss"),
    }
}
