"""Serving speed and footprint: the ASGI endpoint (``python -m serve.endpoint``) beside the old server, in one run.

    python benchmarks/serve.py --model PATH_OR_URI [--reviews reviews.parquet | --archive aclImdb.tar.gz]
        [--requests 1000] [--batch-reviews 5000] [--batch-size 256] [--clients 2] [--workers N] [--probe-inference]

Both servers run the same model on the same reviews (IMDB test reviews from the shared mirror by default, synthetic
ones without it), one after the other on this machine:

* **reference** — ``benchmarks/reference_server.py``: the ``http.server`` endpoint and ``model.inference`` of main at
  a606f33, one process, one torch thread per request thread;
* **endpoint** — ``python -m serve.endpoint MODEL --workers N`` (default one per CPU): every request through the
  SageMaker PyTorch inference toolkit's handler service (``serve.toolkit.ToolkitModel``).

Measured per server: one raw review per request (``text/plain``, one keep-alive connection; p50/p99), raw-text
throughput over HTTP with batched requests (``{"reviews": [...]}``, ``--clients`` connections in parallel), and the
resident memory of each serving process after the runs. The profile splits one review's cost in this process on one
thread (tokenize, encode, forward pass, JSON, toolkit dispatch, HTTP = over-HTTP p50 minus the in-process call).
``--probe-inference`` also times the alternatives to float32 inference that issue 13 asks about (dynamic int8
quantization, bfloat16) with their accuracy and whether a review's score depends on its batch.

Bars (issue 13): ≥ 5,000 reviews/s with batched requests, single review p50 ≤ 3 ms and p99 ≤ 10 ms, ≤ 300 MiB per
serving process. Tests assert behaviour, never these timings; the last line is machine-readable.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"

THROUGHPUT_BAR = 5000.0
P50_BAR_MS = 3.0
P99_BAR_MS = 10.0
RSS_BAR_MIB = 300.0
IDLE_S = 2.0  # memory is read right after the load and again after this long idle
LISTENING = re.compile(r"listening on (http://[^\s]+)")


# --- inputs ---------------------------------------------------------------------------------------------------------


def load_reviews(parquet: Path | None, archive: Path | None, count: int, seed: int) -> tuple[list[str], list[int], str]:
    """(reviews, labels, where from): IMDB test reviews, shuffled, repeated up to ``count`` if needed."""
    rng = random.Random(seed)
    frame = None
    if parquet is not None:
        import pandas as pd

        frame, source = pd.read_parquet(parquet, columns=["split", "label", "review"]), str(parquet)
    elif archive is not None and archive.is_file():
        from tasks.data.load import load_archive

        frame, source = load_archive(archive), str(archive)
    if frame is None:
        from tests.fixtures.synthetic import synthetic_review

        labels = [rng.random() < 0.5 for _ in range(count)]
        return [synthetic_review(rng, label) * 4 for label in labels], [int(x) for x in labels], "synthetic reviews"
    test = frame.loc[frame["split"] == "test"]
    pairs = list(zip(test["review"].tolist(), test["label"].astype(int).tolist(), strict=True))
    rng.shuffle(pairs)
    pairs = (pairs * (count // max(1, len(pairs)) + 1))[:count]
    return [p[0] for p in pairs], [p[1] for p in pairs], f"IMDB test reviews ({source})"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def pss_mib(pid: int) -> float:
    """Proportional set size: shared pages (torch's libraries) split between the processes mapping them."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(x) for x in handle.read().split()]
    except OSError:
        return []


# --- a server under test ----------------------------------------------------------------------------------------


class Server:
    """A serving process started with ``command`` that prints ``listening on URL``."""

    def __init__(self, label: str, command: list[str], log_path: Path) -> None:
        self.label = label
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._log, cwd=ROOT)
        line = self.process.stdout.readline().decode() if self.process.stdout else ""
        match = LISTENING.search(line)
        if not match:
            self.stop()
            raise RuntimeError(f"{label} did not start ({line!r}); see {log_path}")
        self.url = match.group(1)
        self.port = int(self.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:  # ready: /ping answers (the endpoint accepts once its model is loaded)
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", "/ping")
                if conn.getresponse().status == 200:
                    conn.close()
                    break
            except OSError:
                time.sleep(0.2)
        else:
            self.stop()
            raise RuntimeError(f"{label} did not answer /ping; see {log_path}")

    def processes(self) -> dict[str, tuple[float, float]]:
        """(RSS, PSS) MiB of the serving process(es): the process itself and its workers."""
        found = {"process": (rss_mib(self.process.pid), pss_mib(self.process.pid))}
        for index, pid in enumerate(children(self.process.pid)):
            found[f"worker {index}"] = (rss_mib(pid), pss_mib(pid))
        return found

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def post(conn: http.client.HTTPConnection, body: bytes, content_type: str) -> bytes:
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
    response = conn.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"server answered {response.status}: {payload[:200]!r}")
    return payload


