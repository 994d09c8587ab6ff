//! Bringing the configuration to life once eth0's stack exists: stacks for
//! the other NICs that have an address or take one from DHCP, the frame
//! path as hook, gratuitous ARP and housekeeping, the DHCP lease watchers,
//! the health checkers and the console.

use crate::datapath::{self, print_log};
use crate::health::{self, Stacks};
use crate::{Nics, fatal, println, shell};
use alloc::boxed::Box;
use core::net::Ipv4Addr;
use embassy_executor::Spawner;
use embassy_net::{Ipv4Cidr, Runner, Stack, StackResources, StaticConfigV4};
use lb_core::cmdline::Ipv4Setting;
use lb_core::config::Config;
use lb_core::datapath::{Datapath, Setup};
use lb_core::startup::interface_setting;
use net::driver::NicDriver;

/// Sockets per stack: the health checkers', management's, plus slack.
pub const SOCKETS: usize = health::WORKERS + crate::mgmt::SOCKETS + 4;

fn cidr(s: &Ipv4Setting) -> Option<(Ipv4Addr, u8)> {
    match *s {
        Ipv4Setting::Static {
            address,
            prefix_len,
            ..
        } => Some((address, prefix_len)),
        Ipv4Setting::Dhcp => None,
    }
}

#[embassy_executor::task(pool_size = 8)]
async fn stack_task(mut runner: Runner<'static, NicDriver>) -> ! {
    runner.run().await
}

/// What the console starts with.
pub struct Console {
    /// No stored config, no boot module and no `ip=`: run the wizard.
    pub first_boot: bool,
    /// A PS/2 keyboard is there.
    pub keyboard: bool,
}

/// Starts everything the configuration asks for. `eth0` is eth0's stack,
/// configured with `eth0_setting`.
pub fn start(
    spawner: Spawner,
    nics: &'static Nics,
    eth0: Stack<'static>,
    eth0_setting: Ipv4Setting,
    config: Option<Config>,
    seed: u64,
    console: Console,
) {
    let mut addrs = alloc::vec![cidr(&eth0_setting)];
    let mut stacks = alloc::vec![Some(eth0)];
    // NICs whose address comes from DHCP: their leases are followed.
    let mut leased = alloc::vec::Vec::new();
    if eth0_setting == Ipv4Setting::Dhcp {
        leased.push((0, eth0));
    }
    for i in 1..nics.len() {
        let setting = interface_setting(config.as_ref(), i);
        let net = setting.as_ref().and_then(cidr);
        addrs.push(net);
        let cfg = match (setting, net) {
            (Some(Ipv4Setting::Dhcp), _) => {
                println!("eth{i} address: dhcp (waiting for a lease)");
                embassy_net::Config::dhcpv4(Default::default())
            }
            (_, Some((address, prefix))) => {
                println!("eth{i} address: {address}/{prefix}");
                embassy_net::Config::ipv4_static(StaticConfigV4 {
                    address: Ipv4Cidr::new(address, prefix),
                    gateway: None,
                    dns_servers: Default::default(),
                })
            }
            _ => {
                stacks.push(None);
                continue;
            }
        };
        let resources = Box::leak(Box::new(StackResources::<SOCKETS>::new()));
        let (stack, runner) = embassy_net::new(
            NicDriver::new(nics, i),
            cfg,
            resources,
            seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        match stack_task(runner) {
            Ok(t) => spawner.spawn(t),
            Err(_) => {
                println!("error: eth{i}: no task slot for its stack");
                stacks.push(None);
                continue;
            }
        }
        crate::netif::register(i, Some(stack), setting);
        if net.is_none() {
            leased.push((i, stack));
        }
        stacks.push(Some(stack));
    }
    let gateway = match eth0_setting {
        Ipv4Setting::Static {
            gateway: Some(g), ..
        } => Some(g),
        _ => config.as_ref().and_then(|c| c.network.gateway),
    };
    let macs = (0..nics.len()).map(|i| nics.with(i, |n| n.mac)).collect();
    let addrs_for_mgmt = addrs.clone();
    let mut dp = Datapath::new(Setup {
        config,
        macs,
        addrs,
        gateway,
        hash_seed: seed,
        memory: crate::memory::heap_free(),
        now: datapath::now(),
        boot_id: crate::rng::u64(),
    });
    print_log(&mut dp);
    if dp.vip_count() > 0 {
        println!(
            "datapath: {} VIP(s), {} health check(s)",
            dp.vip_count(),
            dp.check_count()
        );
    }
    let dp = datapath::install(dp, nics);
    let (mgmt_nic, mgmt_stack) = management_stack(&stacks, &addrs_for_mgmt);
    crate::mgmt::start(
        spawner,
        crate::mgmt::Ctx { dp, nics },
        mgmt_stack,
        &alloc::format!("eth{mgmt_nic}"),
    );
    let stacks: &'static Stacks = Box::leak(Box::new(Stacks(stacks)));
    let spawned = (|| {
        spawner.spawn(datapath::housekeeping_task(dp, nics).ok()?);
        spawner.spawn(shell::console_task(dp, nics, console.first_boot, console.keyboard).ok()?);
        if dp.borrow().pair.is_some() {
            spawner.spawn(datapath::pair_task(dp, nics).ok()?);
        }
        for _ in 0..health::WORKERS {
            spawner.spawn(health::worker(dp, stacks).ok()?);
        }
        for (nic, stack) in leased {
            spawner.spawn(datapath::lease_task(dp, nics, nic, stack).ok()?);
        }
        Some(())
    })();
    if spawned.is_none() {
        fatal("cannot spawn the data path tasks");
    }
}

/// The NIC and stack that serve management: `management.address` names
/// an interface (`eth1`) or one of its addresses; unset, or naming none
/// with a stack, eth0 (said on the console: a typo must not lock the
/// administrator out).
fn management_stack(
    stacks: &[Option<Stack<'static>>],
    addrs: &[Option<(Ipv4Addr, u8)>],
) -> (usize, Stack<'static>) {
    let wanted = crate::running::get().management.address;
    let nic = wanted.as_deref().and_then(|w| match w.parse::<Ipv4Addr>() {
        Ok(ip) => addrs.iter().position(|a| a.is_some_and(|a| a.0 == ip)),
        Err(_) => w.strip_prefix("eth").and_then(|n| n.parse::<usize>().ok()),
    });
    if let Some(n) = nic
        && let Some(Some(stack)) = stacks.get(n)
    {
        return (n, *stack);
    }
    if let Some(w) = wanted {
        println!(
            "warning: management: `{w}` is not an interface with a stack here; serving on eth0"
        );
    }
    // eth0 always has a stack.
    (0, stacks[0].expect("eth0 has a stack"))
}
