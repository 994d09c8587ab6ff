#!/usr/bin/env python3
"""Clients that misuse the appliance's management command port (TCP 9081).

oversized HOST PORT MIB
    Sends a request header that claims MIB MiB, then streams zeros until the
    appliance cuts the connection off (at most MIB MiB). Prints JSON:
    {"sent": bytes written, "reply": hex of what came back}.
slow HOST PORT N SECONDS
    Opens N connections, each sending a request header (claiming 1000
    bytes) and then one byte a second, never finishing, for SECONDS.
    Prints JSON: {"opened": n, "refused": n, "cut": n} (cut: connections
    the appliance closed before the end).
"""
import json
import select
import socket
import struct
import sys
import time

HEADER = b"LBRQ" + struct.pack("<H", 1)


def header(length):
    return HEADER + struct.pack("<I", length)


def oversized(host, port, mib):
    s = socket.create_connection((host, port), timeout=10)
    s.setblocking(False)
    limit = (mib << 20) + 10
    pending = header(mib << 20)
    sent, reply = 0, b""
    chunk = b"\0" * 65536
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        want_write = [s] if sent < limit else []
        r, w, _ = select.select([s], want_write, [], 1)
        if r:
            try:
                data = s.recv(65536)
            except OSError:
                break
            if not data:
                break
            reply += data
            # A whole reply frame: the appliance has answered.
            if len(reply) >= 10 and len(reply) >= 10 + struct.unpack("<I", reply[6:10])[0]:
                break
        if w:
            try:
                n = s.send(pending or chunk)
            except OSError:
                break
            sent += n
            pending = pending[n:] if pending else b""
    s.close()
    print(json.dumps({"sent": sent, "reply": reply.hex()}))


def slow(host, port, n, seconds):
    conns, refused = [], 0
    for _ in range(n):
        try:
            s = socket.create_connection((host, port), timeout=3)
            s.sendall(header(1000))
            s.setblocking(False)
            conns.append(s)
        except OSError:
            refused += 1
    cut = set()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i, s in enumerate(conns):
            if i in cut:
                continue
            try:
                s.send(b"x")
                r, _, _ = select.select([s], [], [], 0)
                if r and not s.recv(4096):
                    cut.add(i)
            except OSError:
                cut.add(i)
        time.sleep(1)
    for s in conns:
        s.close()
    print(json.dumps({"opened": len(conns), "refused": refused, "cut": len(cut)}))


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "oversized":
        oversized(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    elif mode == "slow":
        slow(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(f"unknown mode {mode}")
