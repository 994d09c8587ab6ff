#!/usr/bin/env python3
"""Send one HL7 message (segments separated by CR or LF in --file) framed in
MLLP to a loopback server and write the raw reply bytes to --out."""
import argparse
import socket

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--file", required=True)
ap.add_argument("--out", required=True)
args = ap.parse_args()
text = open(args.file, "rb").read().replace(b"\r\n", b"\r").replace(b"\n", b"\r")
if not text.endswith(b"\r"):
    text += b"\r"
s = socket.create_connection(("127.0.0.1", args.port), timeout=10)
s.sendall(b"\x0b" + text + b"\x1c\x0d")
reply = b""
while not reply.endswith(b"\x1c\x0d"):
    data = s.recv(4096)
    if not data:
        break
    reply += data
s.close()
open(args.out, "wb").write(reply)
