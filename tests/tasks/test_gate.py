"""The quality-gate stage passes the behavioural pass rate and its minimum on to ``evaluation.gate``."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import tasks.gate as stage


@pytest.fixture(autouse=True)
def plain_logger(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("prefect.logging.get_run_logger", lambda: logging.getLogger("test-gate"))


def decide(**kwargs: Any) -> dict[str, Any]:
    return stage.gate_task.fn(0.92, None, 0.85, 0.005, **kwargs)


def test_a_pass_rate_below_the_minimum_blocks_an_accurate_model() -> None:
    decision = decide(behaviour_pass_rate=0.80, min_behaviour_pass_rate=0.90)
    assert decision["promote"] is False and "0.8000" in decision["reason"]


def test_the_default_minimum_only_reports_the_pass_rate() -> None:
    assert decide(behaviour_pass_rate=0.10)["promote"] is True
    assert decide()["promote"] is True


def test_a_missing_pass_rate_with_a_minimum_is_not_promoted() -> None:
    assert decide(min_behaviour_pass_rate=0.5)["promote"] is False
