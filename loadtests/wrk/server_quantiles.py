#!/usr/bin/env python3
"""Server-side latency quantiles from a /metrics scrape (histogram buckets, linear interpolation).
Usage: server_quantiles.py URL [route] [status] — e.g. http://127.0.0.1:8000/metrics '/data/{id}' 200"""
import sys, urllib.request

url = sys.argv[1]
route = sys.argv[2] if len(sys.argv) > 2 else "/data/{id}"
status = sys.argv[3] if len(sys.argv) > 3 else "200"
text = urllib.request.urlopen(url).read().decode()
buckets = []
for line in text.splitlines():
    if line.startswith("http_server_request_duration_seconds_bucket{") and f'http_route="{route}"' in line \
            and f'http_response_status_code="{status}"' in line and 'http_request_method="GET"' in line:
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
print(f"server-side GET {route} {status}: n={total:.0f} p50={q(0.5)*1000:.3f} ms p99={q(0.99)*1000:.3f} ms p999={q(0.999)*1000:.3f} ms")
