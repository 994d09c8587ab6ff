#!/usr/bin/env python3
"""UDP echo real server for end-to-end tests: answers each datagram with
`<label>:<payload>` so the client sees which real server answered and that
the payload came back intact. Bounded by --lifetime seconds."""

import argparse
import socket
import time

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--label", required=True)
ap.add_argument("--lifetime", type=float, default=600)
args = ap.parse_args()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", args.port))
s.settimeout(0.5)
end = time.time() + args.lifetime
while time.time() < end:
    try:
        data, peer = s.recvfrom(65535)
    except socket.timeout:
        continue
    s.sendto(args.label.encode() + b":" + data, peer)
