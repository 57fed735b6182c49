#!/usr/bin/env bash
# Server-side throughput with wrk: cache hits, cache-off misses over 100k rows, and PUTs.
# Usage: loadtests/wrk/bench.sh sqlite|postgres [duration=15s] [connections=50]
# Extra server flags: EXTRA_ARGS="--db-ping-idle-after 30s". Starts the release binary on 127.0.0.1 with a fresh database, seeds it, runs wrk, stops it.
set -euo pipefail
cd "$(dirname "$0")/../.."
backend=${1:-sqlite}; dur=${2:-15s}; conns=${3:-50}
rows=100000; hot=1000
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
# shellcheck source=throwaway_db.sh
source loadtests/wrk/throwaway_db.sh
case "$backend" in
  sqlite) url="sqlite://$work/bench.db?mode=rwc" ;;
  postgres) new_db bench; url=$db_url ;;
  *) echo "usage: $0 sqlite|postgres [duration] [connections]" >&2; exit 2 ;;
esac
cleanup() {
  [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  drop_db
  rm -rf "$work"
}
trap cleanup EXIT
bin=target/release/data-api
[[ -x $bin ]] || cargo build --release -q
$bin seed --database-url "$url" --items $rows --quiet >/dev/null

serve() {  # serve <cache capacity>
  [[ -n "${pid:-}" ]] && { kill "$pid"; wait "$pid" 2>/dev/null || true; }
  # shellcheck disable=SC2086 # EXTRA_ARGS is a list of flags
  RUST_LOG=warn $bin --database-url "$url" --bind "127.0.0.1:$port" --cache-capacity "$1" ${EXTRA_ARGS:-} &
  pid=$!
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && return; sleep 0.1; done
  echo "server did not become ready" >&2; exit 1
}
run() {  # run <label> <script> <max id>
  local out
  out=$(MAX_ID=$3 wrk -t2 -c"$conns" -d"$dur" --latency -s "loadtests/wrk/$2" "http://127.0.0.1:$port" | grep RESULT)
  printf '%-9s %-34s %s\n' "$backend" "$1" "${out#RESULT }"
}

serve 1000
MAX_ID=$hot wrk -t2 -c"$conns" -d3s -s loadtests/wrk/get_random.lua "http://127.0.0.1:$port" >/dev/null  # warm
run "GET hit (1k hot ids, cache on)" get_random.lua $hot
printf '%-9s %s\n' "$backend" "$(loadtests/wrk/server_quantiles.py "http://127.0.0.1:$port/metrics")"
serve 0
run "GET miss (100k ids, cache off)" get_random.lua $rows
serve 1000
run "PUT (100k ids)" put_random.lua $rows
