#!/usr/bin/env python3
"""One HL7 v2 message over MLLP with the PyPI `hl7` library, to a receiving
application/facility (MSH-5/MSH-6) given on the command line, and the
acknowledgement as one line:
    ack=<MSA-1> cid=<MSA-2> err=<ERR segment or ->
Exits 0 when an acknowledgement arrived (whatever its code), 1 otherwise.
Bounded by --timeout."""

import argparse
import asyncio
import sys

import hl7
from hl7.mllp import open_hl7_connection

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("host")
ap.add_argument("port", type=int)
ap.add_argument("--app", required=True, help="MSH-5 receiving application")
ap.add_argument("--facility", default="HOSP", help="MSH-6")
ap.add_argument("--sender", default="MODALITY", help="MSH-3")
ap.add_argument("--cid", required=True, help="MSH-10 control ID")
ap.add_argument("--timeout", type=float, default=20.0)
args = ap.parse_args()


async def main():
    msg = hl7.parse(
        "MSH|^~\\&|%s|RAD|%s|%s|20240101120000||ADT^A01|%s|P|2.5\rPID|1||%s\r"
        % (args.sender, args.app, args.facility, args.cid, args.cid)
    )
    reader, writer = await asyncio.wait_for(
        open_hl7_connection(args.host, args.port), args.timeout
    )
    try:
        writer.writemessage(msg)
        await writer.drain()
        ack = await asyncio.wait_for(reader.readmessage(), args.timeout)
    finally:
        writer.close()
    msa = ack.segment("MSA")
    try:
        err = str(ack.segment("ERR"))
    except KeyError:
        err = "-"
    print("ack=%s cid=%s err=%s" % (msa[1], msa[2], err))


try:
    asyncio.run(main())
except Exception as e:  # bounded: any failure is reported, not hung on
    print("error: %r" % (e,))
    sys.exit(1)
