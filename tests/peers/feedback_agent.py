#!/usr/bin/env python3
"""A feedback agent for health-check tests, speaking the HAProxy agent-check
text protocol that Loadbalancer.org's feedback agent also speaks: on every
connection it writes one line -- the current contents of --reply-file
(e.g. "50%", "drain", "up ready 100%") -- and closes.

The test changes the file to change the answer. Bounded: it exits after
--lifetime seconds. Each connection is logged on stdout ("POLL <n> <reply>").
"""

import argparse
import asyncio


async def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="0.0.0.0")
    ap.add_argument("--port", type=int, default=3333)
    ap.add_argument("--reply-file", required=True)
    ap.add_argument("--lifetime", type=float, default=300.0)
    args = ap.parse_args()
    polls = {"n": 0}

    async def handle(reader, writer):
        polls["n"] += 1
        try:
            with open(args.reply_file) as f:
                reply = f.read().strip()
        except OSError:
            reply = ""
        print("POLL", polls["n"], reply, flush=True)
        writer.write(reply.encode("ascii", "replace") + b"\n")
        try:
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(handle, args.host, args.port)
    print("PORT", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        try:
            await asyncio.wait_for(server.serve_forever(), args.lifetime)
        except asyncio.TimeoutError:
            pass


if __name__ == "__main__":
    asyncio.run(main())
