#!/usr/bin/env python3
"""A DICOM association that sits idle: associate, C-ECHO, wait --idle
seconds without sending anything, C-ECHO again on the same association,
release. Exits 0 only if both echoes succeed (status 0x0000) and the
release is clean. Built on pynetdicom."""

import argparse
import sys
import time

from pynetdicom import AE
from pynetdicom.sop_class import Verification

ap = argparse.ArgumentParser()
ap.add_argument("addr")
ap.add_argument("port", type=int)
ap.add_argument("--idle", type=float, default=130)
ap.add_argument("--called", default="PACS")
args = ap.parse_args()

ae = AE(ae_title="IDLECLIENT")
ae.add_requested_context(Verification)
# No timeouts on our side: the point is whether the network path keeps the
# idle association, not whether this client gives up.
ae.acse_timeout = 30
ae.dimse_timeout = 30
ae.network_timeout = None
assoc = ae.associate(args.addr, args.port, ae_title=args.called)
if not assoc.is_established:
    print("association not established", flush=True)
    sys.exit(2)
first = assoc.send_c_echo()
print(f"first echo status {getattr(first, 'Status', None)}", flush=True)
time.sleep(args.idle)
second = assoc.send_c_echo()
ok2 = bool(second) and getattr(second, "Status", None) == 0
print(f"second echo after {args.idle}s idle: status {getattr(second, 'Status', None)}", flush=True)
assoc.release()
ok = bool(first) and first.Status == 0 and ok2
sys.exit(0 if ok else 1)
