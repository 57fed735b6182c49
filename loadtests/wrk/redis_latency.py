#!/usr/bin/env python3
"""Latency of a read answered by Redis vs one answered by the database, at a fixed rate.

One fresh database on the shared PostgreSQL with ITEMS items; two replicas on it, each with a
cache far smaller than the ids read (CAPACITY), so nearly every read misses the replica's own
level: replica DB without Redis (its misses read PostgreSQL), replica REDIS with it (warmed
first, so its misses are answered by Redis). oha sends RATE requests/s for DURATION to each in
turn, ROUNDS times (DB, REDIS, DB, REDIS, ...), ids uniform over [1000, 9999], with
coordinated-omission correction; prints p50/p99 per round and the medians, and checks where the
reads were answered (database reads and Redis hits per replica).

Usage: loadtests/wrk/redis_latency.py [--rate 2000] [--duration 10s] [--rounds 3]
Needs: target/release/data-api, oha (cargo install oha), PostgreSQL at 127.0.0.1:5432
(wal_level = logical), Redis at 127.0.0.1:6379 (keys under a prefix of this run, deleted).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet_reads import BIN, Replica, delete_keys, metric_sum, psql  # noqa: E402

ITEMS = 10000
CAPACITY = 16
URLS = "/data/[1-9][0-9]{3}"


def oha(port, rate, duration, urls=URLS, with_rps=False):
    """p50 and p99 in ms (and the throughput) of `duration` at `rate` req/s on `urls` (rate 0:
    as fast as 64 connections go)."""
    pace = ["-q", str(rate), "--latency-correction", "-c", "32"] if rate else ["-c", "64"]
    out = subprocess.run(
        ["oha", "--no-tui", "--output-format", "json", "-z", duration, *pace,
         "--rand-regex-url", f"http://127.0.0.1:{port}{urls}"],
        check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    pct = report["latencyPercentiles"]
    codes = report.get("statusCodeDistribution", {})
    if set(codes) - {"200"}:
        raise SystemExit(f"answers other than 200: {codes}")
    if with_rps:
        return pct["p50"] * 1000, pct["p99"] * 1000, report["summary"]["requestsPerSec"]
    return pct["p50"] * 1000, pct["p99"] * 1000


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=int, default=2000)
    p.add_argument("--duration", default="10s")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    db = f"dataapi_redis_latency_{os.getpid()}"
    prefix = f"redis-latency-{os.getpid()}:"
    psql(f"create database {db}")
    url = f"postgres://postgres@127.0.0.1:5432/{db}"
    replicas = []
    try:
        subprocess.run([BIN, "seed", "--database-url", url, "--items", str(ITEMS), "--quiet"],
                       check=True, capture_output=True)
        on_db = Replica(url, None, CAPACITY)
        on_redis = Replica(url, prefix, CAPACITY)
        replicas = [on_db, on_redis]
        for item in range(1000, 10000):
            on_redis.send("GET", f"/data/{item}")
        rows = {"database": [], "Redis": []}
        before = {r.port: (metric_sum(r.port, "db_client_reads_total"),
                           metric_sum(r.port, "cache_redis_lookups_total", 'result="hit"'),
                           metric_sum(r.port, "cache_gets_total"))
                  for r in replicas}
        for k in range(args.rounds):
            for name, r in (("database", on_db), ("Redis", on_redis)):
                p50, p99 = oha(r.port, args.rate, args.duration)
                rows[name].append((p50, p99))
                print(f"round {k + 1}: answered by {name:8}: p50 {p50:.3f} ms  p99 {p99:.3f} ms",
                      flush=True)
        for name, r in (("database", on_db), ("Redis", on_redis)):
            reads, hits, lookups = (metric_sum(r.port, "db_client_reads_total"),
                                    metric_sum(r.port, "cache_redis_lookups_total", 'result="hit"'),
                                    metric_sum(r.port, "cache_gets_total"))
            b = before[r.port]
            print(f"replica answering from {name}: {lookups - b[2]:.0f} lookups, "
                  f"{reads - b[0]:.0f} database reads, {hits - b[1]:.0f} Redis hits")
        med = {n: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v))
               for n, v in rows.items()}
        print(f"median p50: Redis {med['Redis'][0]:.3f} ms vs database {med['database'][0]:.3f} ms; "
              f"median p99: Redis {med['Redis'][1]:.3f} ms vs database {med['database'][1]:.3f} ms "
              f"({args.rate} req/s, {args.duration} x {args.rounds} rounds each)")
    finally:
        for r in replicas:
            r.stop()
        psql(f"drop database if exists {db} with (force)")
        delete_keys(prefix)


if __name__ == "__main__":
    sys.exit(main())
