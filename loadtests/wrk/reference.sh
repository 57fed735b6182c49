#!/usr/bin/env bash
# data-api against what the machine can do without it, side by side in alternating rounds:
#   hit:  GET /data/{id} from the cache (SQLite)  vs  examples/bare_poem answering the same bytes: item 1's
#         for every id (one body, always in the CPU's caches), and each id its own item's (each item)
#   miss: GET /data/{id}, cache off, PostgreSQL    vs  pgbench, the same SELECT by primary key (prepared),
#         and vs examples/bare_poem --postgres (one prepared SELECT per request through a plain sqlx
#         pool, the row as JSON: an HTTP service with nothing else in it)
#   put:  PUT /data/{id}, PostgreSQL               vs  pgbench, one UPDATE by primary key per transaction,
#         on the table as the migrations leave it and on a copy of it without our trigger (the limit)
# on the same 100k-row data_items table, the same number of database connections, and the same
# durability (synchronous_commit as the server has it). Prints each round and the ratios.
# $API_FLAGS: more flags for data-api on the database rows (e.g. --db-read-batches 0).
# Without STREAM: the database rows on the trigger feed (--invalidation trigger, the trigger
# enabled). STREAM=1: as a deployment on the commit-log feed runs them: --invalidation auto and
# the notifying trigger disabled, as the migrations leave it (needs wal_level = logical).
# Usage: loadtests/wrk/reference.sh [rows=hit,miss,put] [rounds=4] [duration=8s] [connections=50] [db connections=32]
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-hit,miss,put}; rounds=${2:-4}; dur=${3:-8s}; conns=${4:-50}; dbconns=${5:-32}
secs=${dur%s}
cargo build --release -q --bin data-api && cargo build --release -q -p loadtests --example bare_poem
bin=target/release/data-api; bare=target/release/examples/bare_poem
work=$(mktemp -d); pids=()
# shellcheck source=throwaway_db.sh
source loadtests/wrk/throwaway_db.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true
  drop_db
  rm -rf "$work"
}
trap cleanup EXIT
# rps <max id> <wrk script> <port> <duration>: requests a second, empty if any answer was not 2xx
rps() { MAX_ID=$1 wrk -t2 -c"$conns" -d"$4" -s "loadtests/wrk/$2" "http://127.0.0.1:$3" |
  sed -n 's/^RESULT rps=\([0-9]*\).*non2xx=0 .*/\1/p'; }
