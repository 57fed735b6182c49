#!/usr/bin/env bash
# Reads on a streaming standby vs on the primary, side by side: a throwaway primary and a hot
# standby of it (initdb + pg_basebackup -R -X stream, as the postgres user, on free ports),
# 100k items, and two data-api servers on the same primary, A with --database-read-url (the
# standby) and B without, measured in alternating rounds:
#   fills: GET /data/{id}, ids uniform over 100k, a 1,000-item cache (almost every read a fill)
#   lists: GET /data?limit=50&after=<random>
# Then, per server and workload, the primary's CPU per request (its processes' /proc counters),
# i.e. how much of the read load left the primary. Both databases share this machine's cores.
# $A_FLAGS and $B_FLAGS add flags to either server; B_READS=standby gives B the standby too,
# e.g. what batching fills on the standby buys: B_READS=standby B_FLAGS="--db-read-batches 0".
# Usage: loadtests/wrk/standby.sh [rounds=4] [duration=8s] [connections=32]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-4}; dur=${2:-8s}; conns=${3:-32}; items=100000
cargo build --release -q --bin data-api
bin=target/release/data-api
pg=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d); chmod 755 "$work"; pids=()
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  for d in standby primary; do [[ -d $work/$d ]] && as_pg "$pg/pg_ctl" -D "$work/$d" -m immediate stop >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
[[ $(id -u) == 0 ]] && chown postgres "$work"
ready() { for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$1/$2" >/dev/null && return; sleep 0.1; done; echo "port $1 not ready" >&2; exit 1; }
start_pg() { as_pg "$pg/pg_ctl" -D "$work/$1" -l "$work/$1.log" -w start -o "-p $2 -k $work -c listen_addresses=127.0.0.1" >/dev/null; }
# shellcheck source=alternate.sh
source loadtests/wrk/alternate.sh

pport=$(free_port); sport=$(free_port)
as_pg "$pg/initdb" -D "$work/primary" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
start_pg primary "$pport"
primary="postgres://postgres@127.0.0.1:$pport/postgres"
standby="postgres://postgres@127.0.0.1:$sport/postgres"
$bin seed --database-url "$primary" --items "$items" --batch 4000 --quiet >/dev/null
as_pg "$pg/pg_basebackup" -h 127.0.0.1 -p "$pport" -U postgres -D "$work/standby" -R -X stream --checkpoint=fast --no-sync
start_pg standby "$sport"
until [[ $(psql "$standby" -Atc "select count(*) from data_items") == "$items" ]]; do sleep 0.2; done

a=$(free_port); b=$(free_port)
common=(--database-url "$primary" --cache-capacity 1000 --db-max-connections 16 --access-log false)
b_reads=(); [[ ${B_READS:-} == standby ]] && b_reads=(--database-read-url "$standby")
# shellcheck disable=SC2086 # the flags are lists
RUST_LOG=warn $bin "${common[@]}" --bind "127.0.0.1:$a" --database-read-url "$standby" ${A_FLAGS:-} & pids+=($!)
# shellcheck disable=SC2086
RUST_LOG=warn $bin "${common[@]}" --bind "127.0.0.1:$b" "${b_reads[@]}" ${B_FLAGS:-} & pids+=($!)
ready "$a" health/ready; ready "$b" health/ready
serving='db_replica_state{pool="standby-0",state="serving"} 1'
until curl -s "http://127.0.0.1:$a/metrics" | grep -q "$serving"; do sleep 0.2; done
[[ -z ${b_reads[*]} ]] || until curl -s "http://127.0.0.1:$b/metrics" | grep -q "$serving"; do sleep 0.2; done
b_is=${B_READS:-primary}

# CPU seconds the primary's processes have used: the postmaster (with the children it reaped)
# and its live children.
primary_cpu() {
  python3 - "$(head -1 "$work/primary/postmaster.pid")" <<'PY'
import os, sys
pm, total = sys.argv[1], 0
def stat(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()
total += sum(int(x) for x in stat(pm)[11:15])  # utime stime cutime cstime
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        s = stat(pid)
    except OSError:
        continue
    if s[1] == pm:
        total += int(s[11]) + int(s[12])
print(total / os.sysconf("SC_CLK_TCK"))
PY
}
primary_load() { # port script: one run, and the primary's CPU per 1,000 requests during it
  local before after out reqs
  before=$(primary_cpu)
  out=$(MAX_ID=$items wrk -t2 -c"$conns" -d"$dur" -s "loadtests/wrk/$2" "http://127.0.0.1:$1" | grep RESULT)
  after=$(primary_cpu)
  reqs=$(echo "$out" | sed -n 's/.*rps=\([0-9]*\).*/\1/p')
  printf '%s; primary CPU %.1f ms per 1,000 requests\n' "${out#RESULT }" "$(echo "($after - $before) * 1000000 / ($reqs * ${dur%s})" | bc -l)"
}
for w in "fills get_random.lua" "lists list_random.lua"; do
  set -- $w
  echo "== $1: A = reads on the standby ${A_FLAGS:-}, B = reads on the $b_is ${B_FLAGS:-} (wrk -t2 -c$conns, $dur rounds)"
  alternate "$a" "$b" "$2" "$items" "$rounds" "$dur" "$conns"
  echo "   A: $(primary_load "$a" "$2")"
  echo "   B: $(primary_load "$b" "$2")"
done
curl -s "http://127.0.0.1:$a/metrics" | grep -E '^db_client_reads_total|^db_replica_fallbacks_total' | grep -v ' 0$' || true
