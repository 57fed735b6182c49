#!/usr/bin/env bash
# What /dashboard/data polls cost the cache hits, against what as many more connections of hits
# cost them (issue 25, reproduction 3), in alternating rounds on one release build:
#   hits+hits:      wrk -t1 -c20 GET /data/1   beside  wrk -t1 -c16 GET /data/1
#   hits+closing:   wrk -t1 -c20 GET /data/1   beside  wrk -t1 -c16 GET /data/1 with `Connection: close`
#                   (a poll's answer closes its connection, by design: this is that cost alone)
#   hits+polls:     wrk -t1 -c20 GET /data/1   beside  wrk -t1 -c16 polling /dashboard/data as the
#                   page does (dashboard_poll.lua: the last two seconds' points)
#   hits+full:      wrk -t1 -c20 GET /data/1   beside  wrk -t1 -c16 GET /dashboard/data (every point
#                   of the 5-minute range, ~450 KB once the history is full)
# Prints the hits' requests a second in each, and the ratios (1.0: polls cost what hits cost).
# Run it after the service has a few minutes of history for the full-range row to mean much.
# Usage: loadtests/wrk/dashboard_cost.sh [rounds=3] [duration=8s] [binary=target/release/data-api]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}; dur=${2:-8s}; bin=${3:-target/release/data-api}
[ -x "$bin" ] || cargo build --release -q --bin data-api
work=$(mktemp -d); pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="sqlite://$work/d.db?mode=rwc"
"$bin" seed --database-url "$url" --items 1 --quiet >/dev/null
RUST_LOG=warn "$bin" --database-url "$url" --bind "127.0.0.1:$port" --access-log false & pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/data/1" >/dev/null
rps() { sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' "$1"; }
run() { # run <second path> [wrk script | close] -> hits' rps, the others' rps
  local script=()
  case "${2:-}" in
    "") ;;
    close) script=(-H "Connection: close") ;;
    *) script=(-s "loadtests/wrk/$2") ;;
  esac
  wrk -t1 -c16 -d"$dur" "${script[@]}" "http://127.0.0.1:$port$1" >"$work/other" 2>&1 &
  local other=$!
  wrk -t1 -c20 -d"$dur" "http://127.0.0.1:$port/data/1" >"$work/hits" 2>&1
  wait "$other"
  echo "$(rps "$work/hits") $(rps "$work/other")"
}
echo "hits' requests/s (the 16 other connections' requests/s); ratios to the first column"
printf '%-6s %-20s %-20s %-20s %-20s %s\n' round '16 hit conns' '16 closing hit conns' \
  '16 page polls' '16 full polls' 'closing, page, full'
for r in $(seq 1 "$rounds"); do
  read -r hh ho < <(run /data/1)
  read -r ch co < <(run /data/1 close)
  read -r ph po < <(run /dashboard/data dashboard_poll.lua)
  read -r fh fo < <(run /dashboard/data)
  printf '%-6s %-20s %-20s %-20s %-20s %s\n' "$r" "$hh ($ho)" "$ch ($co)" "$ph ($po)" "$fh ($fo)" \
    "$(python3 -c "print(f'{$ch/$hh:.3f} {$ph/$hh:.3f} {$fh/$hh:.3f}')")"
done
