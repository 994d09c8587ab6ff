//! Two frame paths as a clustered pair on simulated bridges (external,
//! internal, sync), with clients and real servers that answer ARP: the
//! election, replication, a master that dies mid-flow, its return and
//! preemption, a cut sync link, split brain, config sync.

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::net::Ipv4Addr;

use super::*;
use crate::config::ha::{Floating, Ha};
use crate::config::{Interface, InterfaceRole, Secs, parse_toml};
use crate::flow::Endpoint;
use crate::frame::build;
use crate::vrrp::State;

const EXT: usize = 0;
const INT: usize = 1;
const SYNC: usize = 2;
const CLIENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 50);
const CLIENT_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xc1];
const DR_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const NAT_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 11);
const SNAT_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 12);
const FLOAT_INT: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const KEY: &str = "8f3a1c0b9d2e4f5061728394a5b6c7d8e9f00112233445566778899aabbccdde";
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH_ACK: u8 = 0x18;

/// A host on a bridge (client or real server): answers ARP.
struct Host {
    bridge: usize,
    ip: Ipv4Addr,
    mac: [u8; 6],
}

fn hosts() -> Vec<Host> {
    let mut h = vec![Host {
        bridge: EXT,
        ip: CLIENT,
        mac: CLIENT_MAC,
    }];
    for (i, ip) in [[192, 0, 2, 21], [192, 0, 2, 22]].iter().enumerate() {
        h.push(Host {
            bridge: EXT,
            ip: Ipv4Addr::from(*ip),
            mac: [2, 0, 0, 0, 1, i as u8],
        });
    }
    for (i, ip) in [
        [10, 1, 0, 11],
        [10, 1, 0, 12],
        [10, 1, 0, 21],
        [10, 1, 0, 22],
        [10, 1, 0, 31],
    ]
    .iter()
    .enumerate()
    {
        h.push(Host {
            bridge: INT,
            ip: Ipv4Addr::from(*ip),
            mac: [2, 0, 0, 0, 2, i as u8],
        });
    }
    h
}

/// One appliance: `n` is 1 (priority 150) or 2 (priority 100).
struct Node {
    dp: Datapath,
    tx: Recorder,
    up: bool,
}

fn macs(n: u8) -> Vec<[u8; 6]> {
    (0..3).map(|i| [2, 0xaa, 0, 0, n, i]).collect()
}

fn addrs(n: u8) -> Vec<Option<(Ipv4Addr, u8)>> {
    vec![
        Some((Ipv4Addr::new(192, 0, 2, n), 24)),
        Some((Ipv4Addr::new(10, 1, 0, 1 + n), 16)),
        Some((Ipv4Addr::new(10, 9, 0, n), 24)),
    ]
}

fn config(n: u8, tweak: &dyn Fn(&mut Ha)) -> Config {
    let mut c = parse_toml(include_str!("../../testdata/l4.toml")).unwrap();
    c.network.hostname = alloc::format!("lb{n}");
    for (i, a) in addrs(n).into_iter().enumerate() {
        let a = a.unwrap();
        if i < c.network.interfaces.len() {
            c.network.interfaces[i].address = Some(a.0);
            c.network.interfaces[i].prefix = Some(a.1);
        } else {
            c.network.interfaces.push(Interface {
                name: String::from("eth2"),
                dhcp: false,
                address: Some(a.0),
                prefix: Some(a.1),
                role: InterfaceRole::External,
            });
        }
    }
    let mut ha = Ha {
        vrid: 42,
        priority: if n == 1 { 150 } else { 100 },
        interface: String::from("eth0"),
        advert_interval: 10,
        peer: None,
        preempt: true,
        preempt_delay: Secs(0),
        checksum_as_v2: false,
        virtual_mac: false,
        watch: vec![String::from("eth1")],
        vips: None,
        floating: vec![Floating {
            interface: String::from("eth1"),
            address: FLOAT_INT,
        }],
        sync_interface: Some(String::from("eth2")),
        sync_peer: Some(Ipv4Addr::new(10, 9, 0, 3 - n)),
        sync_key: Some(String::from(KEY)),
        sync_port: 8694,
        sync_refresh: Secs(2),
    };
    tweak(&mut ha);
    c.ha = Some(ha);
    crate::config::validate(&c).expect("pair config is valid");
    c
}

