#!/usr/bin/env python3
"""Send one HTTP/1.1 GET with Connection: close to a loopback server and write
the raw response bytes (status line, headers, body) to --out."""
import argparse
import socket

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--path", default="/")
ap.add_argument("--out", required=True)
args = ap.parse_args()
s = socket.create_connection(("127.0.0.1", args.port), timeout=10)
s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % args.path).encode())
reply = b""
while True:
    data = s.recv(4096)
    if not data:
        break
    reply += data
s.close()
open(args.out, "wb").write(reply)
