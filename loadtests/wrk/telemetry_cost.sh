#!/usr/bin/env bash
# What telemetry costs on the hottest path: GET cache-hit throughput with metrics + tracing
# on (OTLP export off, access log off; A) versus everything off (B), alternating on two servers
# over one SQLite file (see ab.sh). Prints each round, the medians and the per-pair ratios.
# Usage: loadtests/wrk/telemetry_cost.sh [rounds=6] [duration=8s] [connections=50]
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=target/release/data-api
[[ -x $bin ]] || cargo build --release -q
B_FLAGS="--metrics false --tracing false" exec loadtests/wrk/ab.sh "$bin" "$bin" "$@"
