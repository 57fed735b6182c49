#!/usr/bin/env bash
# A/B of GET cache-hit throughput: two servers (binary A with $A_FLAGS, binary B with $B_FLAGS)
# over one SQLite file, wrk against each in turn, A B A B …, so drift on the shared machine hits
# both alike. Prints each round, the medians and the per-pair ratios (A / B).
# Usage: loadtests/wrk/ab.sh <binary A> <binary B> [rounds=6] [duration=8s] [connections=50]
# e.g. what a change costs: build the old commit's binary elsewhere, then
#   loadtests/wrk/ab.sh target/release/data-api /tmp/data-api-old
set -euo pipefail
cd "$(dirname "$0")/../.."
bin_a=$1; bin_b=$2; rounds=${3:-6}; dur=${4:-8s}; conns=${5:-50}
work=$(mktemp -d)
url="sqlite://$work/ab.db?mode=rwc"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$bin_a" seed --database-url "$url" --items 1000 --quiet >/dev/null
start() {  # start <binary> <port> <flags...>
  local bin=$1 port=$2; shift 2
  RUST_LOG=info "$bin" --database-url "$url" --bind "127.0.0.1:$port" --access-log false "$@" >/dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && return; sleep 0.1; done
  echo "server on $port did not start" >&2; exit 1
}
# shellcheck disable=SC2086 # the flags are lists
{ a=$(free_port); start "$bin_a" "$a" ${A_FLAGS:-}; b=$(free_port); start "$bin_b" "$b" ${B_FLAGS:-}; }
rps() {  # rps <port>
  MAX_ID=1000 wrk -t2 -c"$conns" -d"$dur" -s loadtests/wrk/get_random.lua "http://127.0.0.1:$1" |
    sed -n 's/^RESULT rps=\([0-9]*\).*non2xx=\([0-9]*\).*/\1 \2/p'
}
for port in "$a" "$b"; do MAX_ID=1000 wrk -t2 -c"$conns" -d3s -s loadtests/wrk/get_random.lua "http://127.0.0.1:$port" >/dev/null; done
results=()
for r in $(seq 1 "$rounds"); do
  read -r ra bad_a < <(rps "$a")
  read -r rb bad_b < <(rps "$b")
  [[ "$bad_a$bad_b" == "00" ]] || { echo "non-2xx answers during the run" >&2; exit 1; }
  results+=("$ra $rb")
  printf 'round %d: A %6d req/s   B %6d req/s   ratio %.3f\n' "$r" "$ra" "$rb" "$(echo "$ra / $rb" | bc -l)"
done
printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
a, b = [r[0] for r in rows], [r[1] for r in rows]
ratios = [x / y for x, y in rows]
print(f"median A {statistics.median(a):.0f} req/s, B {statistics.median(b):.0f} req/s, "
      f"ratio of medians {statistics.median(a) / statistics.median(b):.3f}, "
      f"median per-pair ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
'
