#!/usr/bin/env bash
# The README's test command (`make test`) runs this: it makes sure Debian's Chromium is there for the browser
# tests (installing it when it runs as root with apt-get, else saying loudly that those tests will be skipped),
# starts Prefect servers (with their UI) on 127.0.0.1 the way sentiflow starts its own (`sentiflow prefect server`:
# Prefect's `prefect server start --background`, its log in a file) — one per pytest-xdist lane —, runs pytest in
# two parts (below), and stops the servers on exit (`sentiflow prefect down`). The other services start inside the
# test session: a moto server on 127.0.0.1 standing in for AWS (in-process, so the tests can play SageMaker's jobs),
# Prefect workers, endpoint and API servers, the browser. Only tests marked e2e talk to a Prefect server (they
# request the `prefect_api` fixture); unit tests get no Prefect API at all. Bare `pytest` works too: the fixtures
# then start their own Prefect server when needed.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium=${SENTIFLOW_CHROMIUM:-/usr/bin/chromium}
browser_warning=""
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "Chromium not found at $chromium: installing it for the browser tests (apt-get install -y chromium)"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }; then
      browser_warning="apt-get could not install chromium (see the apt output above)"
    fi
  elif [ "$(id -u)" != 0 ]; then
    browser_warning="it is not installed and this script is not running as root, so it cannot install it"
  else
    browser_warning="it is not installed and apt-get is not available to install it"
  fi
  if [ -z "$browser_warning" ] && [ ! -x "$chromium" ]; then
    browser_warning="apt-get ran but $chromium is still missing (set SENTIFLOW_CHROMIUM to the browser's path)"
  fi
fi
warn_browser() {
  [ -n "$browser_warning" ] || return 0
  {
    echo "################################################################################################"
    echo "# WARNING: no Chromium at $chromium: $browser_warning."
    echo "# The browser tests (tests/web/, and the page test in tests/flows/test_pipeline.py) are SKIPPED."
    echo "# Install it with \`sudo apt-get install -y chromium\` (or point SENTIFLOW_CHROMIUM at one) and rerun."
    echo "################################################################################################"
  } >&2
}
warn_browser

work=$(mktemp -d -t sentiflow-tests.XXXXXX)
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# The full suite (no arguments) runs in two parts: first every test not marked `serial` spread over
# $SENTIFLOW_TEST_LANES pytest-xdist processes ("lanes", whole files each: --dist loadfile), each lane with a Prefect
# server of its own (deployments, work pool and automations are per server); then the `serial` tests (they measure
# behaviour under load, so they run alone) in one process on the first lane's server. With arguments, one pytest
# process runs exactly what they select, on one server, as plain `pytest` would.
lanes=${SENTIFLOW_TEST_LANES:-2}
if [ "$#" -gt 0 ] || [ "$lanes" -lt 2 ]; then
  lanes=1
fi

export PREFECT_HOME="$work/client-prefect"  # pytest's own Prefect client (tests/conftest.py gives each lane its own)
export PREFECT_SERVER_API_HOST=127.0.0.1
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false
export DO_NOT_TRACK=1
export GX_ANALYTICS_ENABLED=false

server_homes=()  # each server's SENTIFLOW_HOME: its PREFECT_HOME (database, server.log) is <home>/prefect
api_urls=()
for ((lane = 0; lane < lanes; lane++)); do
  server_homes+=("$work/server-home-$lane")
  api_urls+=("http://127.0.0.1:$(free_port)/api")
done

cleanup() {
  status=$?
  for ((lane = 0; lane < ${#server_homes[@]}; lane++)); do
    server_log="${server_homes[$lane]}/prefect/server.log"
    if [ "$status" -ne 0 ] && [ -f "$server_log" ]; then
      echo "--- tests failed; the last lines of the Prefect server's log (${api_urls[$lane]}):" >&2
      tail -40 "$server_log" >&2
    fi
    SENTIFLOW_HOME="${server_homes[$lane]}" sentiflow prefect down >/dev/null 2>&1 || true
  done
  rm -rf "$work"
  warn_browser
  exit $status
}
trap cleanup EXIT

# A background server's stdout/stderr are pipes nobody reads once `prefect server start --background` exits (the
# first line written there would kill it): `sentiflow prefect server` points all of its logging at server.log.
# The servers start side by side; each is waited for.
pids=()
for ((lane = 0; lane < lanes; lane++)); do
  url=${api_urls[$lane]}
  port=${url##*:}
  port=${port%/api}
  echo "starting a Prefect server on $url"
  SENTIFLOW_HOME="${server_homes[$lane]}" sentiflow prefect server --port "$port" --timeout 180 >/dev/null &
  pids+=($!)
done
for pid in "${pids[@]}"; do
  if ! wait "$pid"; then
    echo "a Prefect server did not start (see the error above)" >&2
    exit 1
  fi
done

# The session's e2e fixtures point their process's Prefect client at its lane's server
# (SENTIFLOW_TEST_PREFECT_API_URL: one URL per lane, comma-separated); pytest itself starts without PREFECT_API_URL,
# so a unit test cannot reach a server by accident. Each part lists its 25 slowest tests, to keep the suite's time
# in view. Exit code 5 is pytest's "no tests collected".
run_pytest() {
  local urls=$1
  shift
  local rc=0
  SENTIFLOW_TEST_PREFECT_API_URL="$urls" env -u PREFECT_API_URL -u PREFECT_UI_API_URL pytest --durations=25 "$@" \
    || rc=$?
  return "$rc"
}
if [ "$lanes" -eq 1 ]; then
  run_pytest "${api_urls[0]}" "$@"
  exit $?
fi
all_urls=$(IFS=,; echo "${api_urls[*]}")
started=$SECONDS
parallel_rc=0
run_pytest "$all_urls" -n "$lanes" --dist loadfile -m "not serial" || parallel_rc=$?
echo "the tests not marked serial took $((SECONDS - started)) s in $lanes lanes; now the serial ones"
serial_rc=0
run_pytest "${api_urls[0]}" -m serial || serial_rc=$?
echo "the whole suite took $((SECONDS - started)) s"
for rc in "$parallel_rc" "$serial_rc"; do
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
    exit "$rc"
  fi
done
