#!/usr/bin/env python3
"""Reads through Varnish (the shipped VCL) vs straight to the service, and purge latency.

A fresh database on the shared PostgreSQL with ITEMS items; two replicas with --edge-max-age
purging a throwaway varnishd in front of both (round robin). Then:
1. Reads at a fixed rate (oha, coordinated-omission corrected), ids uniform over [1000, 1999]
   after a warm pass, ROUNDS alternating rounds: through Varnish, straight to replica 0 (its
   own cache warm too). Prints p50/p99 and throughput per round and the medians.
   Then the most each takes (64 connections, no pacing), alternating.
2. Purge latency, commit to Varnish: PURGES times, an item is read through Varnish (cached),
   updated by a psql session (outside the service: the purge comes from the feed), and Varnish
   is polled until it answers the new version. Prints p50/p99 of commit-to-new-answer.

Usage: loadtests/wrk/edge.py [--rate 4000] [--duration 10s] [--rounds 3] [--purges 200]
Needs: target/release/data-api, oha, varnishd with varnish-modules, PostgreSQL at
127.0.0.1:5432 (wal_level = logical).
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fleet_reads import BIN, free_port, metric_sum, psql  # noqa: E402
from redis_latency import oha  # noqa: E402

ITEMS = 2000
URLS = "/data/1[0-9]{3}"
VCL_DIR = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../varnish"))


def start_replica(url, edge_port):
    port = free_port()
    proc = subprocess.Popen(
        [BIN, "--database-url", url, "--bind", f"127.0.0.1:{port}", "--access-log", "false",
         "--cache-capacity", "10000", "--db-max-connections", "6",
         "--edge-max-age", "300s", "--edge-purge-url", f"http://127.0.0.1:{edge_port}/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            if metric_sum(port, "cache_lease_held") == 1.0:
                return port, proc
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit("replica did not get its lease")


def start_varnish(work, port, backends):
    site = "import directors;\nacl purgers { \"127.0.0.1\"; }\n"
    site += "".join(f'backend r{k} {{ .host = "127.0.0.1"; .port = "{p}"; }}\n'
                    for k, p in enumerate(backends))
    site += "sub vcl_init {\n  new replicas = directors.round_robin();\n"
    site += "".join(f"  replicas.add_backend(r{k});\n" for k in range(len(backends)))
    site += "}\nsub data_api_backend { set req.backend_hint = replicas.backend(); }\n"
    with open(os.path.join(work, "site.vcl"), "w") as f:
        f.write(site)
    # varnishd compiles VCL as its unprivileged user: the directory must be readable to it.
    os.chmod(work, 0o755)
    os.chmod(os.path.join(work, "site.vcl"), 0o644)
    proc = subprocess.Popen(
        ["varnishd", "-F", "-n", os.path.join(work, "n"), "-a", f"127.0.0.1:{port}",
         "-p", f"vcl_path={work}:{VCL_DIR}", "-f", os.path.join(VCL_DIR, "data-api.vcl"),
         "-s", "malloc,256m"], stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "varnishd.log"), "w"))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/health/live")
            return proc
        except OSError:
            time.sleep(0.1)
    raise SystemExit("varnishd did not start: " + open(os.path.join(work, "varnishd.log")).read())


def version(conn, item):
    conn.request("GET", f"/data/{item}")
    resp = conn.getresponse()
    body = resp.read()
    return json.loads(body)["version"] if resp.status == 200 else None


def purge_latency(db, edge_port, purges):
    session = subprocess.Popen(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAt", db],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    conn = http.client.HTTPConnection("127.0.0.1", edge_port, timeout=5)
    delays = []
    for k in range(purges):
        item = 1000 + k
        before = version(conn, item)
        version(conn, item)  # now a hit
        session.stdin.write(f"UPDATE data_items SET name = 'p{k}', version = version + 1 "
                            f"WHERE id = {item};\n\\echo committed\n")
        session.stdin.flush()
        while session.stdout.readline().strip() != "committed":
            pass
        committed = time.perf_counter()
        while version(conn, item) == before:
            if time.perf_counter() - committed > 5:
                raise SystemExit(f"item {item}: not purged within 5 s")
        delays.append((time.perf_counter() - committed) * 1000)
    session.stdin.close()
    session.wait()
    delays.sort()
    return delays[len(delays) // 2], delays[int(len(delays) * 0.99) - 1]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=int, default=4000)
    p.add_argument("--duration", default="10s")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--purges", type=int, default=200)
    args = p.parse_args()
    db = f"dataapi_edge_{os.getpid()}"
    psql(f"create database {db}")
    url = f"postgres://postgres@127.0.0.1:5432/{db}"
    procs = []
    with tempfile.TemporaryDirectory(prefix="dataapi-edge-") as work:
        try:
            subprocess.run([BIN, "seed", "--database-url", url, "--items", str(ITEMS), "--quiet"],
                           check=True, capture_output=True)
            edge_port = free_port()
            replicas = [start_replica(url, edge_port) for _ in range(2)]
            procs += [p for _, p in replicas]
            procs.append(start_varnish(work, edge_port, [port for port, _ in replicas]))
            direct = replicas[0][0]
            for port in (edge_port, direct, replicas[1][0]):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                for item in range(1000, 2000):
                    version(conn, item)
            rows = {"Varnish": [], "service": []}
            for k in range(args.rounds):
                for name, port in (("Varnish", edge_port), ("service", direct)):
                    p50, p99, rps = oha(port, args.rate, args.duration, URLS, with_rps=True)
                    rows[name].append((p50, p99, rps))
                    print(f"round {k + 1}: {name:8}: p50 {p50:.3f} ms  p99 {p99:.3f} ms  "
                          f"{rps:.0f} req/s", flush=True)
            med = {n: [statistics.median(x[i] for x in v) for i in range(3)]
                   for n, v in rows.items()}
            print(f"median at {args.rate} req/s: through Varnish p50 {med['Varnish'][0]:.3f} ms "
                  f"p99 {med['Varnish'][1]:.3f} ms; straight to the service p50 "
                  f"{med['service'][0]:.3f} ms p99 {med['service'][1]:.3f} ms")
            most = {"Varnish": [], "service": []}
            for k in range(args.rounds):
                for name, port in (("Varnish", edge_port), ("service", direct)):
                    most[name].append(oha(port, 0, "5s", URLS, with_rps=True)[2])
            print(f"most throughput (64 connections, 5 s x {args.rounds}, medians): through Varnish "
                  f"{statistics.median(most['Varnish']):.0f} req/s, straight to the service "
                  f"{statistics.median(most['service']):.0f} req/s")
            p50, p99 = purge_latency(db, edge_port, args.purges)
            print(f"purge latency, psql commit to Varnish answering the new version "
                  f"({args.purges} writes): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=30)
            psql(f"drop database if exists {db} with (force)")


if __name__ == "__main__":
    sys.exit(main())
