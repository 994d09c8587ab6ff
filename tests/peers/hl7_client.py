#!/usr/bin/env python3
"""HL7 v2 over MLLP through a virtual service, with the PyPI `hl7` library
(hl7.mllp.open_hl7_connection), checking every acknowledgement: MSA-1 must
be AA and MSA-2 the control ID sent. Modes (combinable, run in order):

    --long N [--idle S]   N messages on one connection (idle S seconds
                          after the first half)
    --short N             N connections of one message each
    --rate R              pace --short at R connections per second

Control IDs are <--tag><n>. Prints one summary line:
    sent=<n> aa=<n> errors=<n>
and each error on its own line before it; exits 1 on any error. Every
connection and wait is bounded by --timeout."""

import argparse
import asyncio
import sys
import time

import hl7
from hl7.mllp import open_hl7_connection

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("host")
ap.add_argument("port", type=int)
ap.add_argument("--tag", default="T")
ap.add_argument("--long", type=int, default=0)
ap.add_argument("--idle", type=float, default=0.0)
ap.add_argument("--short", type=int, default=0)
ap.add_argument("--rate", type=float, default=0.0)
ap.add_argument("--timeout", type=float, default=20.0)
args = ap.parse_args()

state = {"sent": 0, "aa": 0, "errors": []}


def message(cid):
    return hl7.parse(
        "MSH|^~\\&|MODALITY|RAD|RIS|HOSP|20240101120000||ADT^A01|%s|P|2.5\r"
        "PID|1||%s^^^HOSP||DOE^JANE||19700101|F\r" % (cid, cid)
    )


async def exchange(reader, writer, cid):
    writer.writemessage(message(cid))
    await writer.drain()
    state["sent"] += 1
    ack = await asyncio.wait_for(reader.readmessage(), args.timeout)
    msa = ack.segment("MSA")
    if str(msa[1]) == "AA" and str(msa[2]) == cid:
        state["aa"] += 1
    else:
        state["errors"].append("%s: ack %s" % (cid, str(ack).replace("\r", "|")))


async def long_connection():
    reader, writer = await asyncio.wait_for(
        open_hl7_connection(args.host, args.port), args.timeout
    )
    for i in range(args.long):
        if args.idle and i == args.long // 2:
            await asyncio.sleep(args.idle)
        await exchange(reader, writer, "%sL%d" % (args.tag, i))
    writer.close()


async def short_connection(i):
    cid = "%sS%d" % (args.tag, i)
    try:
        reader, writer = await asyncio.wait_for(
            open_hl7_connection(args.host, args.port), args.timeout
        )
        await exchange(reader, writer, cid)
        writer.close()
    except Exception as e:  # every failure is a finding
        state["errors"].append("%s: %r" % (cid, e))


async def main():
    if args.long:
        try:
            await long_connection()
        except Exception as e:
            state["errors"].append("long connection: %r" % (e,))
    start = time.monotonic()
    pending = []
    for i in range(args.short):
        if args.rate:
            await asyncio.sleep(max(0.0, start + i / args.rate - time.monotonic()))
            pending.append(asyncio.ensure_future(short_connection(i)))
        else:
            await short_connection(i)
    if pending:
        await asyncio.gather(*pending)


asyncio.run(main())
for e in state["errors"]:
    print("error", e)
print("sent=%d aa=%d errors=%d" % (state["sent"], state["aa"], len(state["errors"])))
sys.exit(1 if state["errors"] else 0)
