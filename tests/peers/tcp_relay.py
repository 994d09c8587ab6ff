#!/usr/bin/env python3
"""Loopback TCP relay that records each direction of one or more connections.

Used to capture health-check test vectors from real peers (dcmtk's echoscu
against storescp, an HL7 MLLP exchange, an HTTP response): the client talks
to the relay, the relay talks to the real server, and the bytes seen in each
direction are written unchanged to files.

    tcp_relay.py --upstream 127.0.0.1:11112 --out /tmp/cap/echo [--count 1]

prints "PORT <n>" on stdout once listening, then for connection i writes
<out>.c2s.bin (client to server) and <out>.s2c.bin (server to client); with
--count > 1 the files are <out>.<i>.c2s.bin and so on. Only loopback is
accepted for both ends.
"""

import argparse
import socket
import sys
import threading


def pump(src, dst, sink):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            sink.write(data)
            sink.flush()
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def relay_one(client, upstream, prefix):
    server = socket.create_connection(upstream, timeout=30)
    with open(prefix + ".c2s.bin", "wb") as c2s, open(prefix + ".s2c.bin", "wb") as s2c:
        a = threading.Thread(target=pump, args=(client, server, c2s))
        b = threading.Thread(target=pump, args=(server, client, s2c))
        a.start()
        b.start()
        a.join(60)
        b.join(60)
    client.close()
    server.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--upstream", required=True, help="host:port of the real server (loopback)")
    ap.add_argument("--out", required=True, help="output file prefix")
    ap.add_argument("--count", type=int, default=1, help="connections to relay, then exit")
    args = ap.parse_args()
    host, port = args.upstream.rsplit(":", 1)
    if not host.startswith("127.") and host != "localhost":
        sys.exit("upstream must be on loopback")
    lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.bind(("127.0.0.1", 0))
    lst.listen(4)
    lst.settimeout(60)
    print("PORT", lst.getsockname()[1], flush=True)
    for i in range(args.count):
        client, _ = lst.accept()
        prefix = args.out if args.count == 1 else "%s.%d" % (args.out, i)
        relay_one(client, (host, int(port)), prefix)
    lst.close()


if __name__ == "__main__":
    main()
