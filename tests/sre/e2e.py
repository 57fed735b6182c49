#!/usr/bin/env python3
"""End to end with a real Prometheus: the release service on 127.0.0.1, Prometheus with the repo's
prometheus.yml (only the targets rewritten) and rules, a short goose load during which /dashboard's
request rate and p99 are compared with Prometheus' over the same window, then every panel query of
the Grafana dashboard (template variables substituted) and every recording rule must return data.
Usage: e2e.py DATA_API_BIN LOADTESTS_BIN"""
import http.server, json, os, shutil, socket, subprocess, sys, tempfile, threading, time, urllib.parse, urllib.request

bin_api, bin_load = sys.argv[1], sys.argv[2]
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()

def wait(what, check, seconds=60):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    sys.exit(f"timed out waiting for {what}")

def query(prom, expr):
    body = json.loads(get(f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})))
    if body.get("status") != "success":
        raise RuntimeError(body)
    return body["data"]["result"]

work = tempfile.mkdtemp()
procs = []
# The shared Redis level, as the compose file runs it, where the run has a Redis (.ci/run sets
# TEST_REDIS_URL); its keys go under a prefix of this run's, deleted at the end.
redis_url = os.environ.get("TEST_REDIS_URL")
redis_prefix = f"sre-e2e-{os.getpid()}:"
try:
    api, prom = free_port(), free_port()
    db = f"sqlite://{work}/e2e.db?mode=rwc"
    subprocess.run([bin_api, "seed", "--database-url", db, "--items", "2000", "--quiet"], check=True, stdout=subprocess.DEVNULL)
    redis_flags = ["--redis-url", redis_url, "--redis-prefix", redis_prefix] if redis_url else []
    # Edge mode, purging a stand-in that accepts every purge (tests/api/edge.rs runs Varnish),
    # so the Edge panels are queried against real series.
    class Purges(http.server.BaseHTTPRequestHandler):
        def do_PURGE(self):
            self.send_response(200); self.end_headers()
        def log_message(self, *args):
            pass
    purge_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Purges)
    threading.Thread(target=purge_server.serve_forever, daemon=True).start()
    edge_flags = ["--edge-max-age", "60s", "--edge-purge-url", f"http://127.0.0.1:{purge_server.server_address[1]}/"]
    if not redis_url:
        print("SKIPPED the Redis panels: no TEST_REDIS_URL")
    procs.append(subprocess.Popen([bin_api, "--database-url", db, "--bind", f"127.0.0.1:{api}", "--access-log", "false", *redis_flags, *edge_flags],
                                  stdout=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"}))
    wait("the service", lambda: "ok" in get(f"http://127.0.0.1:{api}/health/ready"))

    config = open(os.path.join(root, "prometheus.yml")).read()
    replicas = 'dns_sd_configs:\n      - names: ["api"]\n        type: A\n        port: 8000'
    assert replicas in config, "prometheus.yml's data-api job changed: update this rewrite"
    config = config.replace(replicas, f'static_configs:\n      - targets: ["127.0.0.1:{api}"]')
    config = config.replace('"localhost:9090"', f'"127.0.0.1:{prom}"')
    open(os.path.join(work, "prometheus.yml"), "w").write(config)
    shutil.copy(os.path.join(root, "prometheus.rules.yml"), work)
    procs.append(subprocess.Popen(["prometheus", f"--config.file={work}/prometheus.yml", f"--storage.tsdb.path={work}/tsdb",
                                   f"--web.listen-address=127.0.0.1:{prom}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    wait("Prometheus to scrape the service", lambda: any(r["value"][1] == "1" for r in query(prom, 'up{job="data-api"}')), 90)

    print("driving goose load for 40 s")
    load = subprocess.Popen([bin_load, "--host", f"http://127.0.0.1:{api}", "--scenarios", "mixed,write,readcold,lifecycle",
                             "-u", "4", "-r", "4", "-t", "40s", "-q", "--no-print-metrics"],
                            env={**os.environ, "LOADTEST_MAX_ID": "2000"}, stdout=subprocess.DEVNULL)
    procs.append(load)
    # /dashboard against Prometheus, over the same 30 s of steady load: the request rate, and the
    # p99 from the same buckets. Prometheus extrapolates rate() to the window's edges and its
    # newest sample is up to one scrape (5 s) old; the dashboard reads every second. Under a steady
    # load both see the same traffic, so they must agree within 15 % (rate) and 25 % (p99).
    time.sleep(34)
    dash = json.loads(get(f"http://127.0.0.1:{api}/dashboard/data?range=30"))
    tiles = {t["title"]: t["value"] for t in dash["tiles"]}
    prom_rate = float(query(prom, 'sum(rate(http_server_request_duration_seconds_count{job="data-api"}[30s]))')[0]["value"][1])
    prom_p99 = float(query(prom, 'histogram_quantile(0.99, sum by (le) (rate(http_server_request_duration_seconds_bucket{job="data-api"}[30s])))')[0]["value"][1])
    agree = [("request rate", tiles["Request rate"], prom_rate, 0.15), ("p99", tiles["Latency p99"], prom_p99, 0.25)]
    for what, ours, theirs, tolerance in agree:
        print(f"dashboard vs Prometheus over 30 s: {what} {ours:.6g} vs {theirs:.6g} ({ours / theirs - 1:+.1%}, tolerance {tolerance:.0%})")
        if abs(ours / theirs - 1) > tolerance:
            sys.exit(f"/dashboard's {what} disagrees with Prometheus beyond {tolerance:.0%}")
    if load.wait(timeout=60) != 0:
        sys.exit("the goose load failed")
    for path in ["/data/999999", "/nope", "/health/ready", "/metrics"]:
        try:
            get(f"http://127.0.0.1:{api}{path}")
        except Exception:
            pass
    time.sleep(12)  # two more scrapes and rule evaluations

    failures = []
    dash = json.load(open(os.path.join(root, "grafana/dashboards/data-api.json")))
    checked = 0
    # The standby series exist only with --database-read-url; this run has no standby
    # (tests/api/standbys.rs checks that they are exported).
    without_standby = []
    for p in dash["panels"]:
        for t in p.get("targets", []):
            expr = t["expr"].replace("$instance", ".*").replace("$__rate_interval", "1m")
            if "db_replica_" in expr or ("cache_redis_" in expr and not redis_url):
                without_standby.append(p["title"])
                continue
            checked += 1
            try:
                if not query(prom, expr):
                    failures.append(f"no data: panel {p['title']!r}: {expr}")
            except Exception as e:
                failures.append(f"error: panel {p['title']!r}: {expr}: {e}")
    import re
    records = re.findall(r"^\s*- record: (\S+)", open(os.path.join(root, "prometheus.rules.yml")).read(), re.M)
    for r in records:
        if not query(prom, r):
            failures.append(f"recording rule {r} produced no series")
    if failures:
        print("\n".join(failures))
        sys.exit(1)
    print(f"{checked} panel queries and {len(records)} recording rules returned data")
    print(f"not queried (this run has no standby{'' if redis_url else ', no Redis'}): {', '.join(without_standby)}")
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except Exception:
            p.kill()
    shutil.rmtree(work, ignore_errors=True)
    if redis_url:
        keys = subprocess.run(["redis-cli", "-u", redis_url, "--scan", "--pattern", f"{redis_prefix}*"],
                              capture_output=True, text=True).stdout.split()
        for i in range(0, len(keys), 500):
            subprocess.run(["redis-cli", "-u", redis_url, "del", *keys[i:i + 500]], capture_output=True)