fn node(n: u8, now: u64, tweak: &dyn Fn(&mut Ha)) -> Node {
    Node {
        dp: Datapath::new(Setup {
            config: Some(config(n, tweak)),
            macs: macs(n),
            addrs: addrs(n),
            gateway: None,
            hash_seed: u64::from(n),
            memory: 64 << 20,
            now: Instant(now),
            boot_id: now * 10 + u64::from(n),
        }),
        tx: Recorder::default(),
        up: true,
    }
}

/// The lab: two appliances, the hosts, and which links are cut.
struct Pair {
    nodes: [Node; 2],
    hosts: Vec<Host>,
    now: u64,
    /// Bridges cut between the two appliances (a frame from one does not
    /// reach the other).
    cut: [bool; 3],
    /// Frames that reached the hosts, per bridge: (from node, frame).
    seen: Vec<(usize, usize, Vec<u8>)>,
}

impl Pair {
    fn new(tweak: &dyn Fn(&mut Ha)) -> Pair {
        Pair {
            nodes: [node(1, 0, tweak), node(2, 0, tweak)],
            hosts: hosts(),
            now: 0,
            cut: [false; 3],
            seen: Vec::new(),
        }
    }

    fn dp(&mut self, i: usize) -> &mut Datapath {
        &mut self.nodes[i].dp
    }

    fn role(&self, i: usize) -> State {
        self.nodes[i].dp.pair.as_ref().unwrap().state()
    }

    /// Delivers what node `i` sent, and what that caused, until quiet.
    fn deliver(&mut self, from: usize) {
        let mut queue: Vec<(usize, usize, Vec<u8>)> = self.nodes[from]
            .tx
            .frames
            .drain(..)
            .map(|(nic, f)| (from, nic, f))
            .collect();
        let mut rounds = 0;
        while let Some((src, nic, frame)) = queue.pop() {
            rounds += 1;
            assert!(rounds < 10_000, "frame storm");
            self.seen.push((src, nic, frame.clone()));
            // The hosts answer ARP requests for themselves.
            if let Some(a) = arp::Arp::parse(&frame)
                && a.request
                && let Some(h) = self
                    .hosts
                    .iter()
                    .find(|h| h.ip == a.target_ip && h.bridge == nic)
            {
                let mut r = vec![0u8; MIN_FRAME];
                a.reply(h.mac, h.ip).emit(&mut r);
                let n = &mut self.nodes[src];
                if n.up {
                    let now = Instant(self.now);
                    let _ = n.dp.on_frame(nic, &mut r, now, &mut n.tx);
                    queue.extend(n.tx.frames.drain(..).map(|(k, f)| (src, k, f)));
                }
            }
            let other = 1 - src;
            if !self.nodes[other].up || self.cut[nic] {
                continue;
            }
            // A bridge passes unicast frames only to their MAC's port.
            let dst: [u8; 6] = frame[..6].try_into().unwrap();
            let o = &self.nodes[other].dp;
            let vmac = crate::vrrp::wire::virtual_mac(42);
            let for_other = dst[0] & 1 == 1
                || dst == o.macs[nic]
                || (dst == vmac && o.pair.as_ref().is_some_and(|p| p.is_master()));
            if !for_other {
                continue;
            }
            let mut f = frame;
            let n = &mut self.nodes[other];
            let now = Instant(self.now);
            let v = n.dp.on_frame(nic, &mut f, now, &mut n.tx);
            // The stack answers ARP for its own address.
            if v == Verdict::PassToStack
                && let Some(a) = arp::Arp::parse(&f)
                && a.request
                && n.dp.address(nic).is_some_and(|x| x.0 == a.target_ip)
            {
                let mut r = vec![0u8; MIN_FRAME];
                a.reply(n.dp.macs[nic], a.target_ip).emit(&mut r);
                n.tx.frames.push((nic, r));
            }
            if let Verdict::Transmit(out) = v {
                n.tx.frames.push((out, f));
            }
            queue.extend(n.tx.frames.drain(..).map(|(k, f)| (other, k, f)));
        }
    }

