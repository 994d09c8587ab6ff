#!/usr/bin/env python3
"""An HL7 v2 interface engine for the layer 7 tests, built on the PyPI `hl7`
package (hl7.mllp, asyncio): every message received is parsed by the
library, stored once under --dir as <MSH-10>.hl7 (a second copy of the same
control ID is stored as <MSH-10>.dup<n>.hl7, so duplicates are visible), and
answered with the library's own ACK (AA). Each connection's peer address and
its end are logged on stdout:

    open <peer-ip> <peer-port>
    msg <peer-ip> <control-id>
    close <peer-ip> <peer-port> <eof|reset>

Listens on all addresses of the namespace it runs in (tests start it inside
a lab namespace) on --port. Bounded by --lifetime seconds."""

import argparse
import asyncio
import os
import sys

import hl7
from hl7.mllp import start_hl7_server


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--lifetime", type=float, default=900.0)
    args = ap.parse_args()

    def say(line):
        print(line, flush=True)

    async def handle(reader, writer):
        peer = writer.get_extra_info("peername") or ("?", 0)
        say("open %s %d" % (peer[0], peer[1]))
        how = "eof"
        try:
            while True:
                try:
                    msg = await reader.readmessage()
                except asyncio.IncompleteReadError:
                    break
                cid = str(msg.segment("MSH")[10])
                path = os.path.join(args.dir, cid + ".hl7")
                n = 0
                while os.path.exists(path):
                    n += 1
                    path = os.path.join(args.dir, "%s.dup%d.hl7" % (cid, n))
                with open(path, "w") as f:
                    f.write(str(msg))
                say("msg %s %s" % (peer[0], cid))
                writer.writemessage(msg.create_ack("AA"))
                await writer.drain()
        except (ConnectionResetError, BrokenPipeError):
            how = "reset"
        finally:
            say("close %s %d %s" % (peer[0], peer[1], how))
            writer.close()

    server = await start_hl7_server(handle, host="0.0.0.0", port=args.port)
    say("PORT %d" % args.port)
    async with server:
        try:
            await asyncio.wait_for(server.serve_forever(), timeout=args.lifetime)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
