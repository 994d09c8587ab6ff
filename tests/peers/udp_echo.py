#!/usr/bin/env python3
"""UDP echo real server for end-to-end tests: answers each datagram with
`<label>:<payload>` so the client sees which real server answered and that
the payload came back intact. Bounded by --lifetime seconds.

Replies leave from the address the datagram was sent to (IP_PKTINFO), as a
direct-routing real server must: there the datagram is addressed to the VIP
held on loopback, and a reply from the primary address would not match the
client's socket."""

import argparse
import socket
import struct
import time

IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # Linux value; Python lacks the constant

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--label", required=True)
ap.add_argument("--lifetime", type=float, default=600)
args = ap.parse_args()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
s.bind(("0.0.0.0", args.port))
s.settimeout(0.5)
end = time.time() + args.lifetime
while time.time() < end:
    try:
        data, anc, _flags, peer = s.recvmsg(65535, socket.CMSG_SPACE(12))
    except socket.timeout:
        continue
    # struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }
    dst = next(
        (d[8:12] for lvl, typ, d in anc if lvl == socket.IPPROTO_IP and typ == IP_PKTINFO and len(d) >= 12),
        None,
    )
    reply = args.label.encode() + b":" + data
    if dst is None:
        s.sendto(reply, peer)
    else:
        s.sendmsg([reply], [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("i4s4s", 0, dst, bytes(4)))], 0, peer)