    /// Runs both appliances for `ms` milliseconds in 5 ms steps.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 5;
            let now = Instant(self.now);
            for i in 0..2 {
                let n = &mut self.nodes[i];
                if !n.up {
                    continue;
                }
                n.dp.poll_pair(now, &mut n.tx);
                if self.now.is_multiple_of(TICK_MS) {
                    n.dp.tick(now, &mut n.tx);
                }
                self.deliver(i);
            }
        }
    }

    /// A client frame arriving on the external bridge at whichever
    /// appliance the client's ARP cache points to (`to`); returns what left.
    fn client(&mut self, to: usize, frame: Vec<u8>) -> Option<(usize, Vec<u8>)> {
        self.inject(to, EXT, frame)
    }

    /// Node `to` receives `frame` on `nic`; returns the frame it
    /// forwarded (at once, or once ARP answered for the next hop).
    fn inject(&mut self, to: usize, nic: usize, mut frame: Vec<u8>) -> Option<(usize, Vec<u8>)> {
        let now = Instant(self.now);
        let n = &mut self.nodes[to];
        let v = n.dp.on_frame(nic, &mut frame, now, &mut n.tx);
        let out = match v {
            Verdict::Transmit(out) => Some((out, frame)),
            _ => None,
        };
        let start = self.seen.len();
        self.deliver(to);
        out.or_else(|| {
            // Released from the ARP queue: a TCP or ICMP frame it sent.
            self.seen[start..]
                .iter()
                .rev()
                .find(|(src, _, f)| {
                    *src == to && f.len() > 34 && f[12..14] == [8, 0] && (f[23] == 6 || f[23] == 1)
                })
                .map(|(_, nic, f)| (*nic, f.clone()))
        })
    }

    fn kill(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.nodes[i].tx.frames.clear();
    }

    fn restart(&mut self, i: usize, tweak: &dyn Fn(&mut Ha)) {
        self.nodes[i] = node(i as u8 + 1, self.now, tweak);
    }

    /// Gratuitous ARPs node `i` sent for `ip` since `from` frames.
    fn garps(&self, i: usize, ip: Ipv4Addr, from: usize) -> usize {
        self.seen[from..]
            .iter()
            .filter(|(src, _, f)| {
                *src == i
                    && arp::Arp::parse(f).is_some_and(|a| a.sender_ip == ip && a.target_ip == ip)
            })
            .count()
    }
}

fn tcp(src: Endpoint, dst: Endpoint, flags: u8) -> Vec<u8> {
    let mut f = build::tcp(src, dst, flags, b"DICOM P-DATA");
    f[..6].copy_from_slice(&[2, 0xaa, 0, 0, 1, 0]);
    f
}

/// The part of a forwarded frame that must be the same from either
/// appliance: destination MAC and everything from the IP header on.
fn same(a: &(usize, Vec<u8>), b: &(usize, Vec<u8>)) {
    assert_eq!(a.0, b.0, "same interface");
    assert_eq!(a.1[..6], b.1[..6], "same next hop");
    // Up to the IP length (a frame that waited for ARP is padded).
    let len = 14 + usize::from(u16::from_be_bytes([a.1[16], a.1[17]]));
    assert_eq!(a.1[14..len], b.1[14..len], "same packet");
}

const NOTHING: &dyn Fn(&mut Ha) = &|_| {};

