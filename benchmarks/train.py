"""Benchmark: train the default model on the full IMDB data; print test accuracy and training wall time.

    .venv/bin/python benchmarks/train.py [--compare-reference | --compare-ranks N] [--profile] [--archive PATH]
        [--home DIR] [--threads N] [--hp key=value …] [--deployed]

Channels are prepared here from ``--archive`` (default: the IMDB mirror in ``../shared/data``) with the model
package's own functions — each tokenizer version's tokens, the vocabulary of the train split, the data stage's
stratified 10 % hold-out (seed 42) — and cached under ``--home``:

- the default model's: ``words-neg-punct-2``, vocabulary 50,000, whole reviews (``max_len`` 3,000), ``.npz``;
- the reference network's: the notebook's tokens (``reference-bs4-porter-1``), vocabulary 5,000, 500 tokens.

Each network is trained in this process through ``model.train.run_training`` (the code SageMaker runs) on
``--threads`` CPU threads, then scored on the 25,000 test reviews through ``model.artifact.load_artifact``. The wall
time covers training and writing the artifact, not data preparation.

``--compare-reference`` prints, in the same run, beside the default model: the reference network (the notebook's
``LSTMClassifier(32, 100)``, its settings, ``--reference-epochs`` epochs) and the TF-IDF baseline
(``evaluation.baseline``: uni+bigrams, logistic regression) on the same tokens as the default model (the id rows
of whole reviews), plus the same baseline on the reference tokens for context; then the acceptance line (default
≥ 0.900 test accuracy, ≥ baseline + 0.005, trained in ≤ 600 s). ``--deployed`` also trains the previous default,
``bilstm-pool`` (hidden 128) on the reference channels. ``--behaviour`` runs the behavioural suite
(``evaluation.behaviour``) on the default model. ``--profile`` measures the default model's inference on one core:
tokenize, encode and forward reviews/s (also with the LSTM skipped, ``mix 0``, and with a 128-token LSTM
window), raw text → score in requests of 256, and single-review latency.

The machine is shared with other work, so figures are noisy: the load average is printed at the start and the
end; compare networks within one run. The last line is machine-readable: ``test_accuracy=0.9201 wall_s=224``
(the default model).

``--compare-ranks N`` trains the default model twice through the local backend — the SageMaker training toolkit
twin (``backends.local.training.LocalTrainer``), exactly as ``sentiflow train`` does — once on one instance and once
on N instances (torch DDP, one rank per instance, ``--threads`` threads each), with the same hyperparameters, and
prints both test accuracies, wall times and the CPU seconds the jobs used. On a machine with fewer free cores than
ranks, N ranks are no faster: the figures say what this machine does, not what N SageMaker instances do.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))
DEFAULT_ARCHIVE = PROJECT_ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
if not DEFAULT_ARCHIVE.is_file():  # a worktree one level deeper than the project root
    DEFAULT_ARCHIVE = PROJECT_ROOT.parents[1] / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"

# The default model's channels (tokenizer version, vocabulary, max_len) and the reference network's (the notebook's).
DEFAULT_CHANNELS = ("words-neg-punct-2", 50_000, 3_000)
REFERENCE_CHANNELS = ("reference-bs4-porter-1", 5_000, 500)
# The course notebook's settings for the reference network (its epochs are capped by --reference-epochs).
REFERENCE_HYPERPARAMETERS = {
    "architecture": "reference",
    "embedding_dim": 32,
    "hidden_dim": 100,
    "batch_size": 512,
    "learning_rate": 1e-3,
}
DEPLOYED_HYPERPARAMETERS = {"architecture": "bilstm-pool", "hidden_dim": 128, "embedding_dim": 64}
ACCEPT_ACCURACY, ACCEPT_MARGIN, ACCEPT_SECONDS = 0.900, 0.005, 600.0
SCORE_CHUNK = 1_000


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores"


def read_reviews(archive: Path) -> Any:
    from tasks.data.load import load_archive

    started = time.perf_counter()
    frame = load_archive(archive)
    print(f"read {len(frame):,} reviews from {archive} in {time.perf_counter() - started:.1f} s", flush=True)
    return frame


def prepare_channels(frame: Any, archive_sha256: str, home: Path, version: str, vocab_size: int, max_len: int) -> Path:
    """``train/`` (train.npz + preprocessing state), ``validation/``, ``test/`` for one tokenizer version (cached)."""
    from model.channels import Channel, write_channel
    from model.preprocessing import PreprocessingConfig, Preprocessor, build_vocabulary, encode_ids, tokenize_many
    from tasks.data.prepare import stratified_holdout

    code = b"".join((PROJECT_ROOT / "model" / name).read_bytes() for name in ("preprocessing.py", "channels.py"))
    key = hashlib.sha256(f"{archive_sha256} {version} {vocab_size} {max_len}".encode() + code).hexdigest()[:16]
    root = home / "bench-channels" / key
    if (root / "done").is_file():
        print(f"channels {version} ({vocab_size:,} words, max_len {max_len:,}): cached {root}", flush=True)
        return root
    started = time.perf_counter()
    train = frame[frame["split"] == "train"]
    test = frame[frame["split"] == "test"]
    train_tokens = tokenize_many(train["review"].tolist(), version, workers=0)
    test_tokens = tokenize_many(test["review"].tolist(), version, workers=0)
    tokenize_s = time.perf_counter() - started
    word_dict = build_vocabulary(train_tokens, vocab_size)
    config = PreprocessingConfig(vocab_size=vocab_size, max_len=max_len, tokenizer_version=version)
    train_labels, test_labels = train["label"].to_numpy(), test["label"].to_numpy()
    fit, validation = stratified_holdout(train_labels, 0.1, 42)
    lengths, ids = encode_ids(train_tokens, word_dict, max_len)
    everything = Channel(lengths, ids, train_labels)
    Preprocessor(word_dict, config).save(root / "train")
    write_channel(root / "train" / "train.npz", everything.take(fit))
    write_channel(root / "validation" / "validation.npz", everything.take(validation))
    write_channel(root / "test" / "test.npz", Channel(*encode_ids(test_tokens, word_dict, max_len), test_labels))
    (root / "done").write_text("")
    print(
        f"channels {version} ({vocab_size:,} words, max_len {max_len:,}): prepared in "
        f"{time.perf_counter() - started:.1f} s (tokenize {tokenize_s:.1f} s, mean "
        f"{np.mean([len(t) for t in train_tokens]):.0f} tokens) → {root}",
        flush=True,
    )
    return root


def score(model: Any, channel: Any) -> np.ndarray:
    """P(positive) of every review of ``channel`` through the artifact's prediction path."""
    max_len = model.preprocessor.max_len
    out = np.empty(len(channel))
    for start in range(0, len(channel), SCORE_CHUNK):
        index = np.arange(start, min(start + SCORE_CHUNK, len(channel)))
        out[index] = model.predict_proba(channel.rows(index, max_tokens=max_len))
    return out


