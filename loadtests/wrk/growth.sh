#!/usr/bin/env bash
# How a cache miss grows with the table: GET /data/{id} with the cache off, over 10k, 100k and 1M
# rows, on SQLite and PostgreSQL. A fresh database per size, seeded, then wrk at low concurrency
# (latency near the service time, not queueing), ids uniform over the table. The primary-key index
# should keep p50 flat: at 1M within 1.3x of 10k.
# Usage: loadtests/wrk/growth.sh [backends=sqlite,postgres] [sizes=10000,100000,1000000] [duration=10s] [connections=4]
set -euo pipefail
cd "$(dirname "$0")/../.."
backends=${1:-sqlite,postgres}; sizes=${2:-10000,100000,1000000}; dur=${3:-10s}; conns=${4:-4}
bin=target/release/data-api
[[ -x $bin ]] || cargo build --release -q
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
work=$(mktemp -d)
pid=""
# shellcheck source=throwaway_db.sh
source loadtests/wrk/throwaway_db.sh
stop() {
  if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=""; fi
  drop_db
  rm -f "$work"/*.db*
}
trap 'stop; rm -rf "$work"' EXIT
printf '%-9s %9s  %s\n' backend rows "wrk -c$conns, cache off"
for backend in ${backends//,/ }; do
  for rows in ${sizes//,/ }; do
    case "$backend" in
      sqlite) url="sqlite://$work/growth.db?mode=rwc" ;;
      postgres) new_db growth; url=$db_url ;;
    esac
    $bin seed --database-url "$url" --items "$rows" --batch 4000 --quiet >/dev/null
    RUST_LOG=warn $bin --database-url "$url" --bind "127.0.0.1:$port" --cache-capacity 0 --access-log false &
    pid=$!
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
    MAX_ID=$rows wrk -t1 -c"$conns" -d3s -s loadtests/wrk/get_random.lua "http://127.0.0.1:$port" >/dev/null  # warm
    out=$(MAX_ID=$rows wrk -t1 -c"$conns" -d"$dur" --latency -s loadtests/wrk/get_random.lua "http://127.0.0.1:$port" | grep RESULT)
    printf '%-9s %9s  %s\n' "$backend" "$rows" "${out#RESULT }"
    stop
  done
done
