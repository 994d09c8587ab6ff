#!/usr/bin/env python3
"""A real HL7 v2 MLLP server for health-check tests, built on the PyPI `hl7`
package (hl7.mllp, asyncio).

Each message received is parsed by the library and answered with the
library's own ACK (Message.create_ack), whose MSA-2 is the received MSH-10
control ID. Flags make it misbehave the ways a health check must notice:

    --ack AE|AR|CA|CE|CR     acknowledgment code to send (default AA)
    --wrong-control-id       answer with a control ID that does not match
    --delay SECONDS          wait before answering
    --close                  close the connection without answering
    --garbage                answer with bytes that are not an MLLP block
    --text TEXT              MSA-3 text of the ACK
    --err TEXT               add an ERR segment whose user message (ERR-8) is TEXT

Bounded: it exits after --max-connections connections or --lifetime seconds,
whichever comes first. Listens on --host (loopback only, unless
--in-namespace says it runs in a test's own network namespace) and --port (0 picks
a free port); prints "PORT <n>" on stdout once listening. With --log DIR each
message received and each reply sent is written there raw (MLLP framing
included) as <n>.rx.bin / <n>.tx.bin.
"""

import argparse
import asyncio
import os
import sys

import hl7
from hl7.mllp import start_hl7_server

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ack", default="AA", choices=["AA", "AE", "AR", "CA", "CE", "CR"])
    ap.add_argument("--wrong-control-id", action="store_true")
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--close", action="store_true")
    ap.add_argument("--garbage", action="store_true")
    ap.add_argument("--text", default=None)
    ap.add_argument("--err", default=None)
    ap.add_argument("--max-connections", type=int, default=100)
    ap.add_argument("--lifetime", type=float, default=120.0)
    ap.add_argument("--log", default=None, help="directory for raw rx/tx blocks")
    ap.add_argument("--in-namespace", action="store_true",
                    help="runs inside a test network namespace: any --host is private there")
    args = ap.parse_args()
    if not args.in_namespace and not args.host.startswith("127.") and args.host != "localhost":
        sys.exit("listen address must be on loopback (or use --in-namespace)")

    done = asyncio.Event()
    state = {"connections": 0, "messages": 0}

    def log(kind, data):
        if args.log:
            name = os.path.join(args.log, "%d.%s.bin" % (state["messages"], kind))
            with open(name, "wb") as f:
                f.write(data)

    async def handle(reader, writer):
        state["connections"] += 1
        try:
            while not reader.at_eof():
                try:
                    message = await reader.readmessage()
                except asyncio.IncompleteReadError:
                    break
                state["messages"] += 1
                log("rx", START_BLOCK + str(message).encode("ascii") + END_BLOCK)
                if args.delay:
                    await asyncio.sleep(args.delay)
                if args.close:
                    break
                if args.garbage:
                    reply = b"HTTP/1.0 400 Bad Request\r\n\r\n"
                    writer.write(reply)
                else:
                    control_id = None
                    ack = message.create_ack(ack_code=args.ack, message_id=control_id)
                    if args.wrong_control_id:
                        ack.segment("MSA")[2] = "NOT-" + str(message.segment("MSH")[10])
                    if args.text is not None or args.err is not None:
                        text = str(ack)
                        if args.text is not None:
                            text = text.replace(
                                str(ack.segment("MSA")),
                                str(ack.segment("MSA")) + "|" + args.text,
                            )
                        if args.err is not None:
                            text = text.rstrip("\r") + "\rERR|||207^Application internal error^HL70357|E||||" + args.err
                        ack = hl7.parse(text)
                    writer.writemessage(ack)
                    reply = START_BLOCK + str(ack).encode("ascii") + END_BLOCK
                log("tx", reply)
                await writer.drain()
        except Exception as e:  # a broken peer must not stop the server
            print("connection error:", e, file=sys.stderr, flush=True)
        finally:
            writer.close()
            if state["connections"] >= args.max_connections:
                done.set()

    server = await start_hl7_server(handle, args.host, args.port)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        try:
            await asyncio.wait_for(done.wait(), args.lifetime)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