#[test]
fn elects_the_higher_priority_and_fills_the_backup() {
    let mut p = Pair::new(NOTHING);
    p.run(1500);
    assert_eq!(p.role(0), State::Master);
    assert_eq!(p.role(1), State::Backup);
    assert!(p.dp(0).owns(DR_VIP) && p.dp(0).owns(FLOAT_INT));
    assert!(!p.dp(1).owns(DR_VIP) && !p.dp(1).owns(FLOAT_INT));
    // Only the master answers ARP for the VIP and the floating address.
    for (nic, ip) in [(EXT, DR_VIP), (INT, FLOAT_INT)] {
        for i in 0..2 {
            let mut req = vec![0u8; MIN_FRAME];
            arp::Arp::request(CLIENT_MAC, CLIENT, ip).emit(&mut req);
            let n = &mut p.nodes[i];
            let v = n.dp.on_frame(nic, &mut req, Instant(p.now), &mut n.tx);
            assert_eq!(v == Verdict::Transmit(nic), i == 0, "node {i} for {ip}");
        }
    }
    let st = crate::mgmt::status::Status::from_datapath(p.dp(1));
    let ps = st.pair.clone().unwrap();
    assert_eq!(ps.role, "backup");
    assert_eq!(ps.peer_role.as_deref(), Some("master"));
    assert_eq!(ps.config_agree, Some(true));
    assert!(ps.sync_complete, "a refresh pass arrived: {ps:?}");
    assert!(ps.faults.is_empty(), "{:?}", ps.faults);
    assert!(st.to_text().starts_with("pair: backup"));
}

/// The heart of it: flows opened on the master are forwarded by the
/// backup, byte for byte, once the master is gone.
#[test]
fn takeover_keeps_every_flow_and_persistence() {
    let mut p = Pair::new(NOTHING);
    p.run(1500);
    let mut flows = Vec::new();
    for (k, (vip, port)) in [(DR_VIP, 104), (NAT_VIP, 104), (SNAT_VIP, 2575)]
        .into_iter()
        .enumerate()
    {
        let client = Endpoint::new(CLIENT, 40000 + k as u16);
        let vip = Endpoint::new(vip, port);
        let syn = p.client(0, tcp(client, vip, SYN)).expect("SYN forwarded");
        let server = Endpoint::new(
            Ipv4Addr::from(<[u8; 4]>::try_from(&syn.1[30..34]).unwrap()),
            u16::from_be_bytes([syn.1[36], syn.1[37]]),
        );
        let translated_src = Endpoint::new(
            Ipv4Addr::from(<[u8; 4]>::try_from(&syn.1[26..30]).unwrap()),
            u16::from_be_bytes([syn.1[34], syn.1[35]]),
        );
        if k > 0 {
            // NAT and SNAT replies come back through the appliance.
            let mut r = build::tcp(server, translated_src, SYN | ACK, b"");
            r[..6].copy_from_slice(&[2, 0xaa, 0, 0, 1, 1]);
            p.inject(0, INT, r).expect("SYN-ACK forwarded");
        }
        p.client(0, tcp(client, vip, ACK)).expect("ACK forwarded");
        let data = p.client(0, tcp(client, vip, PSH_ACK)).unwrap();
        let reply = (k > 0).then(|| {
            let mut r = build::tcp(server, translated_src, PSH_ACK, b"ok");
            r[..6].copy_from_slice(&[2, 0xaa, 0, 0, 1, 1]);
            let out = p.inject(0, INT, r.clone()).unwrap();
            (r, out)
        });
        flows.push((client, vip, data, reply));
    }
    // SNAT left from the floating address, so it means the same on both.
    assert_eq!(flows[2].2.1[26..30], FLOAT_INT.octets());
    p.run(300);
    let synced = p.dp(1).engine.conntrack().len();
    assert_eq!(synced, 3, "the backup holds the three flows");
    assert_eq!(
        p.dp(1).engine.persistence().len(),
        1,
        "and the NAT client's binding"
    );

    // The master dies. The backup takes over within the down interval
    // (3 × 100 ms + skew) and announces the addresses.
    let seen = p.seen.len();
    p.kill(0);
    p.run(500);
    assert_eq!(p.role(1), State::Master);
    assert!(p.garps(1, DR_VIP, seen) >= 1 && p.garps(1, FLOAT_INT, seen) >= 1);
    for (client, vip, data, reply) in &flows {
        let again = p.client(1, tcp(*client, *vip, PSH_ACK));
        // The first frame may wait for ARP of the server: send it again.
        let again = again
            .or_else(|| p.client(1, tcp(*client, *vip, PSH_ACK)))
            .expect("forwarded");
        same(data, &again);
        if let Some((r, out)) = reply {
            let again = p
                .inject(1, INT, r.clone())
                .or_else(|| p.inject(1, INT, r.clone()))
                .expect("reply forwarded");
            same(out, &again);
        }
    }
    // Persistence: a new association of the NAT client goes to its server.
    let client = Endpoint::new(CLIENT, 41000);
    let first = &flows[1].2.1;
    let syn = p
        .client(1, tcp(client, Endpoint::new(NAT_VIP, 104), SYN))
        .unwrap();
    assert_eq!(syn.1[30..34], first[30..34], "same real server");
}

