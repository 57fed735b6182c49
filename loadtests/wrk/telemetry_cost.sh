#!/usr/bin/env bash
# What telemetry costs on the hottest path: GET cache-hit throughput with metrics + tracing
# on (OTLP export off, access log off) versus everything off, alternating A B A B … on two servers
# over one SQLite file. Prints each round, the medians and the per-pair ratios.
# Usage: loadtests/wrk/telemetry_cost.sh [rounds=6] [duration=8s] [connections=50]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-6}; dur=${2:-8s}; conns=${3:-50}
work=$(mktemp -d)
url="sqlite://$work/cost.db?mode=rwc"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
bin=target/release/data-api
[[ -x $bin ]] || cargo build --release -q
$bin --database-url "$url" seed --items 1000 --quiet >/dev/null
start() {  # start <port> <flags...>
  local port=$1; shift
  RUST_LOG=info $bin --database-url "$url" --bind "127.0.0.1:$port" --access-log false "$@" >/dev/null &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && return; sleep 0.1; done
  echo "server on $port did not start" >&2; exit 1
}
on=$(free_port); start "$on"
off=$(free_port); start "$off" --metrics false --tracing false
rps() {  # rps <port>
  MAX_ID=1000 wrk -t2 -c"$conns" -d"$dur" -s loadtests/wrk/get_random.lua "http://127.0.0.1:$1" |
    sed -n 's/^RESULT rps=\([0-9]*\).*non2xx=\([0-9]*\).*/\1 \2/p'
}
for port in "$on" "$off"; do MAX_ID=1000 wrk -t2 -c"$conns" -d3s -s loadtests/wrk/get_random.lua "http://127.0.0.1:$port" >/dev/null; done
results=()
for r in $(seq 1 "$rounds"); do
  read -r a bad_a < <(rps "$on")
  read -r b bad_b < <(rps "$off")
  [[ "$bad_a$bad_b" == "00" ]] || { echo "non-2xx answers during the run" >&2; exit 1; }
  results+=("$a $b")
  printf 'round %d: telemetry on %6d req/s   off %6d req/s   ratio %.3f\n' "$r" "$a" "$b" "$(echo "$a / $b" | bc -l)"
done
printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [tuple(map(float, l.split())) for l in sys.stdin if l.strip()]
on, off = [r[0] for r in rows], [r[1] for r in rows]
ratios = [a / b for a, b in rows]
print(f"median on {statistics.median(on):.0f} req/s, off {statistics.median(off):.0f} req/s, "
      f"ratio of medians {statistics.median(on) / statistics.median(off):.3f}, "
      f"median per-pair ratio {statistics.median(ratios):.3f} (min {min(ratios):.3f}, max {max(ratios):.3f})")
'
