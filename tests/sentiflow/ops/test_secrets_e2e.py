"""No secret in sight: a failing run with a planted secret in the data URL and the notify URL, grepped everywhere.

The session's real Prefect server, its failure automation and notification receiver (``tests/fixtures/prefect.py``).
The data URL (``SENTIFLOW_DATA_URL``, as an operator passes credentials) carries a password and a signed query and
serves the wrong bytes, so the download stage fails its hash check; the notification block is re-saved for this
test with a token in its URL. Then every place the values could land is read back: the run's logs, artifacts,
labels, state messages and parameters, its task runs, the notification the receiver got, the block documents as
the API returns them, the captured output, and every file under the run's SENTIFLOW_HOME and the server's home.
The test also asserts that the run did fail and notify and that the secrets were really used, so it cannot pass
vacuously.
"""

from __future__ import annotations

import json
from pathlib import Path
from uuid import UUID

import pytest

from core.errors import DataError
from tests.fixtures.prefect_helpers import PrefectStack, Receiver, serve_directory, task_runs_of, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

DATA_SECRETS = ("PLANTED-DATA-PW", "PLANTED-DATA-SIG")
NOTIFY_SECRET = "PLANTED-NOTIFY-TOKEN"
SECRETS = (*DATA_SECRETS, NOTIFY_SECRET)


def _found(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def _files_with_secrets(root: Path) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {s}" for s in SECRETS if s.encode() in data]
    return hits


def _logs_of(flow_run_id: UUID) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def test_a_failing_run_leaks_no_planted_secret(
    prefect_deployed: list[str],
    prefect_server: PrefectStack,
    notify_receiver: Receiver,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    from prefect.client.orchestration import get_client

    from flows.pipeline import data_flow
    from sentiflow.ops.notifications import save_notification_block

    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "aclImdb_v1.tar.gz").write_bytes(b"not the archive the hash names")
    home = tmp_path / "home"
    planted_notify = f"{notify_receiver.url}?token={NOTIFY_SECRET}"
    save_notification_block(planted_notify)  # same block name: the session's failure automation sends through it
    try:
        with serve_directory(tmp_path / "www") as base:
            host = base.removeprefix("http://")
            url = f"http://sentiuser:{DATA_SECRETS[0]}@{host}/aclImdb_v1.tar.gz?X-Amz-Signature={DATA_SECRETS[1]}"
            monkeypatch.setenv("SENTIFLOW_HOME", str(home))
            monkeypatch.setenv("SENTIFLOW_DATA_URL", url)
            monkeypatch.setenv("SENTIFLOW_DATA_SHA256", "0" * 64)
            state = data_flow(return_state=True)
        assert state.is_failed(), state
        with pytest.raises(DataError, match="failed its hash check"):
            state.result()
        flow_run_id = state.state_details.flow_run_id

        def notification() -> dict | None:
            return next((r for r in notify_receiver.received() if str(flow_run_id) in str(r["json"])), None)

        sent = wait_until(notification, timeout=90, what="the failure notification")
        assert NOTIFY_SECRET in sent["path"]  # the planted notify URL was the one used
        logs = wait_until(
            lambda: (lines := _logs_of(flow_run_id)) and any("Finished in state Failed" in x for x in lines) and lines,
            timeout=60,
            what="the run's logs",
        )
    finally:
        save_notification_block(prefect_server.settings.notify_url)
    assert any("failed its hash check" in line for line in logs), logs

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        artifacts = client.read_artifacts()
        blocks = client.read_block_documents(include_secrets=False)
    task_runs = task_runs_of(flow_run_id)
    assert "sentiflow.failed-error" in run.labels and "hash check" in run.labels["sentiflow.failed-error"]
    places = {
        "notification": json.dumps(sent["json"]),
        "logs": "\n".join(logs),
        "labels": json.dumps(dict(run.labels)),
        "state message": str(run.state.message),
        "parameters": json.dumps(run.parameters, default=str),
        "task runs": json.dumps([(t.name, t.state.message, dict(t.labels)) for t in task_runs], default=str),
        "artifacts": json.dumps([a.model_dump(mode="json") for a in artifacts], default=str),
        "blocks (as the API shows them)": json.dumps([b.model_dump(mode="json") for b in blocks], default=str),
        "captured output": "".join(capfd.readouterr()),
    }
    leaks = {where: _found(text) for where, text in places.items() if _found(text)}
    leaks |= {"files": hits} if (hits := _files_with_secrets(home)) else {}
    assert not leaks, leaks
    assert "Parameters: " in sent["json"]["text"] and "Error: DataError: download of http://" in sent["json"]["text"]