#[test]
fn the_old_master_returns_syncs_then_preempts_without_breaking_flows() {
    let mut p = Pair::new(NOTHING);
    p.run(1500);
    let client = Endpoint::new(CLIENT, 40100);
    let vip = Endpoint::new(DR_VIP, 104);
    p.client(0, tcp(client, vip, SYN)).unwrap();
    p.client(0, tcp(client, vip, ACK)).unwrap();
    let before = p.client(0, tcp(client, vip, PSH_ACK)).unwrap();
    p.run(200);
    p.kill(0);
    p.run(600);
    assert_eq!(p.role(1), State::Master);
    // A flow that starts on the new master.
    let late = Endpoint::new(CLIENT, 40101);
    p.client(1, tcp(late, vip, SYN))
        .or_else(|| p.client(1, tcp(late, vip, SYN)));
    p.client(1, tcp(late, vip, ACK)).unwrap();
    let late_out = p.client(1, tcp(late, vip, PSH_ACK)).unwrap();
    // The old master boots again with empty tables: it stays backup until
    // it holds a complete copy, then takes its role back.
    p.restart(0, NOTHING);
    p.run(60);
    assert_ne!(p.role(0), State::Master);
    let mut took_back = None;
    let mut was_complete = false;
    for step in 0..200 {
        p.run(10);
        if p.role(0) == State::Master {
            took_back = Some(step);
            break;
        }
        was_complete = p
            .dp(0)
            .pair
            .as_ref()
            .unwrap()
            .sync
            .as_ref()
            .unwrap()
            .1
            .complete();
    }
    assert!(took_back.is_some(), "preempted");
    assert!(was_complete, "only with a complete copy of the tables");
    assert_eq!(p.role(1), State::Backup);
    // Both flows, the old one and the one born on the other appliance, go on.
    let a = p
        .client(0, tcp(client, vip, PSH_ACK))
        .or_else(|| p.client(0, tcp(client, vip, PSH_ACK)));
    same(&before, &a.unwrap());
    let b = p
        .client(0, tcp(late, vip, PSH_ACK))
        .or_else(|| p.client(0, tcp(late, vip, PSH_ACK)));
    same(&late_out, &b.unwrap());
}

