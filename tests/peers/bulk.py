#!/usr/bin/env python3
"""Bulk TCP transfer with an exact end-to-end check, for end-to-end tests.

    bulk.py serve --port P [--lifetime S]
    bulk.py send HOST PORT BYTES [--reverse]

`send` opens one connection and moves BYTES bytes: to the server (default;
the client half-closes when done and the server answers with the count and
SHA-256 of what it read up to end of stream), or from the server
(`--reverse`; the server sends the bytes, then a trailer line with their
count and SHA-256, then closes). The client compares count and digest with
its own and prints `bytes=N sha256=H` on success; any difference, a short
read, extra bytes or a stall past the timeout is a failure (exit 1).

iperf3's own report cannot serve for an exact count: it takes the
receiver's total when the sender says it is done, so bytes still in flight
are missing from it."""

import argparse
import hashlib
import os
import socket
import sys
import threading
import time

BLOCK = 1 << 20
TIMEOUT = 60


def serve_one(conn):
    conn.settimeout(TIMEOUT)
    f = conn.makefile("rb")
    header = f.readline().split()
    if len(header) != 2:
        return
    verb, n = header[0], int(header[1])
    if verb == b"SEND":
        h, count = hashlib.sha256(), 0
        while True:
            data = f.read1(BLOCK)
            if not data:
                break
            h.update(data)
            count += len(data)
        conn.sendall(f"GOT {count} {h.hexdigest()}\n".encode())
    elif verb == b"RECV":
        block = os.urandom(BLOCK)
        h, left = hashlib.sha256(), n
        while left > 0:
            piece = block[: min(left, BLOCK)]
            conn.sendall(piece)
            h.update(piece)
            left -= len(piece)
        conn.sendall(f"SENT {n} {h.hexdigest()}\n".encode())
    conn.shutdown(socket.SHUT_WR)


def serve(port, lifetime):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    s.settimeout(0.5)
    end = time.time() + lifetime
    while time.time() < end:
        try:
            conn, _ = s.accept()
        except socket.timeout:
            continue
        threading.Thread(target=lambda c=conn: (serve_one(c), c.close()), daemon=True).start()


def recv_exact(sock, n, h):
    got = 0
    while got < n:
        data = sock.recv(min(BLOCK, n - got))
        if not data:
            break
        h.update(data)
        got += len(data)
    return got


def send(host, port, n, reverse):
    c = socket.create_connection((host, port), timeout=TIMEOUT)
    h = hashlib.sha256()
    if not reverse:
        c.sendall(f"SEND {n}\n".encode())
        block = os.urandom(BLOCK)
        left = n
        while left > 0:
            piece = block[: min(left, BLOCK)]
            c.sendall(piece)
            h.update(piece)
            left -= len(piece)
        c.shutdown(socket.SHUT_WR)
        reply = c.makefile("rb").readline().decode().split()
        ok = reply == ["GOT", str(n), h.hexdigest()]
        what = reply
    else:
        c.sendall(f"RECV {n}\n".encode())
        got = recv_exact(c, n, h)
        f = c.makefile("rb")
        trailer = f.readline().decode().split()
        rest = f.read()
        ok = got == n and trailer == ["SENT", str(n), h.hexdigest()] and rest == b""
        what = (got, trailer, len(rest))
    if not ok:
        print(f"mismatch: sent/expected {n} bytes sha256 {h.hexdigest()}, peer said {what}")
        sys.exit(1)
    print(f"bytes={n} sha256={h.hexdigest()}")


ap = argparse.ArgumentParser()
sub = ap.add_subparsers(dest="cmd", required=True)
sv = sub.add_parser("serve")
sv.add_argument("--port", type=int, required=True)
sv.add_argument("--lifetime", type=float, default=900)
sd = sub.add_parser("send")
sd.add_argument("host")
sd.add_argument("port", type=int)
sd.add_argument("bytes", type=int)
sd.add_argument("--reverse", action="store_true")
args = ap.parse_args()
if args.cmd == "serve":
    serve(args.port, args.lifetime)
else:
    send(args.host, args.port, args.bytes, args.reverse)
