#!/usr/bin/env python3
"""Counting reverse proxy for the sandbox's controller simulator (testbed-sim).

The benchmark counts API calls per command from the servers' own counters: the
kube-apiserver's `apiserver_request_total` and the AWS emulator's
`/_testbed/requests`. The simulator talks to both while commands run (it polls
the API server every 300 ms, as the same user as karpctl, and the emulator's
nodegroups every second). So the benchmark points the simulator at two of these
proxies and subtracts what they counted, leaving what karpctl (or the by-hand
script) sent.

  --mode kube   in front of the API server (TLS upstream, --ca): counts each request
                under the labels apiserver_request_total uses: verb (GET, LIST, WATCH,
                POST, PUT, PATCH, APPLY, DELETE, DELETECOLLECTION), group, resource,
                subresource, dry run. A request the API server answers with its generic
                "404 page not found" (no handler for the path: a CRD's group before the
                CRD exists) is not in apiserver_request_total and is kept apart.
  --mode aws    in front of the AWS emulator (plain HTTP): counts "service:Operation"
                for the EKS REST calls the simulator makes (ListNodegroups,
                DescribeNodegroup); anything else as "unknown:METHOD path".

Listens on plain HTTP on 127.0.0.1 and writes its port to --port-file.

Control (never forwarded):
  GET    /_kproxy/counts   {"counts": {label: n}, "total": n, "unrouted_404": {label: n}}
  DELETE /_kproxy/counts   zero the counters

usage: kproxy.py --mode kube|aws --upstream URL [--ca CA.crt] --port-file FILE
"""

import argparse
import http.client
import http.server
import json
import os
import re
import signal
import socket
import socketserver
import ssl
import threading
import urllib.parse
from collections import Counter

LOCK = threading.Lock()
COUNTS = Counter()
UNROUTED = Counter()
HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "host"}


def kube_label(method, raw_path, content_type):
    """The apiserver_request_total labels of a request, as one string."""
    url = urllib.parse.urlsplit(raw_path)
    q = urllib.parse.parse_qs(url.query)
    parts = [p for p in url.path.split("/") if p]
    dry = " dryRun" if "dryRun" in q else ""
    if parts[:1] == ["api"] and len(parts) >= 2:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, rest = parts[1], parts[3:]
    else:  # non-resource: discovery, /version, /openapi
        return f"{method} {url.path.lstrip('/')}{dry}"
    # As the API server's RequestInfoFactory: namespaces/NS/KIND/... is KIND in NS, but
    # namespaces/NS/status and namespaces/NS/finalize are subresources of the namespace.
    if len(rest) > 2 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        rest = rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) >= 2 else None
    sub = rest[2] if len(rest) >= 3 else ""
    verb = method
    if method == "GET" and name is None:
        verb = "WATCH" if q.get("watch", ["false"])[0] in ("true", "1") else "LIST"
    elif method == "PATCH" and (content_type or "").startswith("application/apply-patch"):
        verb = "APPLY"
    elif method == "DELETE" and name is None:
        verb = "DELETECOLLECTION"
    return f"{verb} {group + '/' if group else ''}{resource}{'/' + sub if sub else ''}{dry}"


EKS_OPS = [
    ("GET", re.compile(r"^/clusters/[^/]+/node-groups$"), "eks:ListNodegroups"),
    ("GET", re.compile(r"^/clusters/[^/]+/node-groups/[^/]+$"), "eks:DescribeNodegroup"),
]


def aws_label(method, raw_path):
    path = urllib.parse.urlsplit(raw_path).path
    for m, rx, op in EKS_OPS:
        if m == method and rx.match(path):
            return op
    return f"unknown:{method} {path}"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in one write with TCP_NODELAY: two small writes would
    # meet Nagle's algorithm and the client's delayed ACK (40 ms per response).
    disable_nagle_algorithm = True
    wbufsize = -1
    mode = "kube"
    upstream = None
    ctx = None

    def log_message(self, *args):
        pass

    def _conn(self):
        c = getattr(self, "_upstream_conn", None)
        if c is None:
            u = urllib.parse.urlsplit(self.upstream)
            if u.scheme == "https":
                c = http.client.HTTPSConnection(u.hostname, u.port, context=self.ctx, timeout=120)
            else:
                c = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
            c.connect()
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._upstream_conn = c
        return c

    def _reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _forward(self):
        if self.path.startswith("/_kproxy/counts"):
            with LOCK:
                if self.command == "DELETE":
                    COUNTS.clear()
                    UNROUTED.clear()
                snap, unrouted = dict(sorted(COUNTS.items())), dict(sorted(UNROUTED.items()))
            return self._reply(200, {"counts": snap, "total": sum(snap.values()), "unrouted_404": unrouted})
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP}
        if self.mode == "kube":
            label = kube_label(self.command, self.path, self.headers.get("Content-Type"))
        else:
            label = aws_label(self.command, self.path)
        for attempt in (1, 2):
            conn = self._conn()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self._upstream_conn = None
                if attempt == 2:
                    return self._reply(502, {"error": "upstream failed"})
        unrouted = self.mode == "kube" and resp.status == 404 and data.startswith(b"404 page not found")
        with LOCK:
            (UNROUTED if unrouted else COUNTS)[label] += 1
        self.send_response(resp.status, resp.reason)
        for k, v in resp.getheaders():
            if k.lower() not in HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=("kube", "aws"), default="kube")
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--ca")
    ap.add_argument("--port-file", required=True)
    a = ap.parse_args()
    Handler.mode = a.mode
    Handler.upstream = a.upstream
    if a.ca:
        Handler.ctx = ssl.create_default_context(cafile=a.ca)
    srv = Server(("127.0.0.1", 0), Handler)
    with open(a.port_file + ".tmp", "w") as f:
        f.write(str(srv.server_address[1]))
    os.replace(a.port_file + ".tmp", a.port_file)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=srv.shutdown).start())
    srv.serve_forever()


if __name__ == "__main__":
    main()
