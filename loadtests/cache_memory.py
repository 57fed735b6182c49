#!/usr/bin/env python3
"""Resident memory per cached item: for each (items, payload size), a fresh release service on
SQLite with room for every item, the items created over HTTP (a create does not fill the cache),
the resident set read, every item read once (filling the cache; the service's cache_entries gauge
confirms it), the resident set read again. The same run with the cache off measures what reading
costs without it (SQLite's page caches, allocator slack), which is subtracted. Prints one table
row per size: RSS growth per entry with and without the cache, the difference (what an entry
costs), the body bytes the cache reports (cache_size_bytes) and the overhead beyond the body.
Usage: loadtests/cache_memory.py [data-api binary] [items,...] [payload bytes,...]
e.g.   loadtests/cache_memory.py target/release/data-api 1000,10000,100000 1024,65000"""
import http.client, json, os, re, socket, subprocess, sys, tempfile, time

binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/data-api"
counts = [int(x) for x in (sys.argv[2] if len(sys.argv) > 2 else "1000,10000").split(",")]
sizes = [int(x) for x in (sys.argv[3] if len(sys.argv) > 3 else "1024,65000").split(",")]


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def rss_kib(pid):
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1))


def metric(conn, name):
    conn.request("GET", "/metrics"); text = conn.getresponse().read().decode()
    m = re.search(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def run(items, size, cache):
    work = tempfile.mkdtemp()
    port = free_port()
    server = subprocess.Popen([binary, "serve", "--database-url", f"sqlite://{work}/m.db?mode=rwc",
                               "--bind", f"127.0.0.1:{port}", "--access-log", "false",
                               "--cache-capacity", str(items + 100 if cache else 0), "--cache-ttl", "1h",
                               # Gigabytes of writes meet the kernel's dirty-page throttling: a
                               # write may wait seconds for the disk, which is not what this measures.
                               "--db-acquire-timeout", "60s",
                               "--body-limit", str(size + 4096)],
                              stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    try:
        for _ in range(200):
            try:
                c = http.client.HTTPConnection("127.0.0.1", port); c.request("GET", "/health/ready")
                if c.getresponse().status == 200: break
            except OSError:
                time.sleep(0.05)
        conn = http.client.HTTPConnection("127.0.0.1", port)
        body = json.dumps({"name": "m", "payload": {"blob": "x" * size}})
        ids = []
        for _ in range(items):
            for _attempt in range(30):  # a 503 (the writer busy past its wait) asks for a retry
                conn.request("POST", "/data", body, {"content-type": "application/json"})
                r = conn.getresponse(); r.read()
                if r.status != 503: break
                time.sleep(float(r.getheader("retry-after") or 1))
            assert r.status == 201, r.status
            ids.append(int(r.getheader("location").rsplit("/", 1)[1]))
        time.sleep(2)  # let the allocator settle after the writes
        before = rss_kib(server.pid)
        for i in ids:
            conn.request("GET", f"/data/{i}"); r = conn.getresponse(); r.read(); assert r.status == 200
        deadline = time.time() + 30
        while cache and metric(conn, "cache_entries") < items and time.time() < deadline:
            time.sleep(0.2)
        entries, held = metric(conn, "cache_entries"), metric(conn, "cache_size_bytes")
        after = rss_kib(server.pid)
        if cache:
            assert entries == items, f"{entries} of {items} cached"
        return (after - before) * 1024 / items, held / max(entries, 1), after / 1024
    finally:
        server.terminate(); server.wait(timeout=20)
        subprocess.run(["rm", "-rf", work])


print("| items | payload bytes | RSS growth per item read, cache on / off | per cached entry | body bytes | beyond the body | RSS, cache full |")
print("|---:|---:|---:|---:|---:|---:|---:|")
for size in sizes:
    for items in counts:
        on, body, rss = run(items, size, True)
        off, _, _ = run(items, size, False)
        entry = on - off
        print(f"| {items:,} | {size:,} | {on:,.0f} / {off:,.0f} B | {entry:,.0f} B | {body:,.0f} B "
              f"| {entry - body:,.0f} B | {rss:,.1f} MiB |", flush=True)
