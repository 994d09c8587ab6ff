#!/usr/bin/env python3
"""Streams --count HL7 v2 ADT^A08 messages over one MLLP connection with the
`hl7` library's MLLPClient, each waiting for its ACK, --interval seconds
apart. Prints 'acked N/M' and exits 1 unless every message was acknowledged
(AA or CA) with its own control ID."""
import argparse
import socket
import sys
import time

import hl7
from hl7.client import MLLPClient

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--host", required=True)
ap.add_argument("--port", type=int, default=2575)
ap.add_argument("--count", type=int, default=100)
ap.add_argument("--interval", type=float, default=0.1)
ap.add_argument("--timeout", type=float, default=20.0)
args = ap.parse_args()
socket.setdefaulttimeout(args.timeout)

acked = 0
with MLLPClient(args.host, args.port) as client:
    for i in range(args.count):
        control = f"LBSTREAM{i:06d}"
        message = (
            f"MSH|^~\\&|MODALITY|IMAGING|RIS|HOSPITAL|20260101120000||ADT^A08|{control}|P|2.5\r"
            f"EVN|A08|20260101120000\r"
            f"PID|1||{100000 + i}^^^HOSPITAL^MR||DOE^JOHN^{i}||19700101|M\r"
        )
        reply = client.send_message(message)
        if isinstance(reply, bytes):
            reply = reply.decode("utf-8", "replace")
        ack = hl7.parse(reply.strip("\x0b\x1c\r\n"))
        msa = ack.segment("MSA")
        code, ref = str(msa[1]), str(msa[2])
        if code not in ("AA", "CA") or ref != control:
            print(f"message {i}: ACK {code} for {ref}, expected {control}", file=sys.stderr)
            break
        acked += 1
        time.sleep(args.interval)
print(f"acked {acked}/{args.count}")
sys.exit(0 if acked == args.count else 1)
