//! Frame processing: any bytes on any interface, then the engine's own
//! output fed back in, must give a decision and never a panic.
//!
//! Input layout: byte 0 chooses the interface (bit 0), whether the IPv4
//! header checksum is repaired before processing (bit 1; otherwise almost
//! every mutated header would stop at the checksum check), and whether the
//! frame is first preceded by a SYN that opens a flow for one of the
//! services (bits 2..3: none, DR, NAT, SNAT). The rest is the frame.
#![no_main]

use std::net::Ipv4Addr;

use lb_core::config::{
    AdminState, CheckType, Config, Forwarding, Interface, InterfaceRole, L4Settings, Mode, Network,
    Ports, RealServer, SchedulerKind, Secs, VirtualService,
};
use lb_core::engine::{Capacities, Decision, Engine};
use lb_core::flow::{Endpoint, Protocol};
use lb_core::frame::build;
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
        client_timeout: Secs(3600),
        server_timeout: Secs(3600),
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

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let mut e = engine();
    let nic = usize::from(ctl & 1);
    let now = Instant::from_secs(1);
    let opener = usize::from((ctl >> 2) & 3);
    if opener > 0 {
        // A flow the fuzzed frame may belong to (client 198.51.100.7:40000).
        let vip = Endpoint::new(Ipv4Addr::from(VIPS[opener - 1]), 104);
        let mut syn = build::tcp(
            Endpoint::new(Ipv4Addr::new(198, 51, 100, 7), 40000),
            vip,
            0x02,
            b"",
        );
        let d = e.process(0, &mut syn, now);
        assert!(matches!(d, Decision::Forward { .. }), "{d:?}");
    }
    let mut frame = rest.to_vec();
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
