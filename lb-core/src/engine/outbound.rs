//! Outbound SNAT: connections the real servers of a NAT service open
//! themselves (a PACS's C-MOVE or C-STORE back to a modality, storage
//! commitment) leave with the VIP as their source.
//!
//! With `outbound_snat = true`, a new flow from one of the service's real
//! servers (the appliance is their gateway) to an address that is neither
//! the appliance's nor a VIP is tracked like an inbound NAT flow seen from
//! the other side:
//!
//! | key | 5-tuple |
//! |---|---|
//! | original (as sent) | `RIP:port → far end` ⇒ `VIP:allocated → far end` |
//! | reply (as arriving) | `far end → VIP:allocated` ⇒ `far end → RIP:port` |
//!
//! so the engine's forwarding and ICMP translation serve it unchanged. The
//! source port comes from one allocator per (protocol, VIP) (the SNAT port
//! range, passing over the VIP's own service ports, so a reply never looks
//! like a client of the VIP); it is given back when the flow expires. Outbound
//! flows do not count as connections of the server (scheduling) and leave
//! no persistence; a halted server's outbound flows end with it. When the
//! ports or the connection table are used up the SYN is dropped and
//! counted (`PortsExhausted`, `ConnTableFull`): the server's TCP retries.

use core::net::Ipv4Addr;

use super::{Decision, Engine, Sent, ServiceRuntime};
use crate::config::{AdminState, Forwarding, VirtualService};
use crate::conntrack::{Direction, Flow, TcpFlags as ConnFlags};
use crate::flow::{Endpoint, FlowKey, Protocol};
use crate::frame::{DropReason, L4Checksum, L4Packet, PortAllocator};

/// Allocator slot of `proto` in [`ServiceRuntime::outbound`].
pub(super) fn slot(proto: Protocol) -> usize {
    match proto {
        Protocol::Tcp => 0,
        Protocol::Udp => 1,
    }
}

/// Most ports an allocation passes over because a service of the VIP
/// listens on them.
const SKIP_SERVICE_PORTS: usize = 64;

/// The port allocators of `vs`'s outbound flows (TCP, UDP), keyed by its
/// VIP.
pub(super) fn allocators(
    vs: &VirtualService,
    snat: &mut super::apply::SnatPorts,
) -> Option<[usize; 2]> {
    (vs.outbound_snat && vs.forwarding == Forwarding::Nat).then(|| {
        [
            snat.index((Protocol::Tcp, vs.vip)),
            snat.index((Protocol::Udp, vs.vip)),
        ]
    })
}

/// Real servers of outbound-SNAT services, sorted by address, with their
/// (service, server) — the first service that lists the address.
pub(super) fn servers(services: &[ServiceRuntime]) -> alloc::vec::Vec<(Ipv4Addr, u16, u16)> {
    let mut list: alloc::vec::Vec<(Ipv4Addr, u16, u16)> = services
        .iter()
        .enumerate()
        .filter(|(_, rt)| rt.outbound.is_some())
        .flat_map(|(si, rt)| {
            rt.server_config
                .iter()
                .enumerate()
                .map(move |(ri, rs)| (rs.ip, si as u16, ri as u16))
        })
        .collect();
    // Stable: the first service listing an address stays first.
    list.sort_by_key(|e| e.0);
    list.dedup_by_key(|e| e.0);
    list
}

/// Gives an outbound flow's port back to its allocator.
pub(super) fn free_port(services: &[ServiceRuntime], ports: &mut [PortAllocator], flow: &Flow) {
    if let Some(idx) = services
        .get(usize::from(flow.service))
        .and_then(|s| s.outbound)
        && let Some(a) = ports.get_mut(idx[slot(flow.original.proto)])
    {
        a.free(flow.reply.dst.port);
    }
}