ready() { for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$1/$2" >/dev/null && return; sleep 0.1; done; echo "port $1 not ready" >&2; exit 1; }

if [[ ",$rows," == *",hit,"* ]]; then
  echo "== hit: data-api (SQLite, cache on, telemetry on) vs bare poem, wrk -t2 -c$conns"
  echo "   (bare, one body: item 1's bytes for every id; bare, each item: every id its own bytes)"
  url="sqlite://$work/hit.db?mode=rwc"
  $bin seed --database-url "$url" --items 1000 --quiet >/dev/null
  a=$(free_port); RUST_LOG=warn $bin --database-url "$url" --bind "127.0.0.1:$a" --access-log false & pids+=($!)
  ready "$a" health/ready
  curl -sf "http://127.0.0.1:$a/data/1" > "$work/body.json"
  curl -sf "http://127.0.0.1:$a/data/[1-1000]" -w '\n' > "$work/items.jsonl"
  b=$(free_port); $bare "127.0.0.1:$b" "$work/body.json" & pids+=($!)
  c=$(free_port); $bare "127.0.0.1:$c" --items "$work/items.jsonl" & pids+=($!)
  ready "$b" data/1; ready "$c" data/1
  hits() { rps 1000 get_random.lua "$1" "$dur"; }
  for port in "$a" "$b" "$c"; do rps 1000 get_random.lua "$port" 3s >/dev/null; done
  results=()
  for r in $(seq 1 "$rounds"); do
    x=$(hits "$a"); y=$(hits "$b"); z=$(hits "$c")
    [[ -n "$x" && -n "$y" && -n "$z" ]] || { echo "a hit run failed (non-2xx answers)" >&2; exit 1; }
    results+=("$x $y $z")
    printf 'round %d: data-api %6d req/s   bare, one body %6d   ratio %.3f   bare, each item %6d   ratio %.3f\n' \
      "$r" "$x" "$y" "$(echo "$x / $y" | bc -l)" "$z" "$(echo "$x / $z" | bc -l)"
  done
  printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
for name, i in (("one body", 1), ("each item", 2)):
    r = [row[0] / row[i] for row in rows]
    print(f"vs bare, {name}: data-api {statistics.median(x[0] for x in rows):.0f} req/s, bare {statistics.median(x[i] for x in rows):.0f} req/s, "
          f"median per-pair ratio {statistics.median(r):.3f} (min {min(r):.3f}, max {max(r):.3f})")'
fi

if [[ ",$rows," == *",miss,"* || ",$rows," == *",put,"* ]]; then
  new_db ref; url=$db_url
  $bin seed --database-url "$url" --items 100000 --batch 4000 --quiet >/dev/null
  printf '\\set id random(1, 100000)\nSELECT * FROM data_items WHERE id = :id;\n' > "$work/select.sql"
  printf '\\set id random(1, 100000)\nUPDATE data_items SET name = '"'"'pgbench'"'"', version = version + 1, updated_at = now() WHERE id = :id;\n' > "$work/update.sql"
  # The limit for writes: the same UPDATE on a copy of the table (same rows and indexes) that
  # no trigger of ours touches.
  psql -h 127.0.0.1 -U postgres -qc 'CREATE TABLE data_items_bare (LIKE data_items INCLUDING ALL)' \
    -c 'INSERT INTO data_items_bare SELECT * FROM data_items' -c 'VACUUM ANALYZE data_items_bare' "$db" >/dev/null
  sed 's/UPDATE data_items /UPDATE data_items_bare /' "$work/update.sql" > "$work/update_bare.sql"
  if [[ -n "${STREAM:-}" ]]; then
    # The notifying trigger stays as the migrations leave it where no replica listens: disabled.
    API_FLAGS="${API_FLAGS:-} --invalidation auto"
  else
    # A deployment on the trigger feed: its replicas enable the trigger (pgbench pays it too).
    psql -h 127.0.0.1 -U postgres -qc 'ALTER TABLE data_items ENABLE TRIGGER data_items_notify' "$db"
    API_FLAGS="${API_FLAGS:-} --invalidation trigger"
  fi
  pg() { pgbench -h 127.0.0.1 -U postgres -n -M prepared -c "$dbconns" -j 2 -T "$secs" -f "$work/$1" "$db" 2>/dev/null |
    sed -n 's/^tps = \([0-9.]*\).*/\1/p' | cut -d. -f1; }
  api() { rps 100000 "$1" "$2" "$dur"; }
  bare_pg() {  # one wrk run against a fresh bare_poem --postgres (its pool lives only for the run)
    local port; port=$(free_port)
    $bare "127.0.0.1:$port" --postgres "$url" "$dbconns" & local pid=$!
    ready "$port" data/1
    api "$1" "$port"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  }
  side_by_side() {  # side_by_side <label> <cache capacity> <wrk script> <pgbench script> [bare sqlx too]
    local port; port=$(free_port)
    RUST_LOG=warn $bin --database-url "$url" --bind "127.0.0.1:$port" --access-log false \
      --cache-capacity "$2" --db-max-connections "$dbconns" --db-min-connections "$dbconns" ${API_FLAGS:-} & pids+=($!)
    ready "$port" health/ready
    echo "== $1: data-api (PostgreSQL, $dbconns connections) vs pgbench -M prepared -c $dbconns"
    api "$3" "$port" >/dev/null
    local results=()
    for r in $(seq 1 "$rounds"); do
      local x y z=0; x=$(api "$3" "$port"); y=$(pg "$4")
      [[ -n "$x" && -n "$y" ]] || { echo "a run failed (non-2xx answers or pgbench error)" >&2; exit 1; }
      case "${5:-}" in
        bare) z=$(bare_pg "$3") ;;
        triggerfree) z=$(pg update_bare.sql) ;;
      esac
      [[ -z "${5:-}" || -n "$z" ]] || { echo "the ${5:-} reference run failed" >&2; exit 1; }
      results+=("$x $y $z")
      printf 'round %d: data-api %6d req/s   pgbench %6d tps   ratio %.3f' "$r" "$x" "$y" "$(echo "$x / $y" | bc -l)"
      [[ -n "${5:-}" ]] && printf '   %s %6d   ratio %.3f' "${5}" "$z" "$(echo "$x / $z" | bc -l)"
      echo
    done
    printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
ratios = [x / y for x, y, _ in rows]
print(f"median data-api {statistics.median(r[0] for r in rows):.0f} req/s, pgbench {statistics.median(r[1] for r in rows):.0f} tps, "
      f"median per-pair ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
if rows[0][2]:
    bare = [x / z for x, _, z in rows]
    print(f"  vs the second reference ({sys.argv[1]}) {statistics.median(r[2] for r in rows):.0f}: "
          f"median per-pair ratio {statistics.median(bare):.3f} (min {min(bare):.3f}, max {max(bare):.3f})")' "${5:-}"
    kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
  }
  [[ ",$rows," == *",miss,"* ]] && side_by_side "miss" 0 get_random.lua select.sql bare
  [[ ",$rows," == *",put,"* ]] && side_by_side "put" 1000 put_random.lua update.sql triggerfree
fi
