#!/usr/bin/env bash
# The README's test command (`make test`) runs this: it starts the services the tests need on 127.0.0.1 —
# a Prefect server (with its UI) and a moto server standing in for AWS — runs pytest, and stops them on exit.
# Tests read PREFECT_API_URL and SENTIFLOW_TEST_MOTO_URL; run bare `pytest` and the fixtures start their own.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d -t sentiflow-tests.XXXXXX)
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

prefect_port=$(free_port)
moto_port=$(free_port)
export PREFECT_HOME="$work/prefect"
export PREFECT_SERVER_API_HOST=127.0.0.1
export PREFECT_SERVER_API_PORT="$prefect_port"
export PREFECT_API_URL="http://127.0.0.1:$prefect_port/api"
export PREFECT_UI_API_URL="$PREFECT_API_URL"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false
export DO_NOT_TRACK=1
export GX_ANALYTICS_ENABLED=false
export SENTIFLOW_TEST_MOTO_URL="http://127.0.0.1:$moto_port"

moto_pid=""
cleanup() {
  status=$?
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
  prefect server stop >/dev/null 2>&1 || true
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT

echo "starting Prefect server on $PREFECT_API_URL and moto on $SENTIFLOW_TEST_MOTO_URL"
prefect server start --background >"$work/prefect-server.log" 2>&1
moto_server -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
moto_pid=$!
if ! prefect server status --wait --timeout 90 >/dev/null; then
  echo "Prefect server did not become healthy; its log:" >&2
  tail -50 "$work/prefect-server.log" >&2
  exit 1
fi
for _ in $(seq 1 100); do
  curl -fs "$SENTIFLOW_TEST_MOTO_URL/moto-api/" >/dev/null 2>&1 && break
  sleep 0.2
done

pytest "$@"
