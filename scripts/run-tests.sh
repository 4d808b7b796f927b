#!/usr/bin/env bash
# The README's test command (`make test`) runs this: it starts a Prefect server (with its UI) on 127.0.0.1 for the
# whole session, runs pytest, and stops the server on exit. The other services start inside the test session:
# a moto server on 127.0.0.1 standing in for AWS (in-process, so the tests can play SageMaker's jobs), Prefect
# workers, endpoint and API servers, and Debian's Chromium (installed by .ci/run) for the browser tests.
# Bare `pytest` works too: the fixtures then start their own Prefect server.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d -t sentiflow-tests.XXXXXX)
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

prefect_port=$(free_port)
export PREFECT_HOME="$work/prefect"
export PREFECT_SERVER_API_HOST=127.0.0.1
export PREFECT_SERVER_API_PORT="$prefect_port"
export PREFECT_API_URL="http://127.0.0.1:$prefect_port/api"
export PREFECT_UI_API_URL="$PREFECT_API_URL"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false
export DO_NOT_TRACK=1
export GX_ANALYTICS_ENABLED=false
export SENTIFLOW_TEST_PREFECT_API_URL="$PREFECT_API_URL"

cleanup() {
  status=$?
  if [ "$status" -ne 0 ] && [ -f "$work/prefect-server.log" ]; then
    echo "--- tests failed; the last lines of the Prefect server's log ($PREFECT_API_URL):" >&2
    tail -40 "$work/prefect-server.log" >&2
  fi
  prefect server stop >/dev/null 2>&1 || true
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT

echo "starting a Prefect server on $PREFECT_API_URL"
prefect server start --background >"$work/prefect-server.log" 2>&1
if ! prefect server status --wait --timeout 90 >/dev/null; then
  echo "Prefect server did not become healthy; its log:" >&2
  tail -50 "$work/prefect-server.log" >&2
  exit 1
fi

pytest "$@"
