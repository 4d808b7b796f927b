"""Serving parity over the whole test split: a real endpoint's labels vs batch evaluation's, one for one.

    python benchmarks/parity.py --model MODEL --data reviews.parquet --channels CHANNEL_SET_DIR
        [--max-reviews-per-class N]

Batch: the local batch transform over ``<channels>/test/test_features.csv``. Endpoint: a real endpoint server
process (``python -m serve.endpoint``, started as a deploy starts it), fed the raw test reviews (same order as the
channel) as JSON over HTTP.
Exit code 0 iff every label matches and every score is within 1e-5.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks"]

TOLERANCE = 1e-5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model folder, model.tar.gz or store URI")
    parser.add_argument("--data", type=Path, required=True, help="reviews.parquet of the dataset")
    parser.add_argument("--channels", type=Path, required=True, help="channel set folder (holds test/)")
    parser.add_argument("--max-reviews-per-class", type=int, default=None, help="as given to data preparation")
    parser.add_argument("--batch-size", type=int, default=256, help="reviews per JSON request to the endpoint")
    args = parser.parse_args(argv)

    from backends.local.endpoints import start_endpoint_server
    from backends.local.storage import LocalArtifactStore
    from backends.local.transform import LocalBatchTransformer
    from backends.models import resolve_model_dir
    from core import processes
    from core.config import get_settings
    from model.artifact import pack_model_dir
    from tasks.parity import raw_test_reviews
    from tasks.transform import load_transform_scores

    settings = get_settings()
    model_dir = resolve_model_dir(args.model, settings)
    reviews = raw_test_reviews(str(args.data), settings, args.max_reviews_per_class)
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        store = LocalArtifactStore(Path(tmp) / "store")
        store.put_file(pack_model_dir(model_dir, Path(tmp) / "model.tar.gz"), "model/model.tar.gz")
        store.put_file(args.channels / "test" / "test_features.csv", "test/test_features.csv")
        started = time.perf_counter()
        out = LocalBatchTransformer(settings, store).transform(
            store.uri("model/model.tar.gz"), store.uri("test/test_features.csv"), "out", lambda line: None
        )
        batch_labels, batch_scores = load_transform_scores(store, out)
        batch_s = time.perf_counter() - started
    if len(batch_labels) != len(reviews):
        print(f"error: {len(reviews)} raw test reviews but {len(batch_labels)} batch rows; wrong --channels/--data?")
        return 2

    folder = Path(tempfile.mkdtemp(prefix="parity-endpoint-"))
    server = start_endpoint_server(settings, model_dir, folder, "parity")
    served: list[dict] = []
    started = time.perf_counter()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", int(server.port or 0), timeout=120)
        for start in range(0, len(reviews), args.batch_size):
            body = json.dumps({"reviews": reviews[start : start + args.batch_size]}).encode()
            conn.request("POST", "/invocations", body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = response.read()
            if response.status != 200:
                print(f"error: endpoint answered {response.status}: {payload[:300]!r}")
                return 2
            served.extend(json.loads(payload))
        conn.close()
    finally:
        processes.stop(server)
        shutil.rmtree(folder, ignore_errors=True)
    endpoint_s = time.perf_counter() - started

    label_mismatch = [i for i, (a, b) in enumerate(zip(batch_labels, served, strict=True)) if a != b["label"]]
    diffs = [abs(s - b["score"]) for s, b in zip(batch_scores.tolist(), served, strict=True)]
    over = sum(d > TOLERANCE for d in diffs)
    print(f"model {model_dir} · {len(reviews):,} raw test reviews")
    print(
        f"batch transform (encoded channel rows): {batch_s:.1f} s · endpoint over HTTP (raw text): {endpoint_s:.1f} s"
    )
    print(f"labels equal: {len(reviews) - len(label_mismatch):,} / {len(reviews):,}")
    print(f"max |score difference|: {max(diffs):.2e} (tolerance {TOLERANCE:g}; {over} over)")
    for index in label_mismatch[:5]:
        print(
            f"  mismatch #{index}: batch {batch_labels[index]} vs endpoint {served[index]} · {reviews[index][:100]!r}"
        )
    return 0 if not label_mismatch and over == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