#[test]
fn a_cut_sync_link_is_a_fault_not_a_split_brain() {
    let mut p = Pair::new(NOTHING);
    p.run(1500);
    p.cut[SYNC] = true;
    p.run(3000);
    assert_eq!((p.role(0), p.role(1)), (State::Master, State::Backup));
    for i in 0..2 {
        let st = crate::mgmt::status::Status::from_datapath(p.dp(i))
            .pair
            .unwrap();
        assert!(st.sync.as_deref().unwrap().starts_with("down"), "{st:?}");
        assert!(
            st.faults.iter().any(|f| f.contains("sync link")),
            "{:?}",
            st.faults
        );
    }
    // The backup's copy is stale now: it must not count as complete.
    assert!(
        !p.dp(1)
            .pair
            .as_ref()
            .unwrap()
            .sync
            .as_ref()
            .unwrap()
            .1
            .complete()
    );
    p.cut[SYNC] = false;
    p.run(3000);
    let st = crate::mgmt::status::Status::from_datapath(p.dp(1))
        .pair
        .unwrap();
    assert!(st.faults.is_empty() && st.sync_complete, "{st:?}");
}

#[test]
fn split_brain_heals_towards_the_higher_priority() {
    let mut p = Pair::new(NOTHING);
    p.run(1500);
    // Adverts stop passing (the external link cut between the two only):
    // the backup takes over too.
    p.cut[EXT] = true;
    p.run(1000);
    assert_eq!((p.role(0), p.role(1)), (State::Master, State::Master));
    let seen = p.seen.len();
    p.cut[EXT] = false;
    p.run(500);
    assert_eq!((p.role(0), p.role(1)), (State::Master, State::Backup));
    // The winner pulled the neighbours back with gratuitous ARP.
    assert!(p.garps(0, DR_VIP, seen) >= 1);
    let st = crate::mgmt::status::Status::from_datapath(p.dp(0))
        .pair
        .unwrap();
    assert!(
        st.faults.iter().any(|f| f.contains("split brain")),
        "{:?}",
        st.faults
    );
}

#[test]
fn config_goes_from_master_to_backup_and_never_backwards() {
    let mut p = Pair::new(NOTHING);
    p.dp(0).config.management.serial = 7;
    let blob = crate::envelope::encode(&p.dp(0).config).unwrap();
    p.dp(0).offer_config(blob);
    p.run(2000);
    let (serial, envelope) = p
        .dp(1)
        .take_synced_config()
        .expect("the backup got the config");
    assert_eq!(serial, 7);
    let received = crate::envelope::decode(&envelope).unwrap();
    let merged = crate::ha::merge_synced(&p.dp(1).config, received);
    assert_eq!(merged.network, p.dp(1).config.network, "own network kept");
    assert_eq!(
        merged.ha.as_ref().unwrap().priority,
        100,
        "own pair settings kept"
    );
    assert_eq!(merged.management.serial, 7);
    // The backup runs it: both agree, nothing more is sent.
    p.dp(1).config = merged;
    p.run(2500);
    assert!(p.dp(1).take_synced_config().is_none());
    let st = crate::mgmt::status::Status::from_datapath(p.dp(0))
        .pair
        .unwrap();
    assert_eq!(st.config_agree, Some(true));
    // A backup with a higher serial is never sent an older config; the
    // difference is reported.
    p.dp(1).config.management.serial = 9;
    p.run(2500);
    assert!(p.dp(1).take_synced_config().is_none());
    let st = crate::mgmt::status::Status::from_datapath(p.dp(0))
        .pair
        .unwrap();
    assert_eq!(st.config_agree, Some(false));
    assert!(st.faults.iter().any(|f| f.contains("serial")));
}

#[test]
fn a_watched_link_down_hands_over() {
    let mut p = Pair::new(NOTHING);
    p.run(1500);
    let now = Instant(p.now);
    let n = &mut p.nodes[0];
    n.dp.set_link(INT, false, now, &mut n.tx);
    p.deliver(0);
    assert_eq!(p.role(0), State::Fault);
    // It resigned with priority 0: the backup takes over after its skew.
    p.run(100);
    assert_eq!(p.role(1), State::Master);
    let now = Instant(p.now);
    let n = &mut p.nodes[0];
    n.dp.set_link(INT, true, now, &mut n.tx);
    p.run(3000);
    assert_eq!(p.role(0), State::Master, "back up, synced, preempted");
}