def measure(server: Server, reviews: list[str], requests: int, batch: list[str], size: int, clients: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    for review in reviews[:100]:  # warm-up: stem cache, oneDNN primitives
        post(conn, review.encode(), "text/plain")
    single = []
    for review in reviews[:requests]:
        started = time.perf_counter()
        post(conn, review.encode(), "text/plain")
        single.append((time.perf_counter() - started) * 1000)
    conn.close()
    bodies = [json.dumps({"reviews": batch[i : i + size]}).encode() for i in range(0, len(batch), size)]
    answers: dict[int, list[dict]] = {}

    def client(indices: list[int]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=600)
        for index in indices:
            answers[index] = json.loads(post(connection, bodies[index], "application/json"))
        connection.close()

    client([0])  # warm the batch path once
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [list(range(len(bodies)))[i::clients] for i in range(clients)]))
    rate = len(batch) / (time.perf_counter() - started)
    scored = [item for index in range(len(bodies)) for item in answers[index]]
    return {
        "p50": percentile(single, 50),
        "p99": percentile(single, 99),
        "rate": rate,
        "rss": server.processes(),  # right after the load
        "rss_idle": _idle_processes(server),
        "labels": [item["label"] for item in scored],
        "scores": [item["score"] for item in scored],
    }


# --- the profile ----------------------------------------------------------------------------------------------------


def per_item_us(fn: Any, items: list[Any]) -> float:
    started = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - started) / len(items) * 1e6


def profile(model_dir: Path, reviews: list[str], size: int) -> dict[str, Any]:
    """One review's cost, in this process on one thread (µs)."""
    import numpy as np
    import torch

    from model.artifact import load_artifact
    from model.preprocessing import encode_many

    torch.set_num_threads(1)
    model = load_artifact(model_dir)
    tokenize = model.preprocessor.tokenize  # the artifact's own tokenizer version
    sample = reviews[:2000]
    for review in sample:  # a running server's caches are warm (the reference version's stem cache)
        tokenize(review)
    result: dict[str, Any] = {"tokenize": per_item_us(tokenize, sample), "tokenizer": model.preprocessor.version}
    tokens = [tokenize(review) for review in sample]
    started = time.perf_counter()
    rows = encode_many(tokens, model.preprocessor.word_dict, model.preprocessor.max_len)
    result["encode"] = (time.perf_counter() - started) / len(sample) * 1e6
    model.predict_proba(rows[:64])
    started = time.perf_counter()
    for start in range(0, len(rows), size):
        model.predict_proba(rows[start : start + size])
    result["forward"] = (time.perf_counter() - started) / len(rows) * 1e6
    single = [rows[i : i + 1] for i in range(min(300, len(rows)))]
    result["forward_single"] = statistics.median(
        [per_item_us(model.predict_proba, [row]) for row in single]  # one review alone: p50
    )
    bodies = [json.dumps({"reviews": sample[i : i + size]}) for i in range(0, len(sample), size)]
    answers = [
        json.dumps([{"label": "positive", "score": float(s), "known_words": 3} for s in np.random.rand(size)])
        for _ in bodies
    ]
    started = time.perf_counter()
    for body, answer in zip(bodies, answers, strict=True):
        json.loads(body)
        json.dumps(json.loads(answer))
    result["json"] = (time.perf_counter() - started) / len(sample) * 1e6
    result.update(_toolkit_profile(model_dir, sample[:300]))
    return result


def _toolkit_profile(model_dir: Path, sample: list[str]) -> dict[str, float]:
    """Per-request cost of the toolkit's handler service over calling the handlers directly (text/plain)."""
    try:
        from serve.toolkit import ArtifactCodeShadowed, ToolkitModel

        toolkit = ToolkitModel(model_dir)
    except (ArtifactCodeShadowed, FileNotFoundError, RuntimeError) as error:
        print(f"(toolkit dispatch not profiled: {error})")
        return {}
    import model.inference as handlers

    bodies = [review.encode() for review in sample]
    loaded = toolkit.model

    def direct(body: bytes) -> None:
        handlers.output_fn(handlers.predict_fn(handlers.input_fn(body, "text/plain"), loaded), None)

    def dispatched(body: bytes) -> None:
        toolkit.answer(body, "text/plain", None)

    for body in bodies[:50]:
        direct(body)
        dispatched(body)
    rounds = [(per_item_us(direct, bodies), per_item_us(dispatched, bodies)) for _ in range(3)]
    direct_us = statistics.median(r[0] for r in rounds)
    dispatched_us = statistics.median(r[1] for r in rounds)
    return {"handlers": direct_us, "toolkit_request": dispatched_us, "toolkit_overhead": dispatched_us - direct_us}


