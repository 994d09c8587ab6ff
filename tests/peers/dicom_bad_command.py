#!/usr/bin/env python3
"""Associate with a DICOM SCP using a captured A-ASSOCIATE-RQ (--rq file), then
send a P-DATA-TF whose command set is empty, which makes DCMTK's storescp
abort the association; writes nothing itself (run it through tcp_relay.py to
record the exchange). Loopback only."""
import argparse
import socket
import time

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--rq", required=True)
args = ap.parse_args()
rq = open(args.rq, "rb").read()
rq = rq[: 6 + int.from_bytes(rq[2:6], "big")]  # the first PDU only
s = socket.create_connection(("127.0.0.1", args.port), timeout=5)
s.sendall(rq)
time.sleep(0.3)
s.recv(65536)  # A-ASSOCIATE-AC
# P-DATA-TF, one PDV: context 1, command + last fragment, no bytes.
s.sendall(b"\x04\x00\x00\x00\x00\x06\x00\x00\x00\x02\x01\x03")
try:
    while s.recv(4096):
        pass
except OSError:
    pass
s.close()
