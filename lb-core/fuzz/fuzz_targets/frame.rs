//! Frame processing: any bytes on any interface, then the engine's own
//! output fed back in, must give a decision and never a panic.
//!
//! Input layout: byte 0 chooses the interface (bit 0), whether the IPv4
//! header checksum is repaired before processing (bit 1; otherwise almost
//! every mutated header would stop at the checksum check), whether a SYN
//! first opens a flow for one of the services (bits 2..3: none, DR, NAT,
//! SNAT), and whether the rest is the frame itself (bit 4 clear) or
//! changes to a valid frame of that flow (bit 4 set; bits 5..7 pick it:
//! next segment, server reply, ICMP errors, UDP, FIN).
#![no_main]

use std::net::Ipv4Addr;

use lb_core::config::{
    AdminState, CheckType, Config, Forwarding, Interface, InterfaceRole, L4Settings, L7Settings,
    Mode, Network, Ports, RealServer, SchedulerKind, Secs, SendProxy, VirtualService,
};
use lb_core::engine::{Capacities, Decision, Engine};
use lb_core::flow::{Endpoint, FlowKey, Protocol};
use lb_core::frame::{self, Class, build};
use lb_core::time::Instant;
use libfuzzer_sys::fuzz_target;

fn interface(name: &str, addr: [u8; 4], prefix: u8, role: InterfaceRole) -> Interface {
    Interface {
        name: name.into(),
        dhcp: false,
        address: Some(Ipv4Addr::from(addr)),
        prefix: Some(prefix),
        role,
    }
}

fn server(ip: [u8; 4]) -> RealServer {
    RealServer {
        label: "rs".into(),
        ip: Ipv4Addr::from(ip),
        port: None,
        weight: 100,
        min_connections: 0,
        max_connections: 0,
        state: AdminState::Online,
        check_port: None,
        agent_port: None,
        send_proxy: SendProxy::None,
    }
}

fn service(
    vip: [u8; 4],
    port: u16,
    protocol: Protocol,
    forwarding: Forwarding,
    servers: Vec<RealServer>,
) -> VirtualService {
    VirtualService {
        label: "vs".into(),
        vip: Ipv4Addr::from(vip),
        ports: Ports(vec![port]),
        protocol,
        forwarding,
        scheduler: SchedulerKind::Wlc,
        mode: Mode::LoadBalanced,
        persistence_timeout: Some(Secs(3600)),
        persistence_netmask: None,
        check_type: CheckType::Connect,
        check_port: None,
        check_interval: Secs(10),
        check_timeout: Secs(5),
        check_rise: 2,
        check_fall: 3,
        check_request: None,
        check_expect: None,
        check_calling_ae: None,
        check_called_ae: None,
        check_hl7_message: None,
        check_hl7_control_id_prefix: None,
        check_tls_verify: Default::default(),
        check_tls_ca: None,
        check_tls_pin: None,
        check_tls_name: None,
        fallback: None,
        client_timeout: Secs(3600),
        server_timeout: Secs(3600),
        connect_timeout: Secs(3),
        retries: 2,
        l7_transparent: false,
        real_servers: servers,
    }
}

const VIPS: [[u8; 4]; 3] = [[192, 0, 2, 10], [192, 0, 2, 11], [192, 0, 2, 12]];

