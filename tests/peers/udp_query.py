#!/usr/bin/env python3
"""Sends one UDP datagram and prints the reply; exits 1 after --timeout
seconds without one (after --tries sends)."""

import argparse
import socket
import sys

ap = argparse.ArgumentParser()
ap.add_argument("addr")
ap.add_argument("port", type=int)
ap.add_argument("payload")
ap.add_argument("--timeout", type=float, default=2.0)
ap.add_argument("--tries", type=int, default=3)
args = ap.parse_args()

s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(args.timeout)
for _ in range(args.tries):
    s.sendto(args.payload.encode(), (args.addr, args.port))
    try:
        data, peer = s.recvfrom(65535)
    except socket.timeout:
        continue
    print(f"{peer[0]}:{peer[1]} {data.decode(errors='replace')}")
    sys.exit(0)
sys.exit(1)
