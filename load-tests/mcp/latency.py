#!/usr/bin/env python3
"""Closed-loop latency of MCP `tools/call` requests, each target on one keep-alive connection.

    latency.py COUNT [-H name:value]... LABEL=URL...

Raw JSON-RPC over HTTP with `http.client` (no SDK in the measured loop). For each target:
`initialize`, then `notifications/initialized`, then 20 warm-up calls; then COUNT timed calls
of `tools/call search_web` per target, one request at a time, the targets taking turns call by
call (so a noisy moment of the machine falls on all of them alike), each in the session its
server opened (`Mcp-Session-Id`). The server must answer POSTs with JSON (`server.py --json`).
Every answer is read and checked (HTTP 200, a JSON-RPC result with the call's id, no error).
Prints one line per target: label, count, p50/p90/p99/mean in ms.
"""
import http.client
import json
import socket
import statistics
import sys
import time
import urllib.parse

PROTOCOL = "2025-06-18"


class Target:
    def __init__(self, label, url, extra):
        self.label, self.url = label, url
        u = urllib.parse.urlsplit(url)
        self.path = u.path
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        self.conn.connect()
        # Without it a request's second segment could wait for the peer's delayed ACK.
        self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.headers = {
            "content-type": "application/json",
            "accept": "application/json, text/event-stream",
            **extra,
        }
        self.times = []
        self.open()

    def post(self, message):
        self.conn.request("POST", self.path, body=json.dumps(message), headers=self.headers)
        r = self.conn.getresponse()
        return r, r.read()

    def open(self):
        r, body = self.post({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {"protocolVersion": PROTOCOL, "capabilities": {},
                       "clientInfo": {"name": "clawgate-bench", "version": "1"}},
        })
        if r.status != 200:
            sys.exit(f"{self.url}: initialize: HTTP {r.status}: {body[:300]!r}")
        init = json.loads(body)
        if "result" not in init:
            sys.exit(f"{self.url}: initialize: {init}")
        session = r.getheader("mcp-session-id")
        if session:
            self.headers["mcp-session-id"] = session
        self.headers["mcp-protocol-version"] = init["result"].get("protocolVersion", PROTOCOL)
        r, body = self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        if r.status not in (200, 202):
            sys.exit(f"{self.url}: notifications/initialized: HTTP {r.status}: {body[:300]!r}")

    def call(self, i):
        r, body = self.post({
            "jsonrpc": "2.0", "id": i, "method": "tools/call",
            "params": {"name": "search_web", "arguments": {"query": "pingora"}},
        })
        if r.status != 200:
            sys.exit(f"{self.url}: tools/call {i}: HTTP {r.status}: {body[:300]!r}")
        answer = json.loads(body)
        if answer.get("id") != i or "result" not in answer or answer["result"].get("isError"):
            sys.exit(f"{self.url}: tools/call {i}: {answer}")

    def report(self):
        times = sorted(self.times)
        pct = lambda p: times[min(len(times) - 1, int(p * len(times)))]
        print(f"{self.label:8} n={len(times):5}  p50 {pct(0.5):7.3f}  p90 {pct(0.9):7.3f}"
              f"  p99 {pct(0.99):7.3f}  mean {statistics.fmean(times):7.3f} ms", flush=True)


def main():
    args = sys.argv[1:]
    if not args or not args[0].isdigit():
        sys.exit(__doc__)
    count, args = int(args[0]), args[1:]
    extra, targets = {}, []
    while args:
        if args[0] == "-H" and len(args) > 1 and ":" in args[1]:
            k, v = args[1].split(":", 1)
            extra[k.strip()] = v.strip()
            args = args[2:]
        elif "=" in args[0]:
            targets.append(args[0].split("=", 1))
            args = args[1:]
        else:
            sys.exit(f"bad argument {args[0]!r}\n{__doc__}")
    if not targets:
        sys.exit(__doc__)
    targets = [Target(label, url, extra) for label, url in targets]
    for i in range(1, 21):  # warm-up
        for t in targets:
            t.call(i)
    for i in range(21, 21 + count):
        for t in targets:
            start = time.perf_counter()
            t.call(i)
            t.times.append((time.perf_counter() - start) * 1000)
    for t in targets:
        t.report()


if __name__ == "__main__":
    main()
