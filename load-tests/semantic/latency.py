#!/usr/bin/env python3
"""Closed-loop latency of one kind of request through clawgate, on one keep-alive connection.

    latency.py URL KIND COUNT

KIND: `proxied` (a route without cache), `exact` (the same question every time), `paraphrase`
(a paraphrase of a question asked once before: a semantic hit every time), `miss` (a new question
every time: embedded, looked up, sent to the backend, stored). Prints one line: kind, count,
p50/p90/p99/mean in ms, and how many answers carried each X-Cache value.
"""
import http.client
import json
import statistics
import sys
import time
import urllib.parse

SEED = "How do I reset my password?"
PARAPHRASE = "What is the way to reset my password?"
TOPICS = ["invoice", "refund", "ticket", "deploy", "budget", "contract", "payroll", "incident"]


def body(question):
    return json.dumps({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are the operations assistant."},
            {"role": "user", "content": question},
        ],
    })


def main():
    url, kind, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    headers = {"content-type": "application/json"}

    def ask(question):
        conn.request("POST", u.path, body=body(question), headers=headers)
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("x-cache", "-")

    status, _ = ask(SEED)  # the entry the others find
    if status != 200:
        sys.exit(f"{url}: {status}")
    for _ in range(20):  # warm-up
        ask(SEED if kind != "paraphrase" else PARAPHRASE)
    times, caches = [], {}
    for i in range(count):
        if kind == "miss":
            q = f"Summarise {TOPICS[i % len(TOPICS)]} record {i * 7919 % 100000} for the quarter"
        elif kind == "paraphrase":
            q = PARAPHRASE
        else:
            q = SEED
        t = time.perf_counter()
        status, cache = ask(q)
        times.append((time.perf_counter() - t) * 1000)
        caches[cache] = caches.get(cache, 0) + 1
        if status != 200:
            sys.exit(f"{url}: {status} on request {i}")
    times.sort()
    pct = lambda p: times[min(len(times) - 1, int(p * len(times)))]
    print(f"{kind:10} n={count:5}  p50 {pct(0.5):7.3f}  p90 {pct(0.9):7.3f}  p99 {pct(0.99):7.3f}"
          f"  mean {statistics.fmean(times):7.3f} ms  x-cache {caches}")


if __name__ == "__main__":
    main()