fn engine() -> Engine {
    let config = Config {
        network: Network {
            interfaces: vec![
                interface("eth0", [192, 0, 2, 1], 24, InterfaceRole::External),
                interface("eth1", [10, 1, 0, 1], 16, InterfaceRole::Internal),
            ],
            gateway: Some(Ipv4Addr::new(192, 0, 2, 254)),
            ..Network::default()
        },
        l4: L4Settings::default(),
        l7: L7Settings::default(),
        management: Default::default(),
        virtual_services: vec![
            service(
                VIPS[0],
                104,
                Protocol::Tcp,
                Forwarding::Dr,
                vec![server([192, 0, 2, 21]), server([192, 0, 2, 22])],
            ),
            service(
                VIPS[1],
                104,
                Protocol::Tcp,
                Forwarding::Nat,
                vec![server([10, 1, 0, 11]), server([10, 1, 0, 12])],
            ),
            service(
                VIPS[2],
                104,
                Protocol::Tcp,
                Forwarding::Snat,
                vec![server([10, 1, 0, 21])],
            ),
            service(
                VIPS[1],
                514,
                Protocol::Udp,
                Forwarding::Nat,
                vec![server([10, 1, 0, 31])],
            ),
            service(
                VIPS[2],
                514,
                Protocol::Udp,
                Forwarding::Snat,
                vec![server([10, 1, 0, 32])],
            ),
        ],
    };
    let mut caps = Capacities::from_config(&config);
    caps.conntrack = 64;
    caps.persistence = 64;
    caps.snat_ports = 5000..=5007;
    Engine::new(&config, caps).expect("fuzz config builds")
}

const CLIENT: Endpoint = Endpoint::new(Ipv4Addr::new(198, 51, 100, 7), 40000);
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;

/// Frames that reach deep into the engine once the flow of `opened` (the
/// opener SYN after the engine rewrote it) exists: the client's next
/// segment, the server's reply, ICMP errors from either side, UDP.
fn template(which: u8, vip: Endpoint, opened: &[u8]) -> Vec<u8> {
    let inside = match frame::classify(opened) {
        Ok(Class::L4(p)) => p.key,
        _ => FlowKey {
            proto: Protocol::Tcp,
            src: CLIENT,
            dst: vip,
        },
    };
    match which % 6 {
        0 => build::tcp(CLIENT, vip, ACK, b"P-DATA"),
        1 => build::tcp(inside.dst, inside.src, SYN | ACK, b"A-ASSOCIATE-AC"),
        2 => build::icmp(inside.dst.addr, CLIENT.addr, 3, 4, &opened[14..]),
        3 => {
            let reply = build::tcp(vip, CLIENT, SYN | ACK, b"");
            build::icmp(CLIENT.addr, vip.addr, 3, 3, &reply[14..])
        }
        4 => build::udp(CLIENT, Endpoint::new(vip.addr, 514), b"<14>msg"),
        _ => build::tcp(CLIENT, vip, 0x11, b""),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let mut e = engine();
    let nic = usize::from(ctl & 1);
    let now = Instant::from_secs(1);
    let opener = usize::from((ctl >> 2) & 3);
    let mut opened = Vec::new();
    let vip = Endpoint::new(Ipv4Addr::from(VIPS[opener.max(1) - 1]), 104);
    if opener > 0 {
        // A flow the fuzzed frame may belong to.
        opened = build::tcp(CLIENT, vip, SYN, b"");
        let d = e.process(0, &mut opened, now);
        assert!(matches!(d, Decision::Forward { .. }), "{d:?}");
    }
    let mut frame = if ctl & 0x10 != 0 && opener > 0 {
        // Structured: a valid frame of that flow, XORed with the input
        // from an offset the input chooses.
        let mut f = template(ctl >> 5, vip, &opened);
        if let Some((&offset, flips)) = rest.split_first() {
            let len = f.len();
            for (i, b) in flips.iter().enumerate() {
                f[(usize::from(offset) + i) % len] ^= b;
            }
            if flips.len() > len {
                f.extend_from_slice(&flips[len..]);
            }
        }
        f
    } else {
        rest.to_vec()
    };
    if ctl & 2 != 0 {
        build::fix_ip_checksum(&mut frame);
    }
    let first = e.process(nic, &mut frame, now);
    // Whatever left the engine, send it back in on the other side.
    if let Decision::Forward { nic: out, .. } = first {
        let _ = e.process(out ^ 1, &mut frame, Instant::from_secs(2));
    }
    let _ = e.process(nic, &mut frame, Instant::from_secs(4000));
    let _ = e.expire(Instant::from_secs(100_000), 1000);
});