#[test]
fn virtual_mac_and_unicast_peer() {
    let tweak: &dyn Fn(&mut Ha) = &|h: &mut Ha| {
        h.virtual_mac = true;
        h.peer = Some(Ipv4Addr::new(
            192,
            0,
            2,
            if h.priority == 150 { 2 } else { 1 },
        ));
    };
    let mut p = Pair::new(tweak);
    p.run(1500);
    assert_eq!((p.role(0), p.role(1)), (State::Master, State::Backup));
    let vmac = crate::vrrp::wire::virtual_mac(42);
    // Adverts go to the peer only, from the virtual MAC.
    let adverts: Vec<&Vec<u8>> = p
        .seen
        .iter()
        .filter(|(src, _, f)| *src == 0 && crate::vrrp::wire::is_vrrp(f))
        .map(|(_, _, f)| f)
        .collect();
    assert!(adverts.len() > 5);
    assert!(
        adverts
            .iter()
            .all(|f| f[6..12] == vmac && f[30..34] == [192, 0, 2, 2])
    );
    // ARP for the VIP answers with the virtual MAC.
    let mut req = vec![0u8; MIN_FRAME];
    arp::Arp::request(CLIENT_MAC, CLIENT, DR_VIP).emit(&mut req);
    let n = &mut p.nodes[0];
    assert_eq!(
        n.dp.on_frame(EXT, &mut req, Instant(p.now), &mut n.tx),
        Verdict::Transmit(EXT)
    );
    assert_eq!(arp::Arp::parse(&req).unwrap().sender_mac, vmac);
}

#[test]
fn pings_to_owned_addresses_are_answered_by_the_master() {
    let mut p = Pair::new(NOTHING);
    p.run(1500);
    let mut ping = build::icmp(CLIENT, DR_VIP, 8, 0, &[0, 1, 0, 1, b'h', b'i']);
    ping[6..12].copy_from_slice(&CLIENT_MAC);
    let out = p.client(0, ping.clone()).expect("echo reply");
    assert_eq!(out.0, EXT);
    assert_eq!(out.1[..6], CLIENT_MAC);
    let ip = smoltcp::wire::Ipv4Packet::new_checked(&out.1[14..]).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!((ip.src_addr(), ip.dst_addr()), (DR_VIP, CLIENT));
    assert_eq!(ip.payload()[0], 0, "echo reply");
    assert_eq!(crate::frame::checksum::sum(ip.payload()), 0xffff);
    // The backup stays silent.
    assert!(p.client(1, ping).is_none());
}

#[test]
fn forged_or_replayed_sync_datagrams_are_refused() {
    let mut p = Pair::new(NOTHING);
    p.run(1500);
    // Capture one of the master's datagrams and play it again, and a copy
    // with one byte changed.
    let sync: Vec<Vec<u8>> = p
        .seen
        .iter()
        .filter(|(src, nic, f)| *src == 0 && *nic == SYNC && f.len() > 42 && f[23] == 17)
        .map(|(_, _, f)| f.clone())
        .collect();
    let mut counts = BTreeMap::new();
    let before = p
        .dp(1)
        .pair
        .as_ref()
        .unwrap()
        .sync
        .as_ref()
        .unwrap()
        .1
        .stats;
    let last = sync.last().unwrap().clone();
    p.inject(1, SYNC, last.clone());
    let mut forged = last;
    let n = forged.len();
    forged[n - 20] ^= 1;
    p.inject(1, SYNC, forged);
    let after = p
        .dp(1)
        .pair
        .as_ref()
        .unwrap()
        .sync
        .as_ref()
        .unwrap()
        .1
        .stats;
    for e in crate::ha::wire::Error::ALL {
        counts.insert(
            e.name(),
            after.rejected[e.index()] - before.rejected[e.index()],
        );
    }
    assert_eq!(counts["replayed"], 1, "{counts:?}");
    assert_eq!(counts["bad-mac"], 1, "{counts:?}");
}
