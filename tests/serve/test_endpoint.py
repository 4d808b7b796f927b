"""The local endpoint server (``python -m serve.endpoint``) over real HTTP on 127.0.0.1: the container's answers,
the SageMaker runtime's error protocol for boto3, limits, the access log, counters, workers, graceful drain."""

from __future__ import annotations

import http.client
import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve.toolkit import ToolkitModel
from tests.fixtures.serving import (
    PROJECT_ROOT,
    EndpointProcess,
    compare,
    contract_violations,
    endpoint_process,
    request_cases,
)
from tests.fixtures.tiny_model import TinyModel

NAME = "tiny-ep"
SLOW_ENTRY = '''"""Test entry point: the artifact's handlers, predictions held up by $SLOW_PREDICT_S seconds."""
import os
import time

from model.inference import input_fn, model_fn, output_fn  # noqa: F401
from model.inference import predict_fn as _predict_fn


def predict_fn(data, model, context=None):
    time.sleep(float(os.environ.get("SLOW_PREDICT_S", "0")))
    return _predict_fn(data, model, context)
'''


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("endpoint")


@pytest.fixture(scope="module")
def server(tiny: TinyModel, folder: Path) -> Iterator[EndpointProcess]:
    args = ["--name", NAME, "--workers", "2", "--state-dir", str(folder / "state")]
    args += ["--access-log", str(folder / "access.log")]
    with endpoint_process(tiny.model_dir, *args, log=folder / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def cases(tiny: TinyModel) -> dict[str, tuple[bytes, str | None, str | None]]:
    return request_cases(tiny.model_dir)


def runtime_client(url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    import boto3
    from botocore.config import Config

    for name, value in {
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    return boto3.client("sagemaker-runtime", config=Config(retries={"max_attempts": 1}))


# --- the container's route ------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_every_request_shape_is_the_toolkits_answer(
    server: EndpointProcess, toolkit: ToolkitModel, cases: dict
) -> None:
    """A local answer is the container's answer: status, headers and body as the in-process toolkit gives them."""
    served = {name: server.invoke(*request) for name, request in cases.items()}
    assert contract_violations(served) == []
    for name, request in cases.items():
        assert served[name] == toolkit.invoke(*request), name


@pytest.mark.e2e
def test_a_review_scores_as_the_model_does(server: EndpointProcess, tiny: TinyModel, tiny_loaded: Any) -> None:
    status, _, body = server.call("GET", "/ping")
    assert status == 200 and json.loads(body) == {"status": "healthy"}
    review = tiny.test_reviews[3]
    status, headers, body = server.invoke(review.encode(), "text/plain", None)
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["score"] == pytest.approx(float(tiny_loaded.predict_texts([review])[0]), abs=1e-12)


@pytest.mark.e2e
def test_an_oversized_body_is_refused_before_it_is_read(server: EndpointProcess) -> None:
    """413 as TorchServe's front end answers it (empty body), sent on the headers alone; the server stays up."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(
            b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\nContent-Length: 7000000\r\n\r\n"
        )
        started = time.monotonic()
        reply = conn.recv(4096)
        assert reply.startswith(b"HTTP/1.1 413 ") and time.monotonic() - started < 5
        assert b"content-type" not in reply.lower() and reply.endswith(b"\r\n\r\n")
    assert server.call("GET", "/ping")[0] == 200


@pytest.mark.e2e
def test_keep_alive_connection_serves_after_an_error(server: EndpointProcess, tiny: TinyModel) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/invocations", b"", {"Content-Type": "text/plain"})
        first = conn.getresponse()
        first.read()
        conn.request("POST", "/invocations", tiny.test_reviews[5].encode(), {"Content-Type": "text/plain"})
        second = conn.getresponse()
        assert (first.status, second.status) == (400, 200)
        assert {"label", "score", "known_words"} <= set(json.loads(second.read()))
    finally:
        conn.close()


@pytest.mark.e2e
def test_concurrent_requests_all_answer_correctly(server: EndpointProcess, tiny: TinyModel, tiny_loaded: Any) -> None:
    reviews = tiny.test_reviews[:40]
    expected = tiny_loaded.predict_texts(reviews)

    def one(review: str) -> float:
        status, _, body = server.invoke(review.encode(), "text/plain", None)
        assert status == 200
        return json.loads(body)["score"]

    with ThreadPoolExecutor(8) as pool:
        scores = list(pool.map(one, reviews))
    np.testing.assert_allclose(scores, expected, atol=1e-6)


@pytest.mark.e2e
def test_unknown_routes_and_methods_are_one_json_line(server: EndpointProcess) -> None:
    for method, path, status in (("GET", "/nope", 404), ("PUT", "/invocations", 405), ("GET", "/invocations", 405)):
        got, headers, body = server.call(method, path)
        assert got == status and headers["content-type"] == "application/json" and b"\n" not in body
        assert json.loads(body)["status"] == status


@pytest.mark.e2e
def test_stats_access_log_and_state_file(server: EndpointProcess, folder: Path) -> None:
    before = json.loads(server.call("GET", "/stats")[2])
    server.invoke(b"a fine film", "text/plain", None)
    server.invoke(b"", "text/plain", None)
    after = json.loads(server.call("GET", "/stats")[2])
    assert after["invocations"] == before["invocations"] + 2 and after["errors"] == before["errors"] + 1
    assert after["name"] == NAME and after["last_invoked_at"] is not None
    assert after["workers"] == after["workers_ready"] == 2 and len(after["per_worker"]) == 2
    time.sleep(0.6)  # the file is rewritten at most twice a second
    from serve.endpoint import read_stats

    assert read_stats(folder / "state")["invocations"] >= after["invocations"]
    entries = [json.loads(line) for line in (folder / "access.log").read_text().splitlines()]
    posts = [e for e in entries if e["method"] == "POST" and e["path"] == "/invocations"]
    assert {"ts", "client", "path", "status", "bytes_in", "bytes_out", "ms"} <= set(posts[-1])
    assert posts[-2]["status"] == 200 and posts[-2]["reviews"] == 1
    assert posts[-1]["status"] == 400 and "empty" in posts[-1]["error"]


# --- the sagemaker-runtime route ------------------------------------------------------------------------------


@pytest.mark.e2e
def test_boto3_invoke_endpoint_gets_the_models_answer(
    server: EndpointProcess, tiny: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = runtime_client(server.url, monkeypatch)
    body = json.dumps({"review": tiny.test_reviews[7]})  # what lambda_fn/handler.py sends
    response = client.invoke_endpoint(
        EndpointName=NAME, Body=body, ContentType="application/json", Accept="application/json"
    )
    assert response["ContentType"] == "application/json" and response["InvokedProductionVariant"] == "AllTraffic"
    assert response["Body"].read() == server.invoke(body.encode(), "application/json", "application/json")[2]
    csv = client.invoke_endpoint(EndpointName=NAME, Body=body, ContentType="application/json", Accept="text/csv")
    assert csv["ContentType"] == "text/csv" and csv["Body"].read().count(b"\n") == 1


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("body", "content_type", "status"),
    [(b"{", "application/json", 400), (b"<r/>", "application/xml", 415), (b'["a", 1]', "application/json", 400)],
)
def test_a_model_error_reaches_boto3_as_model_error(
    server: EndpointProcess, monkeypatch: pytest.MonkeyPatch, body: bytes, content_type: str, status: int
) -> None:
    """HTTP 424 ModelError with OriginalStatusCode/OriginalMessage/LogStreamArn, as the SageMaker runtime answers."""
    client = runtime_client(server.url, monkeypatch)
    with pytest.raises(client.exceptions.ModelError) as caught:
        client.invoke_endpoint(EndpointName=NAME, Body=body, ContentType=content_type)
    response = caught.value.response
    container = server.invoke(body, content_type, None)
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["Error"]["Code"] == "ModelError"
    assert response["OriginalStatusCode"] == status == container[0]
    assert response["OriginalMessage"] == container[2].decode()
    assert json.loads(response["OriginalMessage"])["status"] == status
    assert response["LogStreamArn"] == f"arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/{NAME}"
    assert response["Error"]["Message"].startswith(f"Received client error ({status}) from primary with message")


@pytest.mark.e2e
def test_another_endpoint_name_and_a_huge_body_are_the_runtimes_errors(
    server: EndpointProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.exceptions import ClientError

    client = runtime_client(server.url, monkeypatch)
    with pytest.raises(client.exceptions.ValidationError, match="Endpoint other-ep of account 000000000000 not found"):
        client.invoke_endpoint(EndpointName="other-ep", Body=b"fine", ContentType="text/plain")
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(EndpointName=NAME, Body=b"1" * (6 * 1024 * 1024 + 1), ContentType="text/csv")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert "exceeded 6291456 bytes" in str(caught.value)
    assert server.call("GET", "/ping")[0] == 200


# --- workers ------------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_dead_worker_is_replaced(server: EndpointProcess) -> None:
    """Last in this module: it kills one of the shared server's workers (TorchServe restarts its workers too)."""
    stats = json.loads(server.call("GET", "/stats")[2])
    victim = stats["per_worker"][0]["pid"]
    import psutil

    psutil.Process(victim).kill()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # dead (a zombie until the front end reaps it)
        try:
            if psutil.Process(victim).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    answers = [server.invoke(b"a fine film", "text/plain", None)[0] for _ in range(6)]
    assert set(answers) == {200}  # the other worker answers while the dead one is replaced
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        stats = json.loads(server.call("GET", "/stats")[2])
        if stats["workers_ready"] == 2:
            break
        time.sleep(0.5)
    assert stats["workers_ready"] == 2 and stats["restarts"] == 1
    assert victim not in [w["pid"] for w in stats["per_worker"]]


@pytest.mark.e2e
def test_sigterm_drains_in_flight_requests_then_exits_0(tiny: TinyModel, tmp_path: Path) -> None:
    model_dir = tmp_path / "model"
    shutil.copytree(tiny.model_dir, model_dir)
    (model_dir / "code" / "slow.py").write_text(SLOW_ENTRY)
    env = {"SAGEMAKER_PROGRAM": "slow.py", "SLOW_PREDICT_S": "3"}
    server = EndpointProcess(model_dir, "--workers", "1", "--access-log", "off", env=env, log=tmp_path / "log")
    try:
        server.wait_ready()
        idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        idle.request("GET", "/ping")
        idle.getresponse().read()  # an idle keep-alive connection must not hold the drain up
        results: list[int] = []
        request = threading.Thread(target=lambda: results.append(server.invoke(b"great", "text/plain", None)[0]))
        request.start()
        time.sleep(1.0)  # the request is in the worker, sleeping
        began = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        request.join(30)
        assert results == [200]
        assert server.process.wait(30) == 0 and time.monotonic() - began < 20
        idle.close()
    finally:
        server.stop()


@pytest.mark.e2e
def test_ping_waits_for_the_model_and_a_model_that_does_not_load_stops_the_server(
    tiny: TinyModel, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny.model_dir, broken)
    (broken / "model.pth").write_bytes(b"not a state dict")
    server = EndpointProcess(broken, "--workers", "1", log=tmp_path / "log")
    try:
        status, _, body = server.call("GET", "/ping", timeout=10)
        assert (status, json.loads(body)) == (503, {"status": "loading"})  # torch alone takes seconds to import
        assert server.process.wait(180) == 1
    finally:
        server.stop()
    log = (tmp_path / "log").read_text()
    assert "could not load the model" in log and "Traceback" not in log


@pytest.mark.e2e
def test_the_process_helper_starts_it_on_an_inherited_socket(tiny: TinyModel, tmp_path: Path) -> None:
    """The endpoint command as the local backend runs it (core.processes: --fd, ready on /ping, SIGTERM drain)."""
    from core import processes

    command = [sys.executable, "-m", "serve.endpoint", str(tiny.model_dir), "--fd", processes.FD, "--name", NAME]
    command += ["--workers", "1", "--state-dir", str(tmp_path / "state")]
    record = processes.start(command, log_path=tmp_path / "log", cwd=PROJECT_ROOT, timeout_s=180, name="endpoint")
    try:
        conn = http.client.HTTPConnection("127.0.0.1", record.port, timeout=30)
        conn.request("POST", f"/endpoints/{NAME}/invocations", b"a fine film", {"Content-Type": "text/plain"})
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("x-Amzn-Invoked-Production-Variant") == "AllTraffic"
        conn.close()
    finally:
        processes.stop(record, grace_s=30)
    assert not processes.alive(record)
    assert json.loads((tmp_path / "state" / "stats.json").read_text())["invocations"] == 1


def test_the_front_end_imports_neither_prefect_nor_torch_nor_the_model() -> None:
    code = (
        "import sys, serve.endpoint as e; e.build_app\n"
        "import starlette.applications, uvicorn\n"
        "print(sorted(m for m in ('prefect', 'torch', 'model', 'nltk') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_compare_sees_a_different_score() -> None:
    """The comparison the TorchServe tier relies on: labels and scores to 1e-6, else the bytes."""
    a = (200, {"content-type": "text/csv"}, b"positive,0.7\n")
    assert compare(a, (200, {"content-type": "text/csv"}, b"positive,0.7000001\n")) is None
    assert (compare(a, (200, {"content-type": "text/csv"}, b"positive,0.71\n")) or "").startswith("scores differ")
    assert compare(a, (200, {"content-type": "application/json"}, b"{}")) is not None
