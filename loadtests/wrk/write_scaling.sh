#!/usr/bin/env bash
# Do writes scale with concurrency? PUT /data/{id} (full replace, ids uniform over 1,000 seeded
# items) with 1 connection and with many, in alternating rounds against one server, and the
# ratio (many / 1). Group commit (--db-write-batches) is what should make it more than 1.
# Usage: loadtests/wrk/write_scaling.sh <binary> [database URL, default a fresh SQLite file]
#        [rounds=3] [duration=5s] [connections=50] [extra server flags...]
# e.g.   loadtests/wrk/write_scaling.sh target/release/data-api
#        loadtests/wrk/write_scaling.sh target/release/data-api postgres://postgres@127.0.0.1/bench 3 5s 50 --cache-capacity 0
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$1; work=$(mktemp -d); url=${2:-"sqlite://$work/scaling.db?mode=rwc"}
rounds=${3:-3}; dur=${4:-5s}; conns=${5:-50}; shift $(( $# < 5 ? $# : 5 ))
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$bin" seed --database-url "$url" --items 1000 --quiet >/dev/null
RUST_LOG=warn "$bin" --database-url "$url" --bind "127.0.0.1:$port" --access-log false "$@" >/dev/null &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
rps() { MAX_ID=1000 wrk -t"$(( $1 > 1 ? 2 : 1 ))" -c"$1" -d"$dur" -s loadtests/wrk/put_random.lua "http://127.0.0.1:$port" |
    sed -n 's/^RESULT rps=\([0-9]*\).*non2xx=\([0-9]*\).*/\1 \2/p'; }
MAX_ID=1000 wrk -t2 -c"$conns" -d2s -s loadtests/wrk/put_random.lua "http://127.0.0.1:$port" >/dev/null
for r in $(seq 1 "$rounds"); do
  read -r one bad1 < <(rps 1)
  read -r many bad2 < <(rps "$conns")
  [[ "$bad1$bad2" == "00" ]] || { echo "non-2xx answers during the run" >&2; exit 1; }
  printf 'round %d: 1 connection %6d req/s   %d connections %6d req/s   ratio %.2f\n' \
    "$r" "$one" "$conns" "$many" "$(echo "$many / $one" | bc -l)"
done
