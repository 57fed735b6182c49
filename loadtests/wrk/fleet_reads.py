#!/usr/bin/env python3
"""Database reads per 1,000 GETs as replicas are added, with and without the shared Redis level.

For each replica count (default 1, 3, 6) and each mode (Redis off, on): a fresh database on the
shared PostgreSQL with ITEMS items, that many data-api replicas on it (cache big enough for every
item, the commit-log feed), and REQUESTS requests round-robin over the replicas, WRITE_SHARE of
them PUTs, ids uniform; reads from the database are `db_client_reads_total` summed over the
replicas. Then, with Redis on and the largest fleet warm, one more replica is started cold and
sent COLD_GETS reads: the share of its misses Redis answered. Prints a table.

Usage: loadtests/wrk/fleet_reads.py [--replicas 1,3,6] [--items 500] [--requests 20000]
Needs: target/release/data-api, PostgreSQL at 127.0.0.1:5432 (wal_level = logical), Redis at
127.0.0.1:6379 (keys under a prefix of this run, deleted at the end).
"""
import argparse
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import time

BIN = "target/release/data-api"
REDIS = "redis://127.0.0.1:6379/"


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def psql(sql, db="postgres"):
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAt", "-c", sql, db],
                   check=True, capture_output=True)


def metric_sum(port, name, label=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            if label is None or label in line:
                total += float(line.rsplit(" ", 1)[1])
    return total


class Replica:
    def __init__(self, url, redis_prefix, capacity=10000):
        self.port = free_port()
        args = [BIN, "--database-url", url, "--bind", f"127.0.0.1:{self.port}",
                "--access-log", "false", "--cache-capacity", str(capacity),
                "--db-max-connections", "6", "--db-min-connections", "1"]
        if redis_prefix:
            args += ["--redis-url", REDIS, "--redis-prefix", redis_prefix]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env={**os.environ, "RUST_LOG": "warn"})
        self.conn = None
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if metric_sum(self.port, "cache_lease_held") == 1.0:
                    break
            except OSError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit(f"replica on {self.port} did not get its lease")
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def send(self, method, path, body=None):
        headers = {"content-type": "application/json"} if body else {}
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        resp.read()
        if resp.status not in (200, 201):
            raise SystemExit(f"{method} {path}: {resp.status}")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def run(n, redis_on, args, tag):
    db = f"dataapi_fleet_{tag}_{os.getpid()}"
    psql(f"create database {db}")
    url = f"postgres://postgres@127.0.0.1:5432/{db}"
    prefix = f"fleet-bench-{os.getpid()}-{tag}:" if redis_on else None
    replicas = []
    try:
        subprocess.run([BIN, "seed", "--database-url", url, "--items", str(args.items), "--quiet"],
                       check=True, capture_output=True)
        replicas = [Replica(url, prefix) for _ in range(n)]
        before = sum(metric_sum(r.port, "db_client_reads_total") for r in replicas)
        rng = random.Random(42)
        gets = 0
        for k in range(args.requests):
            r = replicas[k % n]
            item = rng.randint(1, args.items)
            if rng.random() < args.write_share:
                r.send("PUT", f"/data/{item}", json.dumps({"name": f"w{k}"}))
            else:
                r.send("GET", f"/data/{item}")
                gets += 1
        reads = sum(metric_sum(r.port, "db_client_reads_total") for r in replicas) - before
        cold = None
        if redis_on and args.cold_gets:
            c = Replica(url, prefix)
            replicas.append(c)
            for _ in range(args.cold_gets):
                c.send("GET", f"/data/{rng.randint(1, args.items)}")
            hits = metric_sum(c.port, "cache_redis_lookups_total", 'result="hit"')
            asked = metric_sum(c.port, "cache_redis_lookups_total")
            cold = (hits, asked)
        return reads * 1000 / gets, cold
    finally:
        for r in replicas:
            r.stop()
        psql(f"drop database if exists {db} with (force)")
        if prefix:
            delete_keys(prefix)


def delete_keys(prefix):
    """Deletes this run's keys from the shared Redis."""
    keys = subprocess.run(["redis-cli", "--scan", "--pattern", f"{prefix}*"],
                          capture_output=True, text=True).stdout.split()
    for i in range(0, len(keys), 500):
        subprocess.run(["redis-cli", "del", *keys[i:i + 500]], capture_output=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--replicas", default="1,3,6")
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--requests", type=int, default=20000)
    p.add_argument("--write-share", type=float, default=0.05)
    p.add_argument("--cold-gets", type=int, default=2000)
    args = p.parse_args()
    counts = [int(x) for x in args.replicas.split(",")]
    rows = {}
    for n in counts:
        for on in (False, True):
            tag = f"{n}{'r' if on else 'p'}"
            per_1000, cold = run(n, on, args, tag)
            rows[(n, on)] = per_1000
            extra = ""
            if cold:
                extra = f"   cold replica: {cold[0]:.0f} of {cold[1]:.0f} misses answered by Redis ({cold[0] / max(cold[1], 1):.1%})"
            print(f"{n} replica(s), Redis {'on ' if on else 'off'}: {per_1000:6.1f} database reads per 1,000 GETs{extra}", flush=True)
    base_off, base_on = rows[(counts[0], False)], rows[(counts[0], True)]
    last = counts[-1]
    print(f"{last} replicas over {counts[0]}: Redis off {rows[(last, False)] / base_off:.2f}x, "
          f"Redis on {rows[(last, True)] / base_on:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
