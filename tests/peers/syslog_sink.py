#!/usr/bin/env python3
"""A syslog receiver (RFC 5426, UDP): appends each datagram as one line to
OUTFILE. Usage: syslog_sink.py PORT OUTFILE"""
import socket
import sys

port, out = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", port))
with open(out, "ab", buffering=0) as f:
    while True:
        data, _ = s.recvfrom(65535)
        f.write(data.replace(b"\n", b" ") + b"\n")
