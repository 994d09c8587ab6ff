#!/usr/bin/env python3
"""Throws malformed and unusual frames at the appliance (scapy, layer 2, on
--iface): truncated Ethernet/IP/TCP/UDP headers, bad IP and TCP checksums,
IP options, fragments (first, middle, overlapping, tiny), odd TCP flag
combinations (SYN+FIN, SYN+RST, all flags, none), bad IHL and total length,
and junk EtherTypes. Each goes once to the VIP and once to the appliance's
own address. Bounded: a fixed list, sent --rounds times. Prints how many
frames it sent."""

import argparse

from scapy.all import IP, TCP, UDP, ICMP, Ether, Raw, fragment, sendp, conf

ap = argparse.ArgumentParser()
ap.add_argument("--iface", default="eth0")
ap.add_argument("--mac", required=True, help="appliance MAC")
ap.add_argument("--vip", required=True)
ap.add_argument("--own", required=True, help="appliance's own address")
ap.add_argument("--port", type=int, default=104)
ap.add_argument("--rounds", type=int, default=3)
args = ap.parse_args()
conf.verb = 0


def frames(dst):
    eth = Ether(dst=args.mac)
    p = args.port
    good = eth / IP(dst=dst) / TCP(dport=p, sport=40000, flags="S")
    raw = bytes(good)
    out = [
        # Truncated at every layer boundary and in the middle of headers.
        raw[:10], raw[:14], raw[:20], raw[:33], raw[:34], raw[:40], raw[:53],
        # Bad checksums.
        eth / IP(dst=dst, chksum=0x1234) / TCP(dport=p, flags="S"),
        eth / IP(dst=dst) / TCP(dport=p, flags="S", chksum=0x4321),
        eth / IP(dst=dst) / UDP(dport=p, chksum=0x9999) / Raw(b"x" * 20),
        # IP options (record route, then a bogus option).
        eth / IP(dst=dst, options=b"\x07\x07\x04\x00\x00\x00\x00\x00") / TCP(dport=p, flags="S"),
        eth / IP(dst=dst, options=b"\x99\x02\x00\x00") / TCP(dport=p, flags="S"),
        # IHL too small / too large, total length lies.
        eth / IP(dst=dst, ihl=3) / TCP(dport=p, flags="S"),
        eth / IP(dst=dst, ihl=15) / TCP(dport=p, flags="S"),
        eth / IP(dst=dst, len=2000) / TCP(dport=p, flags="S"),
        eth / IP(dst=dst, len=10) / TCP(dport=p, flags="S"),
        # Odd TCP flags and data offsets.
        eth / IP(dst=dst) / TCP(dport=p, flags="SF"),
        eth / IP(dst=dst) / TCP(dport=p, flags="SR"),
        eth / IP(dst=dst) / TCP(dport=p, flags="FSRPAUEC"),
        eth / IP(dst=dst) / TCP(dport=p, flags=0),
        eth / IP(dst=dst) / TCP(dport=p, flags="S", dataofs=2),
        eth / IP(dst=dst) / TCP(dport=p, flags="S", dataofs=15),
        # A port the service does not have, and ICMP with garbage inside.
        eth / IP(dst=dst) / TCP(dport=p + 1, flags="S"),
        eth / IP(dst=dst) / ICMP(type=3, code=4) / Raw(b"\x45" + b"\x00" * 7),
        # Junk EtherType and an empty frame body.
        Ether(dst=args.mac, type=0x88B5) / Raw(b"\x00" * 46),
        Ether(dst=args.mac, type=0x0800),
    ]
    # Fragments: a TCP SYN with payload split in 8-byte pieces, sent
    # shuffled, plus an overlapping and a tiny first fragment.
    big = eth / IP(dst=dst) / TCP(dport=p, flags="S") / Raw(b"A" * 64)
    frags = fragment(big[IP], fragsize=16)
    out += [eth / f for f in reversed(frags)]
    out.append(eth / IP(dst=dst, flags="MF", frag=0) / Raw(b"\x00" * 4))
    out.append(eth / IP(dst=dst, frag=1) / Raw(b"B" * 24))
    return out


count = 0
for _ in range(args.rounds):
    for dst in (args.vip, args.own):
        for f in frames(dst):
            sendp(Raw(f) if isinstance(f, bytes) else f, iface=args.iface)
            count += 1
print(f"sent {count} frames")
