"""Benchmark: train the default network on the full IMDB channels; print test accuracy and wall time.

    .venv/bin/python benchmarks/train.py [--compare-reference | --compare-ranks N] [--channels DIR] [--archive FILE]

Channels come from ``--channels`` (a folder with ``train/``, ``validation/``, ``test/`` as the data
stages write them), or are prepared by the data stages themselves (``tasks/data``: default settings —
vocabulary 5,000, max_len 500, 10 % stratified hold-out, seed 42) from ``--archive`` (default: the IMDB mirror
in ``../shared/data``) and cached under ``--home``.

Each network is trained in this process through ``model.train.run_training`` (the same code SageMaker runs)
on ``--threads`` CPU threads, then scored on the 25,000 test reviews through ``model.artifact.load_artifact``.
The wall time covers training and writing the artifact, not data preparation. The machine is shared with other
work, so figures are noisy; compare networks within one run. The last line is machine-readable:
``test_accuracy=0.8843 wall_s=612`` (the default network).

``--compare-ranks N`` trains the default network twice through the local backend — the SageMaker training
toolkit twin (``backends.local.training.LocalTrainer``), exactly as ``sentiflow train`` does — once on one
instance and once on N instances (torch DDP, one rank per instance, ``--threads`` threads each), with the same
hyperparameters, and prints both test accuracies, wall times and the CPU seconds the jobs used. On a machine with
fewer free cores than ranks, N ranks are no faster (the gradient all-reduce of every batch and a second
interpreter cost CPU): the figures say what this machine does, not what N SageMaker instances do.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))
DEFAULT_ARCHIVE = PROJECT_ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"

# The course notebook's settings for the reference network (its epochs are capped by --reference-epochs).
REFERENCE_HYPERPARAMETERS = {
    "architecture": "reference",
    "embedding_dim": 32,
    "hidden_dim": 100,
    "batch_size": 512,
    "learning_rate": 1e-3,
}


def prepare_channels(archive: Path, home: Path) -> Path:
    """The data stages' channels for ``archive`` (cached under ``home``); returns the channel set's folder."""
    from core.config import Settings
    from core.io import sha256_file
    from tasks.data.load import load_archive
    from tasks.data.prepare import prepare_channels as prepare

    started = time.perf_counter()
    channels = prepare(load_archive(archive), sha256_file(archive), Settings(home=home))
    print(
        f"channels {channels.root} ({'cached' if channels.cached else 'prepared'}, "
        f"{time.perf_counter() - started:.0f} s)",
        flush=True,
    )
    return Path(channels.root)


def _load_test(channels: Path) -> tuple[np.ndarray, np.ndarray]:
    import pandas as pd

    rows = pd.read_csv(channels / "test" / "test_features.csv", header=None, dtype=np.int64).to_numpy()
    labels = pd.read_csv(channels / "test" / "test_labels.csv", header=None, dtype=np.int64).to_numpy()[:, 0]
    return rows, labels


def benchmark(channels: Path, hyperparameters: dict, threads: int, label: str) -> tuple[float, float]:
    """Train one network and score it on the test channel; returns (test accuracy, training wall seconds)."""
    from model.artifact import load_artifact
    from model.train import TrainPaths, parse_hyperparameters, run_training

    hyperparameters = {**hyperparameters, "num_threads": threads}
    argv = [f"--{key.replace('_', '-')}={value}" for key, value in hyperparameters.items()]
    config = parse_hyperparameters(argv)
    with tempfile.TemporaryDirectory(prefix=f"bench-{label}-") as tmp:
        paths = TrainPaths(
            model_dir=Path(tmp) / "model",
            train=channels / "train",
            validation=channels / "validation",
            output_dir=Path(tmp) / "output",
            checkpoint_dir=Path(tmp) / "checkpoints",
        )
        started = time.perf_counter()
        metrics = run_training(
            config, paths, log=lambda line: print(f"[{label}] {line}", flush=True), inference_code=False
        )
        wall = time.perf_counter() - started
        model = load_artifact(paths.model_dir)
        rows, labels = _load_test(channels)
        scored = time.perf_counter()
        accuracy = float(((model.predict_proba(rows) >= 0.5).astype(np.int64) == labels).mean())
        score_s = time.perf_counter() - scored
    epochs = metrics["history"]
    per_epoch = sum(entry["epoch_s"] for entry in epochs) / len(epochs)
    print(
        f"[{label}] {json.dumps(hyperparameters, sort_keys=True)}: test_accuracy={accuracy:.4f} "
        f"wall_s={wall:.0f} epochs={len(epochs)} best_epoch={metrics['best_epoch']} "
        f"mean_epoch_s={per_epoch:.1f} test_scoring_s={score_s:.1f}",
        flush=True,
    )
    return accuracy, wall


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
        rows, labels = _load_test(channels)
        accuracy = float(((model.predict_proba(rows) >= 0.5).astype(np.int64) == labels).mean())
    shutil.rmtree(settings.home / "jobs" / name, ignore_errors=True)
    epochs = result.metrics["history"]
    figures = {
        "ranks": ranks,
        "test_accuracy": accuracy,
        "val_accuracy": result.metrics["val_accuracy"],
        "wall_s": wall,
        "cpu_s": cpu,
        "epoch_s": [round(entry["epoch_s"], 1) for entry in epochs],
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=Path, help="Prepared channels (default: prepare from --archive).")
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE, help="IMDB archive to prepare from.")
    parser.add_argument("--home", type=Path, default=Path(tempfile.gettempdir()) / "sentiflow-bench")
    parser.add_argument("--compare-reference", action="store_true", help="Also train the reference network.")
    parser.add_argument(
        "--compare-ranks",
        type=int,
        metavar="N",
        help="Train through the local SageMaker twin on 1 and on N instances (torch DDP); compare accuracy and time.",
    )
    parser.add_argument("--reference-epochs", type=int, default=4, help="Epochs for the reference (notebook: 10).")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (0: one per core).")
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--hp", action="append", default=[], help="Override for the default network: key=value.")
    args = parser.parse_args(argv)

    if args.channels is None:
        if not args.archive.is_file():
            parser.error(f"IMDB archive not found at {args.archive}; pass --archive or --channels")
        args.channels = prepare_channels(args.archive, args.home)
    if args.prepare_only:
        return

    from model.train import default_hyperparameters

    default = default_hyperparameters()
    default.update(dict(item.split("=", 1) for item in args.hp))
    if args.compare_ranks:
        if args.compare_ranks < 2 or args.compare_reference:
            parser.error("--compare-ranks takes N >= 2 and runs alone (not with --compare-reference)")
        compare_ranks(args.channels, default, args.threads, args.compare_ranks, args.home)
        return
    if args.compare_reference:
        reference = {
            **REFERENCE_HYPERPARAMETERS,
            "epochs": args.reference_epochs,
            "patience": args.reference_epochs,
        }
        ref_accuracy, ref_wall = benchmark(args.channels, reference, args.threads, "reference")
    accuracy, wall = benchmark(args.channels, default, args.threads, default["architecture"])
    if args.compare_reference:
        print(
            f"default vs reference: accuracy {accuracy:.4f} vs {ref_accuracy:.4f} "
            f"({(accuracy - ref_accuracy) * 100:+.1f} points), wall {wall:.0f} s vs {ref_wall:.0f} s "
            f"({ref_wall / wall:.2f}x faster)"
        )
    print(f"test_accuracy={accuracy:.4f} wall_s={wall:.0f}")


if __name__ == "__main__":
    main()