impl Engine {
    /// A packet from a real server that matched no flow and no VIP: the
    /// start of an outbound flow if its service has `outbound_snat`.
    /// `None`: not one (the caller passes the packet to the stack).
    pub(super) fn outbound_new(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        pkt: &L4Packet,
        checksum: L4Checksum,
        sent: Sent,
        now: crate::time::Instant,
    ) -> Option<Result<Decision, DropReason>> {
        let (src, dst) = (pkt.key.src.addr, pkt.key.dst.addr);
        let i = self
            .outbound_servers
            .binary_search_by_key(&src, |e| e.0)
            .ok()?;
        let (_, svc16, srv16) = self.outbound_servers[i];
        if self.routes.is_local(dst) || self.is_l4_vip(dst) {
            return None;
        }
        let f = pkt.tcp_flags;
        if pkt.key.proto == Protocol::Tcp && !(f.syn() && !f.ack() && !f.rst() && !f.fin()) {
            return None;
        }
        let (svc, srv) = (usize::from(svc16), usize::from(srv16));
        Some(self.outbound_flow(nic, frame, pkt, checksum, sent, (svc, srv), now))
    }

    /// A free port of allocator `alloc` on which no service of `vip`
    /// listens (a reply to it would look like a new client of the VIP).
    /// The allocator's cursor moves past a skipped port, so the next try
    /// meets another one.
    fn outbound_port(&mut self, alloc: usize, vip: Ipv4Addr, proto: Protocol) -> Option<u16> {
        for _ in 0..SKIP_SERVICE_PORTS {
            let port = self.snat_ports[alloc].allocate()?;
            if self.service_for(Endpoint::new(vip, port), proto).is_none() {
                return Some(port);
            }
            self.snat_ports[alloc].free(port);
        }
        None
    }

    #[allow(clippy::too_many_arguments)]
    fn outbound_flow(
        &mut self,
        nic: usize,
        frame: &mut [u8],
        pkt: &L4Packet,
        checksum: L4Checksum,
        sent: Sent,
        (svc, srv): (usize, usize),
        now: crate::time::Instant,
    ) -> Result<Decision, DropReason> {
        if self.standby {
            return Err(self.count_drop(svc, Some(srv), DropReason::Standby));
        }
        let service = &self.services[svc];
        if service.servers[srv].admin == AdminState::Halt {
            return Err(self.count_drop(svc, Some(srv), DropReason::ServerHalted));
        }
        if pkt.ip.ttl <= 1 {
            return Err(self.count_drop(svc, Some(srv), DropReason::TtlExpired));
        }
        if self.routes.route(pkt.key.dst.addr).is_none() {
            return Err(self.count_drop(svc, Some(srv), DropReason::NoRoute));
        }
        let (vip, timeout) = (service.vip.addr, service.established_timeout);
        let Some(alloc) = service.outbound.map(|idx| idx[slot(pkt.key.proto)]) else {
            return Err(self.count_drop(svc, Some(srv), DropReason::NoRoute));
        };
        let Some(port) = self.outbound_port(alloc, vip, pkt.key.proto) else {
            return Err(self.count_drop(svc, Some(srv), DropReason::PortsExhausted));
        };
        let reply = FlowKey {
            proto: pkt.key.proto,
            src: pkt.key.dst,
            dst: Endpoint::new(vip, port),
        };
        let id = match self.track(pkt.key, Some(reply), (svc, srv), timeout, now) {
            Ok(id) => id,
            Err(e) => {
                // The port is ours: a live flow with this reply key would
                // hold it allocated.
                self.snat_ports[alloc].free(port);
                return Err(self.count_drop(svc, Some(srv), super::insert_drop_reason(&e)));
            }
        };
        self.conntrack.set_outbound(id);
        self.services[svc].stats.outbound += 1;
        if pkt.key.proto == Protocol::Tcp {
            self.conntrack.touch(
                id,
                Direction::Original,
                Some(ConnFlags(pkt.tcp_flags.0)),
                now,
            );
        }
        let Some(&flow) = self.conntrack.flow(id) else {
            return Ok(Decision::ToStack);
        };
        self.forward(nic, frame, pkt, checksum, sent, &flow, Direction::Original)
    }
}