def probe_inference(model_dir: Path, reviews: list[str], labels: list[int]) -> list[str]:
    """Alternatives to float32 inference on this artifact: speed, accuracy, and batch dependence."""
    import copy
    import warnings

    import numpy as np
    import torch

    from model.artifact import load_artifact

    torch.set_num_threads(1)
    base = load_artifact(model_dir)
    sample, truth = reviews[:2500], np.asarray(labels[:2500])
    rows = base.preprocessor.encode_texts(sample)
    reference = base.predict_proba(rows)

    class Autocast(torch.nn.Module):
        def __init__(self, network: torch.nn.Module) -> None:
            super().__init__()
            self.network, self.returns_logits = network, getattr(network, "returns_logits", False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.network(x).float()

    variants: list[tuple[str, Any]] = [("float32 (served)", base)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for label, dtype in (("dynamic int8", torch.qint8), ("dynamic float16", torch.float16)):
            variant = copy.copy(base)
            variant.network = torch.ao.quantization.quantize_dynamic(
                copy.deepcopy(base.network), {torch.nn.LSTM, torch.nn.Linear}, dtype=dtype
            )
            variants.append((label, variant))
    bf16 = copy.copy(base)
    bf16.network = Autocast(base.network)
    variants.append(("bfloat16 autocast", bf16))
    lines = []
    for label, variant in variants:
        variant.predict_proba(rows[:64])
        started = time.process_time()
        scores = variant.predict_proba(rows)
        rate = len(rows) / (time.process_time() - started)
        alone = np.array([variant.predict_proba(rows[i : i + 1])[0] for i in range(200)])
        accuracy = float(((scores >= 0.5) == truth).mean())
        lines.append(
            f"  {label:<20} {rate:8,.0f} reviews/s (CPU time)  accuracy {accuracy:.4f}  "
            f"max |Δ| vs float32 {np.abs(scores - reference).max():.1e}  "
            f"alone vs in a batch {np.abs(alone - scores[:200]).max():.1e}  "
            f"labels ≠ float32 {int(((scores >= 0.5) != (reference >= 0.5)).sum())}"
        )
    return lines


# --- main -------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder, model.tar.gz or store URI")
    parser.add_argument("--reviews", type=Path, default=None, help="reviews.parquet (split, label, review)")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="IMDB mirror (used without --reviews)")
    parser.add_argument("--requests", type=int, default=1000, help="single-review requests to time")
    parser.add_argument("--batch-reviews", type=int, default=5000, help="reviews for the throughput run")
    parser.add_argument("--batch-size", type=int, default=256, help="reviews per batch request")
    parser.add_argument("--clients", type=int, default=2, help="parallel connections for the throughput run")
    parser.add_argument("--workers", type=int, default=None, help="endpoint workers (default: one per CPU)")
    parser.add_argument("--probe-inference", action="store_true", help="also time int8/bfloat16 alternatives")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    from backends.models import resolve_model_dir
    from core.config import get_settings

    model_dir = resolve_model_dir(args.model, get_settings())
    count = max(args.requests + 100, args.batch_reviews, 2000)
    reviews, labels, source = load_reviews(args.reviews, args.archive, count, args.seed)
    workers = args.workers or len(os.sched_getaffinity(0))
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    batch = reviews[: args.batch_reviews]
    print(f"model {model_dir} · {source} · {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")

    costs = profile(model_dir, reviews, args.batch_size)
    results: dict[str, dict] = {}
    commands = {
        "reference": [sys.executable, str(ROOT / "benchmarks" / "reference_server.py"), str(model_dir)],
        "endpoint": [sys.executable, "-m", "serve.endpoint", str(model_dir), "--port", "0"]
        + ["--workers", str(workers), "--access-log", "off"],
    }
    for label, command in commands.items():
        server = Server(label, command, logs / f"bench-serve-{label}.log")
        try:
            results[label] = measure(server, reviews, args.requests, batch, args.batch_size, args.clients)
        finally:
            server.stop()
    old, new = results["reference"], results["endpoint"]
    costs["http"] = new["p50"] * 1000 - costs.get("toolkit_request", costs["forward_single"] + costs["tokenize"])

    print(f"\nprofile, one review in this process on one thread (µs; batches of {args.batch_size}):")
    per_review = costs["tokenize"] + costs["encode"] + costs["forward"] + costs["json"]
    for key, text in (
        ("tokenize", f"tokenize ({costs['tokenizer']})"),
        ("encode", "encode (ids, padding)"),
        ("forward", "forward pass (length-sorted batches)"),
        ("json", "JSON (request decode + answer encode)"),
    ):
        print(f"  {text:<48}{costs[key]:9.1f}   {costs[key] / per_review:5.0%}")
    print(f"  {'= per review in a batch':<48}{per_review:9.1f}   → {1e6 / per_review:,.0f} reviews/s per core")
    print(f"  {'forward pass, one review alone':<48}{costs['forward_single']:9.1f}")
    if "toolkit_request" in costs:
        print(f"  {'one text/plain request, handlers called directly':<48}{costs['handlers']:9.1f}")
        print(f"  {'one text/plain request through the toolkit':<48}{costs['toolkit_request']:9.1f}")
        print(f"  {'  toolkit dispatch per request':<48}{costs['toolkit_overhead']:9.1f}")
    print(f"  {'HTTP per request (endpoint p50 − in process)':<48}{costs['http']:9.1f}")

    rows = [
        ("single review p50 (ms)", old["p50"], new["p50"], f"≤ {P50_BAR_MS:g}", new["p50"] <= P50_BAR_MS, True),
        ("single review p99 (ms)", old["p99"], new["p99"], f"≤ {P99_BAR_MS:g}", new["p99"] <= P99_BAR_MS, True),
        (
            f"raw-text reviews/s ({args.batch_size}/request, {args.clients} clients)",
            old["rate"],
            new["rate"],
            f"≥ {THROUGHPUT_BAR:,.0f}",
            new["rate"] >= THROUGHPUT_BAR,
            False,
        ),
        (
            "largest serving process (MiB RSS, under load)",
            _largest(old["rss"]),
            _largest(new["rss"]),
            f"≤ {RSS_BAR_MIB:g}",
            _largest(new["rss"]) <= RSS_BAR_MIB,
            True,
        ),
    ]
    print(f"\n{'':<46}{'reference':>12}{'endpoint':>12}{'ratio':>8}   bar")
    print(f"{'':<46}{'http.server':>12}{f'{workers} workers':>12}")
    for label, before, after, bar, met, lower_is_better in rows:
        ratio = before / after if lower_is_better else after / before
        print(f"{label:<46}{before:12,.2f}{after:12,.2f}{ratio:7.2f}x   {bar} {'met' if met else 'NOT met'}")
    print(f"{'':<46}(ratio > 1: the endpoint is better)")
    print(f"resident memory right after the load: reference {_fmt(old['rss'])}; endpoint {_fmt(new['rss'])}")
    idle = f"reference {_fmt(old['rss_idle'])}; endpoint {_fmt(new['rss_idle'])}"
    print(f"resident memory after {IDLE_S:g} s idle: {idle}")
    differ = sum(a != b for a, b in zip(old["labels"], new["labels"], strict=True))
    worst = max(abs(a - b) for a, b in zip(old["scores"], new["scores"], strict=True))
    print(f"answers: {len(batch):,} reviews, labels identical in {len(batch) - differ:,}, max |Δscore| {worst:.1e}")
    if args.probe_inference:
        print("\ninference alternatives on this artifact (one thread, 2,500 test reviews):")
        for line in probe_inference(model_dir, reviews, labels):
            print(line)
    met = all(row[4] for row in rows)
    print("bars:", "met" if met else "NOT met")
    print(
        f"endpoint_p50_ms={new['p50']:.2f} endpoint_p99_ms={new['p99']:.2f} endpoint_rps={new['rate']:.0f} "
        f"endpoint_rss_mib={_largest(new['rss']):.0f} reference_p50_ms={old['p50']:.2f} "
        f"reference_p99_ms={old['p99']:.2f} reference_rps={old['rate']:.0f} "
        f"reference_rss_mib={_largest(old['rss']):.0f} endpoint_idle_rss_mib={_largest(new['rss_idle']):.0f} "
        f"workers={workers}"
    )
    return 0 if met else 1


def _idle_processes(server: Server) -> dict[str, tuple[float, float]]:
    """(RSS, PSS) of the serving processes after IDLE_S without requests (an endpoint worker then trims its heap)."""
    time.sleep(IDLE_S)
    return server.processes()


def _largest(rss: dict[str, tuple[float, float]]) -> float:
    return max(value[0] for value in rss.values())


def _fmt(rss: dict[str, tuple[float, float]]) -> str:
    return ", ".join(f"{name} {value[0]:.0f} MiB (PSS {value[1]:.0f})" for name, value in rss.items())


if __name__ == "__main__":
    threading.current_thread().name = "benchmark"
    sys.exit(main())
