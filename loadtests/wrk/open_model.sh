#!/usr/bin/env bash
# Latency as users see it: an open model, requests sent at a fixed rate whatever the answers do,
# with oha's correction for coordinated omission (a late answer delays no later request's clock).
# For each backend and path, first the closed-loop maximum (oha itself, 50 connections, no rate
# limit: the generator shares the 2 cores, so the maximum is what it and the server reach
# together), then oha at 25 %, 50 % and 80 % of it, printing p50 / p99 / p99.9 and the rate
# achieved.
#   hit:  GET /data/{id}, ids 100-999, all cached (warmed first)
#   miss: GET /data/{id}, cache off, ids 10000-99999 of 100k rows
#   put:  PUT /data/{id}, ids 10000-99999 of 100k rows
# $API_FLAGS: more flags for data-api (e.g. --db-read-batches 0). $RATES: fixed rates in req/s
# (e.g. "1000 2500") instead of 25/50/80 % of the maximum, to compare two builds at equal rates.
# Needs oha (`cargo install oha`). Usage:
#   loadtests/wrk/open_model.sh [backends=sqlite,postgres] [paths=hit,miss,put] [duration=10s]
set -euo pipefail
cd "$(dirname "$0")/../.."
backends=${1:-sqlite,postgres}; paths=${2:-hit,miss,put}; dur=${3:-10s}
command -v oha >/dev/null || { echo "oha is not installed: cargo install oha" >&2; exit 1; }
cargo build --release -q --bin data-api
bin=target/release/data-api
work=$(mktemp -d); pid=""
# shellcheck source=throwaway_db.sh
source loadtests/wrk/throwaway_db.sh
stop() { if [[ -n "$pid" ]]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; pid=""; fi; }
trap 'stop; drop_db; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
base="http://127.0.0.1:$port"
ready() { for _ in $(seq 1 100); do curl -sf "$base/health/ready" >/dev/null && return; sleep 0.1; done; exit 1; }

# oha on <url regex> [flags…] (-q <rate> for the open model): "p50 p99 p99.9 (ms) rate success"
run_oha() {
  local url=$1; shift
  oha -z "$dur" -c 50 --latency-correction --no-tui --output-format json --rand-regex-url "$@" "$url" |
    python3 -c '
import json, sys
r = json.load(sys.stdin)
p, s = r["latencyPercentiles"], r["summary"]
ms = [p[k] * 1e3 for k in ("p50", "p99", "p99.9")]
print("%8.3f %8.3f %8.3f %9.0f %.4f" % (*ms, s["requestsPerSec"], s["successRate"]))'
}

printf '%-9s %-5s %8s %6s %9s %8s %8s %8s %9s %s\n' backend path max pct rate p50_ms p99_ms p99.9_ms achieved ok
for backend in ${backends//,/ }; do
  case "$backend" in
    sqlite) url="sqlite://$work/open.db?mode=rwc" ;;
    postgres) new_db open; url=$db_url ;;
  esac
  $bin seed --database-url "$url" --items 100000 --batch 4000 --quiet >/dev/null
  for path in ${paths//,/ }; do
    flags=(--database-url "$url" --bind "127.0.0.1:$port" --access-log false)
    method=(); script=get_random.lua; max_id=99999
    regex="$base/data/[1-9][0-9]{4}"
    case "$path" in
      hit) regex="$base/data/[1-9][0-9]{2}"; max_id=999 ;;
      miss) flags+=(--cache-capacity 0) ;;
      put) script=put_random.lua
           method=(-m PUT -T application/json -d '{"name":"open model","description":"sent at a fixed rate"}') ;;
    esac
    # shellcheck disable=SC2086 # $API_FLAGS is a list
    RUST_LOG=warn $bin "${flags[@]}" ${API_FLAGS:-} & pid=$!
    ready
    MAX_ID=$max_id wrk -t2 -c50 -d3s -s "loadtests/wrk/$script" "$base" >/dev/null # warm (and fill the cache for hits)
    closed=$(run_oha "$regex" "${method[@]}")
    max=$(echo "$closed" | awk '{printf "%d", $4}')
    printf '%-9s %-5s %8d %6s %9s %s\n' "$backend" "$path" "$max" closed - "$closed"
    if [[ -n "${RATES:-}" ]]; then  # fixed rates (req/s), to compare two builds at the same rates
      for rate in $RATES; do
        printf '%-9s %-5s %8d %6s %9d %s\n' "$backend" "$path" "$max" fixed "$rate" "$(run_oha "$regex" -q "$rate" "${method[@]}")"
      done
    else
      for pct in 25 50 80; do
        rate=$((max * pct / 100))
        printf '%-9s %-5s %8d %5d%% %9d %s\n' "$backend" "$path" "$max" "$pct" "$rate" "$(run_oha "$regex" -q "$rate" "${method[@]}")"
      done
    fi
    stop
  done
  drop_db
  rm -f "$work"/open.db*
done
