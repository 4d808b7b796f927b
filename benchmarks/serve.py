"""Serving speed: single-review latency over HTTP and raw-text batch throughput, against ``sentiflow serve``.

    python benchmarks/serve.py --model PATH_OR_URI [--reviews reviews.parquet]
        [--requests 1000] [--batch-reviews 5000]

Bars (issue 4): p50 ≤ 10 ms for one review over HTTP, ≥ 2,000 reviews/s for raw-text batches. The reference
measured in the same run is the in-process cost of the same work (``input_fn → predict_fn → output_fn``
without HTTP), so the HTTP overhead shows as a ratio.
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

P50_BAR_MS = 10.0
THROUGHPUT_BAR = 2000.0


def load_reviews(parquet: Path | None, count: int, seed: int) -> list[str]:
    """Raw test reviews from the dataset Parquet, or synthetic IMDB-length reviews when none is given."""
    rng = random.Random(seed)
    if parquet is not None:
        import pandas as pd

        frame = pd.read_parquet(parquet, columns=["split", "review"])
        reviews = frame.loc[frame["split"] == "test", "review"].tolist()
        rng.shuffle(reviews)
        return (reviews * (count // max(1, len(reviews)) + 1))[:count]
    from tests.fixtures.synthetic import synthetic_review

    return [synthetic_review(rng, rng.random() < 0.5) * 4 for _ in range(count)]  # ≈ IMDB length


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def post(conn: http.client.HTTPConnection, body: bytes, content_type: str) -> bytes:
    conn.request("POST", "/invocations", body=body, headers={"Content-Type": content_type})
    response = conn.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"server answered {response.status}: {payload[:200]!r}")
    return payload


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder, model.tar.gz or store URI")
    parser.add_argument("--reviews", type=Path, default=None, help="reviews.parquet (default: synthetic reviews)")
    parser.add_argument("--requests", type=int, default=1000, help="single-review requests to time")
    parser.add_argument("--batch-reviews", type=int, default=5000, help="reviews for the throughput run")
    parser.add_argument("--batch-size", type=int, default=256, help="reviews per batch request")
    parser.add_argument("--clients", type=int, default=2, help="parallel connections for the throughput run")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    from backends.models import resolve_model_dir
    from core.config import get_settings
    from model.inference import input_fn, model_fn, output_fn, predict_fn
    from serve.process import start_server_process

    reviews = load_reviews(args.reviews, max(args.requests, args.batch_reviews), args.seed)
    model_dir = resolve_model_dir(args.model, get_settings())
    model = model_fn(str(model_dir))
    import torch

    torch.set_num_threads(1)  # as the server runs each request (sentiflow serve --torch-threads 1)

    def in_process(texts: list[str]) -> None:
        output_fn(predict_fn(input_fn(json.dumps({"reviews": texts}), "application/json", len(texts)), model), None)

    for review in reviews[:50]:
        in_process([review])
    local_ms = []
    for review in reviews[: args.requests]:
        started = time.perf_counter()
        in_process([review])
        local_ms.append((time.perf_counter() - started) * 1000)

    server = start_server_process(str(model_dir), extra_args=["--access-log", "off"])
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        for review in reviews[:50]:
            post(conn, review.encode(), "text/plain")
        http_ms = []
        for review in reviews[: args.requests]:
            started = time.perf_counter()
            post(conn, review.encode(), "text/plain")
            http_ms.append((time.perf_counter() - started) * 1000)
        conn.close()
        batch = reviews[: args.batch_reviews]
        bodies = [
            json.dumps({"reviews": batch[start : start + args.batch_size]}).encode()
            for start in range(0, len(batch), args.batch_size)
        ]

        def client(part: list[bytes]) -> None:
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
            for body in part:
                post(connection, body, "application/json")
            connection.close()

        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client, [bodies[i :: args.clients] for i in range(args.clients)]))
        http_rate = len(batch) / (time.perf_counter() - started)
    finally:
        server.stop()

    started = time.perf_counter()
    for start in range(0, len(batch), args.batch_size):
        in_process(batch[start : start + args.batch_size])
    local_rate = len(batch) / (time.perf_counter() - started)

    p50, p99 = percentile(http_ms, 50), percentile(http_ms, 99)
    local_p50 = percentile(local_ms, 50)
    source = args.reviews or "synthetic reviews"
    print(f"model {model_dir} · {len(http_ms)} single requests · {len(batch)} batch reviews · {source}")
    print(f"single review over HTTP: p50 {p50:.2f} ms, p99 {p99:.2f} ms (bar p50 ≤ {P50_BAR_MS:.0f} ms)")
    print(f"  reference in-process:  p50 {local_p50:.2f} ms → HTTP overhead ×{p50 / local_p50:.2f}")
    print(
        f"raw-text batch throughput over HTTP ({args.clients} clients): {http_rate:,.0f} reviews/s "
        f"(bar ≥ {THROUGHPUT_BAR:,.0f})"
    )
    print(f"  reference in-process, one thread:  {local_rate:,.0f} reviews/s → ×{http_rate / local_rate:.2f}")
    ok = p50 <= P50_BAR_MS and http_rate >= THROUGHPUT_BAR
    print("bars:", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