def benchmark(channels: Path, hyperparameters: dict, threads: int, label: str) -> dict[str, Any]:
    """Train one network and score it on the test channel."""
    from model.artifact import load_artifact
    from model.channels import read_channel
    from model.train import TrainPaths, parse_hyperparameters, run_training

    hyperparameters = {**hyperparameters, "num_threads": threads}
    config = parse_hyperparameters([f"--{key}={value}" for key, value in hyperparameters.items()])
    with tempfile.TemporaryDirectory(prefix=f"bench-{label}-") as tmp:
        paths = TrainPaths(
            model_dir=Path(tmp) / "model",
            train=channels / "train",
            validation=channels / "validation",
            output_dir=Path(tmp) / "output",
            checkpoint_dir=Path(tmp) / "checkpoints",
        )
        started, cpu = time.perf_counter(), time.process_time()
        metrics = run_training(
            config, paths, log=lambda line: print(f"[{label}] {line}", flush=True), inference_code=False
        )
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        model = load_artifact(paths.model_dir)
        test = read_channel(channels / "test", "test")
        scored = time.perf_counter()
        scores = score(model, test)
        score_s = time.perf_counter() - scored
        accuracy = float(((scores >= 0.5).astype(np.int64) == test.labels).mean())
        parameters = sum(p.numel() for p in model.network.parameters())
        size = (paths.model_dir / "model.pth").stat().st_size
    result = {
        "label": label,
        "accuracy": accuracy,
        "wall_s": wall,
        "cpu_s": cpu,
        "parameters": parameters,
        "model_bytes": size,
        "epochs": metrics["epochs_run"],
        "best_epoch": metrics["best_epoch"],
        "val_accuracy": metrics["val_accuracy"],
        "test_scoring_s": score_s,
        "model": model,
        "metrics": metrics,
    }
    extra = ""
    if "mix_deep_share" in metrics:
        extra = (
            f" mix_deep_share={metrics['mix_deep_share']:.2f} val_wide={metrics['val_accuracy_wide']:.4f} "
            f"val_deep={metrics['val_accuracy_deep']}"
        )
    print(
        f"[{label}] {json.dumps(hyperparameters, sort_keys=True)}: test_accuracy={accuracy:.4f} wall_s={wall:.0f} "
        f"cpu_s={cpu:.0f} parameters={parameters:,} model_bytes={size:,} epochs={metrics['epochs_run']} "
        f"best_epoch={metrics['best_epoch']} test_scoring_s={score_s:.1f}{extra}",
        flush=True,
    )
    return result


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # descendants, as each waits for its own
    return usage.ru_utime + usage.ru_stime


