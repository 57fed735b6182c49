#!/usr/bin/env bash
# What cross-replica invalidation costs writes on PostgreSQL: PUT throughput A/B, alternating
# rounds, one release binary on two databases of the local server:
#   A: the default, the data_items trigger (pg_notify on every change) and the listener running;
#   B: the trigger dropped and --single-instance (what the build before them did).
# Also prints A's notification lag (trigger to cache, from its /metrics) under that write load.
# Usage: loadtests/wrk/notify_cost.sh [rounds=6] [duration=8s] [connections=32]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-6}; dur=${2:-8s}; conns=${3:-32}; rows=10000
bin=target/release/data-api
[[ -x $bin ]] || cargo build --release -q
pg() { psql -h 127.0.0.1 -U postgres -qAt "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
da="dataapi_notify_a_$$"; db="dataapi_notify_b_$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  for d in "$da" "$db"; do pg -c "drop database if exists $d with (force)" postgres || true; done
}
trap cleanup EXIT
for d in "$da" "$db"; do
  pg -c "create database $d" postgres
  "$bin" seed --database-url "postgres://postgres@127.0.0.1:5432/$d" --items $rows --quiet >/dev/null
done
pg -c "drop trigger data_items_notify on data_items" "$db"
start() {  # start <database> <port> <flags...>
  local d=$1 port=$2; shift 2
  RUST_LOG=warn "$bin" --database-url "postgres://postgres@127.0.0.1:5432/$d" --bind "127.0.0.1:$port" \
    --access-log false --db-max-connections "$conns" --db-min-connections "$conns" "$@" >/dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && return; sleep 0.1; done
  echo "server on $port did not start" >&2; exit 1
}
a=$(free_port); start "$da" "$a"
b=$(free_port); start "$db" "$b" --single-instance true
echo "A: trigger and listener; B: neither"
# shellcheck source=alternate.sh
source loadtests/wrk/alternate.sh
alternate "$a" "$b" put_random.lua "$rows" "$rounds" "$dur" "$conns" PUT/s
loadtests/wrk/server_quantiles.py "http://127.0.0.1:$a/metrics" \
  --histogram cache_notification_lag_seconds --match 'kind="change"'
