#!/usr/bin/env bash
# A/B of GET cache-hit throughput: two servers (binary A with $A_FLAGS, binary B with $B_FLAGS)
# over one SQLite file, wrk against each in turn, A B A B …, so drift on the shared machine hits
# both alike. Prints each round, the medians and the per-pair ratios (A / B). $SCRIPT picks
# another wrk script (e.g. put_random.lua; misses: get_random.lua with --cache-capacity 0).
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
# shellcheck source=alternate.sh
source loadtests/wrk/alternate.sh
alternate "$a" "$b" "${SCRIPT:-get_random.lua}" 1000 "$rounds" "$dur" "$conns"