def benchmark_ranks(channels: Path, hyperparameters: dict, threads: int, ranks: int, home: Path) -> dict:
    """Train through the local backend (the SageMaker toolkit twin) on ``ranks`` instances; score on the test set."""
    from backends.base import TrainingSpec
    from backends.local.storage import LocalArtifactStore
    from backends.local.training import LocalTrainer
    from core.config import Settings
    from model.artifact import load_artifact, unpack_model
    from model.channels import read_channel

    label = f"{ranks}-rank"
    settings = Settings(home=home, train_instance_count=ranks)
    store = LocalArtifactStore(settings.store_dir)
    name = f"bench-{ranks}rank-{int(time.time())}"
    spec = TrainingSpec(
        job_name=name,
        hyperparameters={**hyperparameters, "num_threads": threads},
        channels={channel: (channels / channel).resolve().as_uri() for channel in ("train", "validation")},
        output_prefix=f"benchmarks/{name}",
    )
    load = os.getloadavg()[0]
    cpu, started = _children_cpu_s(), time.perf_counter()
    result = LocalTrainer(settings, store).train(
        spec, lambda line: "epoch=" in line and print(f"[{label}] {line}", flush=True)
    )
    wall, cpu = time.perf_counter() - started, _children_cpu_s() - cpu
    with tempfile.TemporaryDirectory(prefix=f"bench-{label}-") as tmp:
        model = load_artifact(unpack_model(store.path(store.key_from_uri(result.model_uri)), Path(tmp)))
        test = read_channel(channels / "test", "test")
        accuracy = float(((score(model, test) >= 0.5).astype(np.int64) == test.labels).mean())
    shutil.rmtree(settings.home / "jobs" / name, ignore_errors=True)
    figures = {
        "ranks": ranks,
        "test_accuracy": accuracy,
        "val_accuracy": result.metrics["val_accuracy"],
        "wall_s": wall,
        "cpu_s": cpu,
        "best_epoch": result.metrics["best_epoch"],
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }
    print(f"[{label}] {json.dumps(figures)}", flush=True)
    return figures


def compare_ranks(channels: Path, hyperparameters: dict, threads: int, ranks: int, home: Path) -> None:
    one = benchmark_ranks(channels, hyperparameters, threads, 1, home)
    many = benchmark_ranks(channels, hyperparameters, threads, ranks, home)
    print(
        f"1 rank vs {ranks} ranks (local SageMaker twin, {threads} thread(s) per rank, {os.cpu_count()} cores): "
        f"test accuracy {one['test_accuracy']:.4f} vs {many['test_accuracy']:.4f} "
        f"({(many['test_accuracy'] - one['test_accuracy']) * 100:+.2f} points), "
        f"wall {one['wall_s']:.0f} s vs {many['wall_s']:.0f} s ({one['wall_s'] / many['wall_s']:.2f}x), "
        f"CPU {one['cpu_s']:.0f} s vs {many['cpu_s']:.0f} s "
        f"(load average {one['load_before']:.1f}-{many['load_after']:.1f})"
    )
    print(
        f"test_accuracy_1={one['test_accuracy']:.4f} test_accuracy_{ranks}={many['test_accuracy']:.4f} "
        f"wall_s_1={one['wall_s']:.0f} wall_s_{ranks}={many['wall_s']:.0f}"
    )


