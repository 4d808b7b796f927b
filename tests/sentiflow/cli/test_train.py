"""``sentiflow train --ranks N``: the stages see SENTIFLOW_TRAIN_INSTANCE_COUNT=N."""

from __future__ import annotations

import pytest


def test_ranks_sets_the_instance_count_the_stages_read(monkeypatch: pytest.MonkeyPatch) -> None:
    import flows.pipeline
    import sentiflow.cli.train as cli
    from core.config import get_settings

    monkeypatch.setenv("SENTIFLOW_TRAIN_INSTANCE_COUNT", "1")  # restored afterwards
    monkeypatch.setattr(cli, "configure_flow_run", lambda settings, echo=None: None)
    seen: dict[str, int] = {}

    class Done(Exception):
        pass

    def train_flow(**kwargs: object) -> None:
        seen["count"] = get_settings().train_instance_count
        raise Done

    monkeypatch.setattr(flows.pipeline, "train_flow", train_flow)
    with pytest.raises(Done):
        cli.train(ranks=2)
    assert seen == {"count": 2}
