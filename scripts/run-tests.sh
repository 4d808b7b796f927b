#!/usr/bin/env bash
# The README's test command (`make test`) runs this: it makes sure Debian's Chromium is there for the browser
# tests (installing it when it runs as root with apt-get, else saying loudly that those tests will be skipped),
# starts a Prefect server (with its UI) on 127.0.0.1 for the whole session the way sentiflow starts its own
# (`sentiflow prefect server`: Prefect's `prefect server start --background`, its log in a file), runs pytest, and
# stops the server on exit (`sentiflow prefect down`). The other services start inside the test session: a moto server on 127.0.0.1 standing in for AWS
# (in-process, so the tests can play SageMaker's jobs), Prefect workers, endpoint and API servers, the browser.
# Only tests marked e2e talk to the Prefect server (they request the `prefect_api` fixture); unit tests get no
# Prefect API at all. Bare `pytest` works too: the fixtures then start their own Prefect server when needed.
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

prefect_port=$(free_port)
server_home="$work/server-home"  # the session server's SENTIFLOW_HOME: its PREFECT_HOME is $server_home/prefect
export PREFECT_HOME="$server_home/prefect"
export PREFECT_SERVER_API_HOST=127.0.0.1
export PREFECT_SERVER_API_PORT="$prefect_port"
export PREFECT_API_URL="http://127.0.0.1:$prefect_port/api"
export PREFECT_UI_API_URL="$PREFECT_API_URL"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_SERVER_UI_SHOW_PROMOTIONAL_CONTENT=false
export DO_NOT_TRACK=1
export GX_ANALYTICS_ENABLED=false
export SENTIFLOW_TEST_PREFECT_API_URL="$PREFECT_API_URL"

server_log="$server_home/prefect/server.log"
cleanup() {
  status=$?
  if [ "$status" -ne 0 ] && [ -f "$server_log" ]; then
    echo "--- tests failed; the last lines of the Prefect server's log ($PREFECT_API_URL):" >&2
    tail -40 "$server_log" >&2
  fi
  SENTIFLOW_HOME="$server_home" sentiflow prefect down >/dev/null 2>&1 || true
  rm -rf "$work"
  warn_browser
  exit $status
}
trap cleanup EXIT

# A background server's stdout/stderr are pipes nobody reads once `prefect server start --background` exits (the
# first line written there would kill it): `sentiflow prefect server` points all of its logging at $server_log.
echo "starting a Prefect server on $PREFECT_API_URL"
if ! SENTIFLOW_HOME="$server_home" sentiflow prefect server --port "$prefect_port" --timeout 180 >/dev/null; then
  echo "the Prefect server did not start (see the error above)" >&2
  exit 1
fi

# The session's e2e fixtures point this process's Prefect client at the server (SENTIFLOW_TEST_PREFECT_API_URL);
# pytest itself starts without PREFECT_API_URL, so a unit test cannot reach the server by accident. The 25 slowest
# tests are listed at the end, to keep the suite's time in view.
env -u PREFECT_API_URL -u PREFECT_UI_API_URL pytest --durations=25 "$@"