def baseline(channels: Path, label: str) -> dict[str, Any]:
    """The evaluation stage's TF-IDF baseline fitted on the train channel's id tokens, scored on the test channel."""
    from evaluation.baseline import rows_to_tokens, tfidf_baseline
    from model.channels import read_channel

    train, test = read_channel(channels / "train", "train"), read_channel(channels / "test", "test")
    started = time.perf_counter()
    result = tfidf_baseline(rows_to_tokens(train), train.labels, rows_to_tokens(test), test.labels)
    seconds = time.perf_counter() - started
    accuracy = float(result.metrics["accuracy"])
    print(f"[{label}] test_accuracy={accuracy:.4f} features={result.features:,} wall_s={seconds:.0f}", flush=True)
    return {"label": label, "accuracy": accuracy, "wall_s": seconds, "features": result.features}


def profile(model: Any, reviews: list[str], lstm_window: int = 128) -> list[tuple[str, float]]:
    """Inference figures of ``model`` on one core (torch threads 1): reviews/s per stage, latency."""
    import torch

    torch.set_num_threads(1)
    pre = model.preprocessor

    def timed(fn: Any, repeat: int = 2) -> float:
        fn()
        best = float("inf")
        for _ in range(repeat):
            started = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - started)
        return best

    from model.preprocessing import encode_many

    n = len(reviews)
    tokens = [pre.tokenize(review) for review in reviews]
    rows = encode_many(tokens, pre.word_dict, pre.max_len)
    figures = [
        ("tokenize", n / timed(lambda: [pre.tokenize(review) for review in reviews])),
        ("encode", n / timed(lambda: encode_many(tokens, pre.word_dict, pre.max_len))),
        ("forward (whole model)", n / timed(lambda: model.predict_proba(rows))),
    ]
    network = model.network
    if hasattr(network, "deep_scale"):
        wide_only = copy.copy(model)
        wide_only.network = copy.deepcopy(network)
        with torch.no_grad():
            wide_only.network.deep_scale.fill_(0.0)
        figures.append(("forward, LSTM skipped (mix 0)", n / timed(lambda: wide_only.predict_proba(rows))))
        short = copy.copy(model)
        short.network = copy.deepcopy(network)
        short.network.lstm_len = lstm_window
        figures.append(
            (f"forward, LSTM window {lstm_window} (speed only)", n / timed(lambda: short.predict_proba(rows)))
        )

    def raw() -> None:
        for start in range(0, n, 256):
            model.predict_texts(reviews[start : start + 256])

    figures.append(("raw text -> score, requests of 256", n / timed(raw, repeat=1)))
    latencies = []
    for review in reviews[:500]:
        started = time.perf_counter()
        model.predict_texts([review])
        latencies.append(time.perf_counter() - started)
    figures.append(("one review: p50 ms", float(np.median(latencies) * 1000)))
    figures.append(("one review: p99 ms", float(np.percentile(latencies, 99) * 1000)))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="IMDB archive to prepare from.")
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "sentiflow-bench")
    parser.add_argument("--compare-reference", action="store_true", help="Also the reference network + baselines.")
    parser.add_argument(
        "--compare-ranks",
        type=int,
        metavar="N",
        help="Train through the local SageMaker twin on 1 and on N instances (torch DDP); compare accuracy and time.",
    )
    parser.add_argument("--reference-epochs", type=int, default=4, help="Epochs for the reference (notebook: 10).")
    parser.add_argument("--deployed", action="store_true", help="Also bilstm-pool, the previous default.")
    parser.add_argument("--profile", action="store_true", help="Inference throughput of the default, one core.")
    parser.add_argument("--behaviour", action="store_true", help="The behavioural suite on the default model.")
    parser.add_argument("--profile-reviews", type=int, default=5_000)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: one per core).")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--hp", action="append", default=[], help="Override for the default model: key=value.")
    args = parser.parse_args(argv)
    if not args.archive.is_file():
        parser.error(f"IMDB archive not found at {args.archive}; pass --archive")
    print(f"start: {load()}", flush=True)

    from core.io import sha256_file
    from model.train import default_hyperparameters

    frame = read_reviews(args.archive)
    digest = sha256_file(args.archive)
    default_channels = prepare_channels(frame, digest, args.home, *DEFAULT_CHANNELS)
    reference_channels = None
    if args.compare_reference or args.deployed:
        reference_channels = prepare_channels(frame, digest, args.home, *REFERENCE_CHANNELS)
    if args.prepare_only:
        return 0

    default = default_hyperparameters()
    default.update(dict(item.split("=", 1) for item in args.hp))
    if args.compare_ranks:
        if args.compare_ranks < 2 or args.compare_reference:
            parser.error("--compare-ranks takes N >= 2 and runs alone (not with --compare-reference)")
        compare_ranks(default_channels, default, args.threads, args.compare_ranks, args.home)
        return 0
    results = [benchmark(default_channels, default, args.threads, default["architecture"])]
    ours = results[0]
    if args.behaviour:
        from evaluation.behaviour import run_suite

        suite = run_suite(ours["model"].predict_texts)
        print(f"behaviour of {ours['label']}: pass rate {suite.pass_rate:.4f} ({suite.passed}/{suite.total})")
        for check in suite.checks:
            print(f"  {check.kind} {check.name:<34}{check.passed:>4}/{check.total:<4} {check.failures[:1]}")
        for text in ("Not good. I would not recommend it.", "A wonderful film", "This movie isn't bad at all."):
            print(f"  P(positive | {text!r}) = {float(ours['model'].predict_texts([text])[0]):.3f}")
    if args.compare_reference:
        assert reference_channels is not None
        reference = {**REFERENCE_HYPERPARAMETERS, "epochs": args.reference_epochs, "patience": args.reference_epochs}
        results.append(benchmark(reference_channels, reference, args.threads, "reference"))
    if args.deployed:
        assert reference_channels is not None
        results.append(benchmark(reference_channels, DEPLOYED_HYPERPARAMETERS, args.threads, "bilstm-pool"))
    baselines = []
    if args.compare_reference:
        assert reference_channels is not None
        baselines.append(baseline(default_channels, f"tf-idf on {DEFAULT_CHANNELS[0]} tokens"))
        baselines.append(baseline(reference_channels, f"tf-idf on {REFERENCE_CHANNELS[0]} tokens"))

    print(f"\nend: {load()}")
    print(f"{'model':<44}{'test accuracy':>14}{'training wall':>15}{'parameters':>13}")
    for result in results:
        print(f"{result['label']:<44}{result['accuracy']:>14.4f}{result['wall_s']:>14.0f}s{result['parameters']:>13,}")
    for result in baselines:
        print(f"{result['label']:<44}{result['accuracy']:>14.4f}{result['wall_s']:>14.0f}s{result['features']:>13,}")
    if args.compare_reference:
        same_tokens = baselines[0]["accuracy"]
        checks = [
            (f"test accuracy {ours['accuracy']:.4f} >= {ACCEPT_ACCURACY:.3f}", ours["accuracy"] >= ACCEPT_ACCURACY),
            (
                f"test accuracy {ours['accuracy']:.4f} >= baseline {same_tokens:.4f} + {ACCEPT_MARGIN}",
                ours["accuracy"] >= same_tokens + ACCEPT_MARGIN,
            ),
            (f"training wall {ours['wall_s']:.0f} s <= {ACCEPT_SECONDS:.0f} s", ours["wall_s"] <= ACCEPT_SECONDS),
        ]
        print(
            f"acceptance ({ours['label']}): "
            + "; ".join(f"{text} {'PASS' if ok else 'FAIL'}" for text, ok in checks)
            + f" (vs reference network {ours['accuracy'] - results[1]['accuracy']:+.4f})"
        )
    if args.profile:
        test_frame = frame[frame["split"] == "test"]
        rng = np.random.default_rng(0)
        picked = rng.choice(len(test_frame), min(args.profile_reviews, len(test_frame)), replace=False)
        reviews = [test_frame["review"].iloc[i] for i in picked]
        print(f"\ninference of {ours['label']} on one core, {len(reviews):,} random test reviews ({load()}):")
        for name, value in profile(ours["model"], reviews):
            print(f"  {name:<48}{value:>10,.2f}" if "ms" in name else f"  {name:<48}{value:>10,.0f} reviews/s")
    print(f"test_accuracy={ours['accuracy']:.4f} wall_s={ours['wall_s']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
