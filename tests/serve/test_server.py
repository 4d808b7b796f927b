"""The local endpoint server over real HTTP on 127.0.0.1."""

from __future__ import annotations

import http.client
import io
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve.server import EndpointServer
from tests.fixtures.tiny_model import TinyModel

pytestmark = pytest.mark.e2e  # the endpoint server runs on a loopback port


def call(
    server: EndpointServer, method: str, path: str, body: bytes | None = None, headers: dict | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def assert_healthy(server: EndpointServer) -> None:
    status, _, body = call(server, "GET", "/ping")
    assert status == 200 and json.loads(body) == {"status": "healthy"}


@pytest.fixture(scope="module")
def log_stream() -> io.StringIO:
    return io.StringIO()


@pytest.fixture(scope="module")
def server(tiny_loaded: Any, log_stream: io.StringIO) -> Iterator[EndpointServer]:
    with EndpointServer(tiny_loaded, name="tiny-ep", max_reviews=8, access_log=log_stream) as running:
        yield running


def test_ping_and_invocation(server: EndpointServer, tiny: TinyModel, tiny_loaded: Any) -> None:
    assert_healthy(server)
    review = tiny.test_reviews[3]
    status, headers, body = call(server, "POST", "/invocations", review.encode(), {"Content-Type": "text/plain"})
    assert status == 200 and headers["content-type"] == "application/json"
    expected = float(tiny_loaded.predict_texts([review])[0])
    assert json.loads(body)["score"] == pytest.approx(expected, abs=1e-12)


def test_endpoint_path_and_csv_accept(server: EndpointServer, tiny: TinyModel) -> None:
    body = json.dumps({"reviews": tiny.test_reviews[:4]}).encode()
    headers = {"Content-Type": "application/json", "Accept": "text/csv"}
    status, got, payload = call(server, "POST", "/endpoints/tiny-ep/invocations", body, headers)
    assert status == 200 and got["content-type"] == "text/csv"
    assert len(payload.decode().splitlines()) == 4


BAD_REQUESTS = [
    ("empty body", b"", {"Content-Type": "text/plain"}, 400, "empty"),
    ("whitespace body", b"  \n ", {"Content-Type": "text/plain"}, 400, "empty"),
    ("invalid utf-8", b"\xc3\x28 nice", {"Content-Type": "text/plain"}, 400, "not valid UTF-8"),
    ("malformed json", b'{"review": "x"', {"Content-Type": "application/json"}, 400, "not valid JSON"),
    ("wrong json shape", b'{"text": "x"}', {"Content-Type": "application/json"}, 400, "wrong shape"),
    ("unsupported content type", b"<r/>", {"Content-Type": "application/xml"}, 415, "not supported"),
    ("unsupported accept", b"ok", {"Content-Type": "text/plain", "Accept": "image/png"}, 406, "image/png"),
    (
        "too many reviews",
        json.dumps(["good"] * 9).encode(),
        {"Content-Type": "application/json"},
        413,
        "limit of 8",
    ),
    ("body over limit", b"a" * ((1 << 20) + 1), {"Content-Type": "text/plain"}, 413, "more than the limit"),
]


@pytest.mark.parametrize(
    ("case", "body", "headers", "status", "fragment"), BAD_REQUESTS, ids=[c[0] for c in BAD_REQUESTS]
)
def test_bad_request_gets_json_error_then_server_stays_healthy(
    server: EndpointServer, case: str, body: bytes, headers: dict, status: int, fragment: str
) -> None:
    got_status, got_headers, payload = call(server, "POST", "/invocations", body, headers)
    assert got_status == status, payload
    assert got_headers["content-type"] == "application/json"
    assert b"\n" not in payload
    error = json.loads(payload)
    assert error["status"] == status and fragment in error["message"]
    assert_healthy(server)


def test_unknown_routes_are_404(server: EndpointServer) -> None:
    assert call(server, "GET", "/nope")[0] == 404
    status, _, body = call(server, "POST", "/endpoints/other-ep/invocations", b"x", {"Content-Type": "text/plain"})
    assert status == 404 and "other-ep" in json.loads(body)["message"]
    assert_healthy(server)


def test_keep_alive_connection_serves_after_an_error(server: EndpointServer, tiny: TinyModel) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", "/invocations", b"", {"Content-Type": "text/plain"})
        first = conn.getresponse()
        first.read()
        conn.request("POST", "/invocations", tiny.test_reviews[5].encode(), {"Content-Type": "text/plain"})
        second = conn.getresponse()
        assert (first.status, second.status) == (400, 200)
        assert set(json.loads(second.read())) == {"label", "score"}
    finally:
        conn.close()


def test_concurrent_requests_all_answer_correctly(server: EndpointServer, tiny: TinyModel, tiny_loaded: Any) -> None:
    reviews = tiny.test_reviews[:40]
    expected = tiny_loaded.predict_texts(reviews)

    def one(review: str) -> float:
        status, _, body = call(server, "POST", "/invocations", review.encode(), {"Content-Type": "text/plain"})
        assert status == 200
        return json.loads(body)["score"]

    with ThreadPoolExecutor(8) as pool:
        scores = list(pool.map(one, reviews))
    np.testing.assert_allclose(scores, expected, atol=1e-6)


def test_stats_and_access_log(server: EndpointServer, log_stream: io.StringIO) -> None:
    before = json.loads(call(server, "GET", "/stats")[2])
    call(server, "POST", "/invocations", b"a fine film", {"Content-Type": "text/plain"})
    after = json.loads(call(server, "GET", "/stats")[2])
    assert after["invocations"] == before["invocations"] + 1
    assert after["name"] == "tiny-ep" and after["last_invoked_at"] is not None
    entries = [json.loads(line) for line in log_stream.getvalue().splitlines()]
    posts = [e for e in entries if e["method"] == "POST" and e["status"] == 200]
    assert posts and {"ts", "client", "path", "status", "bytes_in", "bytes_out", "ms"} <= set(posts[-1])


def test_boto3_sagemaker_runtime_works_unchanged(
    server: EndpointServer, tiny: TinyModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from botocore.exceptions import ClientError

    for name, value in {
        "AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME": server.url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("sagemaker-runtime")
    response = client.invoke_endpoint(
        EndpointName="tiny-ep",
        Body=json.dumps({"review": tiny.test_reviews[7]}),
        ContentType="application/json",
        Accept="application/json",
    )
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] == "AllTraffic"
    assert set(json.loads(response["Body"].read())) == {"label", "score"}
    with pytest.raises(ClientError) as caught:
        client.invoke_endpoint(EndpointName="tiny-ep", Body=b"{", ContentType="application/json")
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "not valid JSON" in caught.value.response["Error"]["Message"]


class _GatedModel:
    """The tiny model, but predictions wait for a gate: makes a request reliably in flight."""

    def __init__(self, model: Any) -> None:
        self.preprocessor = model.preprocessor
        self._model = model
        self.entered = threading.Event()
        self.release = threading.Event()

    def predict_proba(self, rows: np.ndarray) -> np.ndarray:
        self.entered.set()
        self.release.wait(30)
        return self._model.predict_proba(rows)


def test_stop_finishes_in_flight_requests_and_writes_state(tiny_loaded: Any, tmp_path: Path) -> None:
    gated = _GatedModel(tiny_loaded)
    state_file = tmp_path / "state.json"
    server = EndpointServer(gated, state_file=state_file).start()
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    idle.request("GET", "/ping")
    idle.getresponse().read()  # an idle keep-alive connection must not block shutdown
    results: list[int] = []
    worker = threading.Thread(
        target=lambda: results.append(call(server, "POST", "/invocations", b"great", {"Content-Type": "text/plain"})[0])
    )
    worker.start()
    assert gated.entered.wait(30)
    stopper = threading.Thread(target=server.stop)
    stopper.start()
    gated.release.set()
    stopper.join(30)
    worker.join(30)
    idle.close()
    assert not stopper.is_alive() and results == [200]
    state = json.loads(state_file.read_text())
    assert state["invocations"] == 1 and state["last_invoked_at"] is not None
