#!/usr/bin/env python3
"""Half-close and reset through a virtual service, with plain sockets.

server --port P: for each connection, reads until the client's FIN, then
  sends `got <n> bytes` and closes; a connection reset instead is logged as
  `reset`; a connection whose first bytes are `RESET` is aborted by the
  server (SO_LINGER 0: a RST). One line per connection on stdout:
  `halfclose <n>`, `reset` or `aborted`.
client HOST PORT halfclose: sends 100000 bytes, shuts down its sending
  side, then reads the server's answer to the end; prints it.
client HOST PORT reset: sends some bytes, waits a second (so the server's
  side of a spliced connection exists: before that, a client's reset only
  cancels the connect), then aborts (SO_LINGER 0), which sends a RST;
  prints `aborted`.
client HOST PORT serverreset: sends `RESET`, then reads; the server's reset
  must reach it: prints `reset by server`, or fails on an orderly end.
Bounded by timeouts on every socket."""

import socket
import struct
import sys
import threading
import time


def serve(port):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port))
    ls.listen(16)
    ls.settimeout(900)
    print("PORT %d" % port, flush=True)

    def one(c):
        c.settimeout(60)
        n = 0
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                if n == 0 and d.startswith(b"RESET"):
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    c.close()
                    print("aborted", flush=True)
                    return
                n += len(d)
            c.sendall(b"got %d bytes" % n)
            c.close()
            print("halfclose %d" % n, flush=True)
        except ConnectionResetError:
            print("reset", flush=True)

    while True:
        c, _ = ls.accept()
        threading.Thread(target=one, args=(c,), daemon=True).start()


def client(host, port, mode):
    s = socket.create_connection((host, port), timeout=30)
    if mode == "halfclose":
        s.sendall(b"x" * 100000)
        s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            d = s.recv(4096)
            if not d:
                break
            out += d
        print(out.decode())
    elif mode == "serverreset":
        s.sendall(b"RESET")
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            print("reset by server")
            return
        sys.exit("the server's reset arrived as an orderly end")
    else:
        s.sendall(b"y" * 1000)
        time.sleep(1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        print("aborted")


if sys.argv[1] == "server":
    serve(int(sys.argv[3]))
else:
    client(sys.argv[2], int(sys.argv[3]), sys.argv[4])
