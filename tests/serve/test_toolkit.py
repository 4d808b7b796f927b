"""The in-process dispatch (serve/toolkit.py): the artifact's handlers through the PyTorch inference toolkit's own
handler service, exactly as a TorchServe worker runs them — no server."""

from __future__ import annotations

import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from serve.toolkit import ArtifactCodeShadowed, ToolkitModel, decode_predict_response
from tests.fixtures.serving import EXPECTED_ERRORS, FRONTEND_ONLY, contract_violations, request_cases
from tests.fixtures.tiny_model import TinyModel

BIG = "transform_csv_over_5mb"


@pytest.fixture(scope="module")
def cases(tiny: TinyModel) -> dict[str, tuple[bytes, str | None, str | None]]:
    return request_cases(tiny.model_dir)


@pytest.fixture(scope="module")
def answers(toolkit: ToolkitModel, cases: dict) -> dict[str, tuple[int, dict[str, str], bytes]]:
    return {name: toolkit.invoke(*request) for name, request in cases.items()}


def test_every_request_shape_keeps_the_contract(answers: dict, cases: dict) -> None:
    assert contract_violations(answers) == []
    # a transform mini-batch of tens of thousands of rows (the online review limit is 256): one answer line per
    # input line, in order
    assert len(answers[BIG][2].splitlines()) == len(cases[BIG][0].splitlines()) > 256 * 100


def test_answers_are_the_handlers_answers(toolkit: ToolkitModel, cases: dict) -> None:
    """Through the toolkit or calling the artifact's handlers directly: the same bytes and media type."""
    handlers = sys.modules["model.inference"]
    for name, (body, content_type, accept) in cases.items():
        if name in EXPECTED_ERRORS or name in FRONTEND_ONLY or name == BIG:
            continue
        direct, kind = handlers.output_fn(
            handlers.predict_fn(handlers.input_fn(body, content_type), toolkit.model), accept
        )
        status, headers, served = toolkit.invoke(body, content_type, accept)
        assert (status, headers["content-type"], served) == (200, kind, direct), name


def test_client_errors_carry_reason_phrases(toolkit: ToolkitModel, cases: dict) -> None:
    answer = toolkit.answer(*cases["unsupported_media_type"])
    assert (answer.status, answer.reason, answer.content_type) == (415, "Unsupported Media Type", "application/json")
    too_big = toolkit.answer(*cases["over_torchserve_limit"])
    assert (too_big.status, too_big.reason, too_big.headers, too_big.body) == (413, "Request Entity Too Large", {}, b"")


def test_invalid_utf8_is_400_although_the_toolkit_decodes_first(toolkit: ToolkitModel, cases: dict) -> None:
    from sagemaker_inference import content_types

    assert content_types.UTF8_TYPES == []  # model_fn handed decoding over to input_fn
    for name in ("invalid_utf8_json", "invalid_utf8_csv", "invalid_utf8_text"):
        status, _, body = toolkit.invoke(*cases[name])
        assert status == 400 and "not valid UTF-8" in json.loads(body)["message"], name


def test_limits_come_from_the_model_environment(toolkit: ToolkitModel, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SENTIFLOW_SERVE_MAX_REVIEWS", "2")
    assert toolkit.invoke(b'["a", "b"]', "application/json", None)[0] == 200
    status, _, body = toolkit.invoke(b'["a", "b", "c"]', "application/json", None)
    assert status == 413 and "more than the limit of 2" in json.loads(body)["message"]
    monkeypatch.setenv("SENTIFLOW_SERVE_MAX_CSV_BYTES", "10")
    status, _, body = toolkit.invoke(b"3,4,5,6\n2,7,8\n", "text/csv", "text/csv")
    assert status == 413 and "more than the limit of 10" in json.loads(body)["message"]


def test_the_media_type_is_concrete_never_an_echo(toolkit: ToolkitModel) -> None:
    for accept, want in (
        ("*/*", "application/json"),
        ("text/*", "text/csv"),
        (None, "application/json"),
        ("application/*", "application/json"),
        ("text/csv, application/json", "text/csv"),
    ):
        assert toolkit.invoke(b"a fine film", "text/plain", accept)[1]["content-type"] == want


def test_a_review_without_known_words_is_answered_and_marked(toolkit: ToolkitModel) -> None:
    for review in ("xyzzy plugh", "<br /><br />", "zzzqqq xxyyzz"):
        status, _, body = toolkit.invoke(json.dumps({"review": review}).encode(), "application/json", None)
        answer = json.loads(body)
        assert status == 200 and answer["known_words"] == 0 and "guess" in answer["warning"], review


def test_many_threads_get_their_own_answers(toolkit: ToolkitModel, cases: dict) -> None:
    """One lock per model: Service.predict rewrites the worker's one Context per batch."""
    names = [n for n in cases if n not in (BIG, "csv_over_payload_cap", "over_torchserve_limit")]
    expected = {name: toolkit.invoke(*cases[name]) for name in names}
    mismatches: list[str] = []

    def worker(offset: int) -> None:
        for i in range(40):
            name = names[(i + offset) % len(names)]
            if toolkit.invoke(*cases[name]) != expected[name]:
                mismatches.append(name)

    threads = [threading.Thread(target=worker, args=(k * 7,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == []


def test_artifact_code_that_differs_from_an_imported_model_package_is_refused(
    toolkit: ToolkitModel, tiny: TinyModel, tmp_path: Path
) -> None:
    """This process runs the project's ``model`` package; an artifact with other code must not silently run it."""
    other = tmp_path / "model"
    shutil.copytree(tiny.model_dir, other)
    handlers = other / "code" / "model" / "inference.py"
    handlers.write_text(handlers.read_text() + "\n# another version\n")
    with pytest.raises(ArtifactCodeShadowed, match="process of its own"):
        ToolkitModel(other)


def test_a_folder_without_the_entry_point_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="code/inference.py"):
        ToolkitModel(tmp_path)


def test_a_batch_level_failure_maps_like_the_frontend() -> None:
    """Service.predict returning code 503 (e.g. an output neither bytes nor JSON-serialisable) → TorchServe's JSON."""
    from ts.protocol.otf_message_handler import create_predict_response

    message = create_predict_response(None, {0: "id"}, "Unsupported model output data type.", 503)
    code, text, _ = decode_predict_response(bytes(message))
    answer = ToolkitModel._to_http(bytes(message))
    assert (code, text) == (503, "Unsupported model output data type.")
    assert (answer.status, answer.reason, answer.content_type) == (503, "Service Unavailable", "application/json")
    assert json.loads(answer.body) == {
        "code": 503,
        "type": "InternalServerException",
        "message": "Unsupported model output data type.",
    }


def test_the_model_is_what_model_fn_returned(toolkit: ToolkitModel, tiny_loaded: Any) -> None:
    assert type(toolkit.model).__name__ == type(tiny_loaded).__name__ == "SentimentModel"
    assert toolkit.module is not None and toolkit.module.__name__ == "inference"
