"""`make test` runs the suite in pytest-xdist lanes, each on its own Prefect server (scripts/run-tests.sh)."""

from __future__ import annotations

import pytest

from tests.fixtures.prefect_helpers import lane_api_url

URLS = "http://127.0.0.1:4200/api, http://127.0.0.1:4201/api/"


def test_each_lane_takes_its_own_server() -> None:
    assert lane_api_url(URLS, lane="gw0") == "http://127.0.0.1:4200/api"
    assert lane_api_url(URLS, lane="gw1") == "http://127.0.0.1:4201/api"


def test_outside_xdist_the_first_server_is_used() -> None:
    assert lane_api_url(URLS, lane="") == "http://127.0.0.1:4200/api"
    assert lane_api_url("", lane="gw0") == ""


def test_a_lane_without_a_server_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match="lane gw2 has no Prefect server"):
        lane_api_url(URLS, lane="gw2")


def test_the_load_tests_run_alone() -> None:
    """The soaks and kills under load are `serial`: run-tests.sh runs them after the lanes, by themselves."""
    from pathlib import Path

    script = (Path(__file__).resolve().parents[1] / "scripts" / "run-tests.sh").read_text()
    assert '-m "not serial"' in script and "-m serial" in script
