#!/usr/bin/env bash
# What cross-replica invalidation costs writes on PostgreSQL, by feed, on three databases of the
# local server (which needs wal_level = logical, as .ci/run sets it), 10,000 seeded rows each:
#   T: the trigger feed (--invalidation trigger): the data_items trigger notifies on every change;
#   S: the commit-log feed (--invalidation auto), the notifying trigger disabled as the
#      migrations leave it where no replica listens, as a deployment that streams runs it;
#   B: the limit: the trigger dropped and --single-instance (no cross-replica coherence at all).
# Service side: PUT throughput, S against T and S against B, alternating rounds; and each feed's
# notification delay under that load (commit to this replica's cache, from its /metrics).
# Database side: pgbench, the same UPDATE by primary key, on S's table as the migrations leave it
# and on a trigger-free copy of it (same rows and indexes), alternating; and on T's table.
# The servers get 20 pooled connections each (three must fit the server's 100).
# Usage: loadtests/wrk/notify_cost.sh [rounds=4] [duration=8s] [connections=32]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-4}; dur=${2:-8s}; conns=${3:-32}; rows=10000; secs=${dur%s}
# Three servers at once: 20 pooled connections each, so they and their feeds fit the server's 100.
pool=20
bin=target/release/data-api
[[ -x $bin ]] || cargo build --release -q
pg() { psql -h 127.0.0.1 -U postgres -qAt "$@"; }
[[ "$(pg -c 'show wal_level' postgres)" == logical ]] || { echo "needs wal_level = logical" >&2; exit 1; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dt="dataapi_notify_t_$$"; ds="dataapi_notify_s_$$"; db="dataapi_notify_b_$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  for d in "$dt" "$ds" "$db"; do pg -c "drop database if exists $d with (force)" postgres || true; done
}
trap cleanup EXIT
for d in "$dt" "$ds" "$db"; do
  pg -c "create database $d" postgres
  "$bin" seed --database-url "postgres://postgres@127.0.0.1:5432/$d" --items $rows --quiet >/dev/null
done
pg -c "drop trigger data_items_notify on data_items" "$db"
pg -c 'CREATE TABLE data_items_bare (LIKE data_items INCLUDING ALL)' \
   -c 'INSERT INTO data_items_bare SELECT * FROM data_items' -c 'VACUUM ANALYZE data_items_bare' "$ds"
start() {  # start <database> <port> <flags...>
  local d=$1 port=$2; shift 2
  RUST_LOG=warn "$bin" --database-url "postgres://postgres@127.0.0.1:5432/$d" --bind "127.0.0.1:$port" \
    --access-log false --db-max-connections "$pool" --db-min-connections "$pool" "$@" >/dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && return; sleep 0.1; done
  echo "server on $port did not start" >&2; exit 1
}
t=$(free_port); start "$dt" "$t" --invalidation trigger
s=$(free_port); start "$ds" "$s" --invalidation auto
b=$(free_port); start "$db" "$b" --single-instance true
curl -s "http://127.0.0.1:$s/metrics" | grep -q 'cache_invalidation_feed{feed="stream"} 1' ||
  { echo "S is not on the commit-log feed" >&2; exit 1; }
# shellcheck source=alternate.sh
source loadtests/wrk/alternate.sh
echo "== service: A = S (commit log, trigger disabled), B = T (trigger)"
alternate "$s" "$t" put_random.lua "$rows" "$rounds" "$dur" "$conns" PUT/s
echo "== service: A = S (commit log, trigger disabled), B = the limit (no coherence, no trigger)"
alternate "$s" "$b" put_random.lua "$rows" "$rounds" "$dur" "$conns" PUT/s
for feed in "S $s" "T $t"; do
  set -- $feed
  echo "== notification delay, $1 (commit to cache), under the PUT load above"
  loadtests/wrk/server_quantiles.py "http://127.0.0.1:$2/metrics" \
    --histogram cache_notification_lag_seconds --match 'kind="change"'
done
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=()
echo "== database: pgbench -M prepared -c $conns, the same UPDATE by primary key"
printf '\\set id random(1, %d)\nUPDATE data_items SET name = '"'"'pgbench'"'"', version = version + 1, updated_at = now() WHERE id = :id;\n' "$rows" > /tmp/notify_cost_$$.sql
sed 's/UPDATE data_items /UPDATE data_items_bare /' /tmp/notify_cost_$$.sql > /tmp/notify_cost_bare_$$.sql
bench() { pgbench -h 127.0.0.1 -U postgres -n -M prepared -c "$conns" -j 2 -T "$secs" -f "$1" "$2" 2>/dev/null |
  sed -n 's/^tps = \([0-9.]*\).*/\1/p' | cut -d. -f1; }
# The PUT load above bloated the tables it wrote; both sides start compacted alike.
pg -c 'VACUUM FULL ANALYZE data_items' -c 'VACUUM FULL ANALYZE data_items_bare' "$ds"
pg -c 'VACUUM FULL ANALYZE data_items' "$dt"
for r in $(seq 1 "$rounds"); do
  if (( r % 2 )); then
    x=$(bench /tmp/notify_cost_$$.sql "$ds"); y=$(bench /tmp/notify_cost_bare_$$.sql "$ds")
  else
    y=$(bench /tmp/notify_cost_bare_$$.sql "$ds"); x=$(bench /tmp/notify_cost_$$.sql "$ds")
  fi
  z=$(bench /tmp/notify_cost_$$.sql "$dt")
  printf 'round %d: as migrated (stream) %6d tps   trigger-free copy %6d tps   ratio %.3f   trigger notifying %6d tps   ratio %.3f\n' \
    "$r" "$x" "$y" "$(echo "$x / $y" | bc -l)" "$z" "$(echo "$z / $y" | bc -l)"
done
rm -f /tmp/notify_cost_$$.sql /tmp/notify_cost_bare_$$.sql
