#!/usr/bin/env bash
# The dashboard in a real browser: the release service on 127.0.0.1 with a seeded SQLite
# database, a short goose load (read_hot and write), then tests/browser/dashboard.mjs in headless
# Chromium. Says SKIPPED (and passes) without Node.js or Chromium.
# Usage: tests/browser/run.sh [data-api binary] [loadtests binary] [screenshot.png]
set -euo pipefail
cd "$(dirname "$0")/../.."
api=$(realpath "${1:-target/release/data-api}"); load=$(realpath "${2:-target/release/loadtests}")
work=$(mktemp -d)
shot=${3:-$work/dashboard.png}
chromium=${CHROMIUM:-/usr/bin/chromium}
command -v node >/dev/null || { echo "SKIPPED dashboard browser test: node is not installed"; exit 0; }
[ -x "$chromium" ] || { echo "SKIPPED dashboard browser test: no Chromium at $chromium (apt-get install chromium)"; exit 0; }
[ -d tests/browser/node_modules/playwright-core ] || npm ci --prefix tests/browser --no-audit --no-fund --silent

pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
db="sqlite://$work/browser.db?mode=rwc"
"$api" seed --database-url "$db" --items 2000 --quiet >/dev/null
RUST_LOG=warn "$api" serve --database-url "$db" --bind "127.0.0.1:$port" --access-log false &
pid=$!
for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1 && break
    sleep 0.1
done
# Goose matches scenario machine names: read_hot is `readhot`. The page opens while the load runs,
# with five seconds of it already in the history.
LOADTEST_MAX_ID=2000 "$load" --host "http://127.0.0.1:$port" --scenarios readhot,write \
    -u 4 -r 4 -t 20s -q --no-print-metrics >/dev/null &
loadpid=$!
sleep 5
CHROMIUM=$chromium node tests/browser/dashboard.mjs "http://127.0.0.1:$port" "$shot"
wait "$loadpid"
echo "dashboard browser test passed; screenshot: $shot"
