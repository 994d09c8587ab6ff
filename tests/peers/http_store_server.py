#!/usr/bin/env python3
"""An XDS-like HTTP endpoint for the layer 7 tests (Python's http.server):
POST bodies are read whole and answered with
`<label> <sha256 of body> <length> <peer address>`; GET is answered with
`<label> <peer address>`. With --cert/--key it serves HTTPS (the test then
checks the certificate the client saw is this server's). Listens on all
addresses of its namespace on --port; bounded by --lifetime seconds."""

import argparse
import hashlib
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--label", required=True)
ap.add_argument("--cert")
ap.add_argument("--key")
ap.add_argument("--lifetime", type=float, default=900.0)
args = ap.parse_args()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, text):
        body = (text + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply("%s %s" % (args.label, self.client_address[0]))

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        h = hashlib.sha256()
        left = n
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        self.reply("%s %s %d %s" % (args.label, h.hexdigest(), n - left, self.client_address[0]))

    def log_message(self, *a):
        pass


server = ThreadingHTTPServer(("0.0.0.0", args.port), Handler)
if args.cert:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
threading.Timer(args.lifetime, server.shutdown).start()
print("PORT %d" % args.port, flush=True)
server.serve_forever()
