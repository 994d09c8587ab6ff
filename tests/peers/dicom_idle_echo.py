#!/usr/bin/env python3
"""A DICOM association that sits idle: associate, C-ECHO, send nothing for
--idle seconds, C-ECHO again on the same association, release. Exits 0 only
if the association is accepted, both echoes answer with status 0x0000 and the
release is answered.

The request PDUs are the ones dcmtk's echoscu sent (captured in
lb-core/testdata/health/dicom/echo_ok.c2s.bin, see the README there), replayed
as they are; the replies are parsed PDU by PDU."""

import argparse
import os
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CAPTURE = os.path.join(HERE, "..", "..", "lb-core", "testdata", "health", "dicom", "echo_ok.c2s.bin")

ap = argparse.ArgumentParser()
ap.add_argument("addr")
ap.add_argument("port", type=int)
ap.add_argument("--idle", type=float, default=130)
ap.add_argument("--timeout", type=float, default=30)
args = ap.parse_args()


def pdus(data):
    out, i = [], 0
    while i < len(data):
        length = struct.unpack(">I", data[i + 2:i + 6])[0]
        out.append(data[i:i + 6 + length])
        i += 6 + length
    return out


def read_pdu(sock):
    def exact(n):
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed")
            buf += chunk
        return buf
    head = exact(6)
    return head[0], exact(struct.unpack(">I", head[2:6])[0])


def echo_status(body):
    """Status (0000,0900) from a P-DATA-TF carrying a C-ECHO-RSP command."""
    # PDV: length(4) context(1) header(1), then the command set, implicit VR LE.
    cmd = body[6:]
    i = 0
    while i + 8 <= len(cmd):
        group, elem, length = struct.unpack("<HHI", cmd[i:i + 8])
        if (group, elem) == (0x0000, 0x0900):
            return struct.unpack("<H", cmd[i + 8:i + 10])[0]
        i += 8 + length
    return None


assoc_rq, echo_rq, release_rq = pdus(open(CAPTURE, "rb").read())
s = socket.create_connection((args.addr, args.port), timeout=args.timeout)
s.sendall(assoc_rq)
kind, _ = read_pdu(s)
if kind != 0x02:
    print(f"association not accepted (PDU type {kind:#x})", flush=True)
    sys.exit(2)
ok = True
for n in (1, 2):
    if n == 2:
        time.sleep(args.idle)
    s.sendall(echo_rq)
    kind, body = read_pdu(s)
    status = echo_status(body) if kind == 0x04 else None
    print(f"echo {n}: PDU {kind:#x} status {status}", flush=True)
    ok &= status == 0
s.sendall(release_rq)
kind, _ = read_pdu(s)
print(f"release: PDU {kind:#x}", flush=True)
ok &= kind == 0x06
sys.exit(0 if ok else 1)
