#!/usr/bin/env bash
# The SRE bundle, proven: Prometheus config and rules (promtool), rule unit tests, the compose
# file, the Grafana dashboard's structure, end to end against a real Prometheus, and the built-in
# /dashboard in a real browser.
# Usage: tests/sre/check.sh [data-api binary] [loadtests binary]   (release builds by default)
set -euo pipefail
cd "$(dirname "$0")/../.."
api=${1:-target/release/data-api}; load=${2:-target/release/loadtests}
need() { command -v "$1" >/dev/null || { echo "SKIPPED $2: $1 is not installed"; return 1; }; }

if need promtool "Prometheus config and rule checks"; then
    promtool check config prometheus.yml
    promtool check rules prometheus.rules.yml
    promtool test rules tests/prometheus/rules_test.yml
fi
if need docker-compose "compose file check"; then
    docker-compose config -q && echo "docker-compose.yml: valid"
fi
# The compose file's standby scripts against throwaway clusters (SKIPPED without initdb).
bash tests/sre/compose_standby.sh
python3 tests/sre/dashboard_check.py grafana/dashboards/data-api.json
if need prometheus "end-to-end dashboard check"; then
    python3 tests/sre/e2e.py "$api" "$load"
fi
# /dashboard in headless Chromium (says SKIPPED without Node.js or Chromium).
bash tests/browser/run.sh "$api" "$load"
