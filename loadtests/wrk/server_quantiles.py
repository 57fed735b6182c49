#!/usr/bin/env python3
"""Quantiles from a /metrics scrape (histogram buckets, linear interpolation, as Prometheus'
histogram_quantile does).
Usage: server_quantiles.py URL [route] [status]   server-side GET latency of a route, e.g.
           http://127.0.0.1:8000/metrics '/data/{id}' 200
       server_quantiles.py URL --histogram NAME [--match 'label="value"' ...]   any histogram"""
import argparse, urllib.request

parser = argparse.ArgumentParser()
parser.add_argument("url")
parser.add_argument("route", nargs="?", default="/data/{id}")
parser.add_argument("status", nargs="?", default="200")
parser.add_argument("--histogram")
parser.add_argument("--match", action="append", default=[])
args = parser.parse_args()
if args.histogram:
    name, matches = args.histogram, args.match
    label = f"{name} {' '.join(matches)}".strip()
else:
    name = "http_server_request_duration_seconds"
    matches = [f'http_route="{args.route}"', f'http_response_status_code="{args.status}"', 'http_request_method="GET"']
    label = f"server-side GET {args.route} {args.status}"
text = urllib.request.urlopen(args.url).read().decode()
buckets = []
for line in text.splitlines():
    if line.startswith(f"{name}_bucket{{") and all(m in line for m in matches):
        le = line.split('le="')[1].split('"')[0]
        buckets.append((float("inf") if le == "+Inf" else float(le), float(line.rsplit(" ", 1)[1])))
buckets.sort()
total = buckets[-1][1] if buckets else 0
def q(p):
    rank, prev_le, prev_n = p * total, 0.0, 0.0
    for le, n in buckets:
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_n) / (n - prev_n) if n > prev_n else 0)
        prev_le, prev_n = le, n
    return float("nan")
print(f"{label}: n={total:.0f} p50={q(0.5)*1000:.3f} ms p99={q(0.99)*1000:.3f} ms p999={q(0.999)*1000:.3f} ms")
