"""SageMaker script-mode training entry point for the sentiment network.

Run it the way SageMaker does (``python train.py --epochs 10 --hidden-dim 128 …``) with locations from
the SageMaker environment (``SM_MODEL_DIR``, ``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION``,
``SM_OUTPUT_DATA_DIR``, ``SM_NUM_GPUS``, ``SM_HOSTS``, ``SM_CURRENT_HOST``; checkpoints in
``/opt/ml/checkpoints`` or ``--checkpoint-dir`` / ``SM_CHECKPOINT_DIR``), or by hand from the project root
(``python model/train.py --train DIR --validation DIR``).

Bad hyperparameters, a missing channel or malformed channel data end the run with ``error: …`` on stderr and
exit code 2 before any training. Each epoch prints exactly one line matched by ``METRIC_DEFINITIONS``::

    epoch=3 train_loss=0.3121 val_loss=0.2987 val_accuracy=0.8810 epoch_s=41.2

A checkpoint is written after every epoch and training resumes from it (spot interruptions). The model folder
receives ``model.pth`` (best epoch by validation loss), ``model_info.json``, ``word_dict.json``,
``preprocessing.json``, ``metrics.json`` and ``code/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: make the folder holding model/ importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from model.artifact import (  # noqa: E402
    ArtifactError,
    atomic_torch_save,
    atomic_write_json,
    check_inference_sources,
    write_inference_code,
)
from model.network import ARCHITECTURES, DEFAULT_ARCHITECTURE, build_network, returns_logits  # noqa: E402
from model.preprocessing import Preprocessor  # noqa: E402

Log = Callable[[str], None]
CHECKPOINT_NAME = "checkpoint.pth"
CHECKPOINT_FORMAT = 1
EVAL_BATCH_SIZE = 256
BUCKET_BATCHES = 50  # length-sorting window, in batches: little padding, still random batch composition

EPOCH_LINE = re.compile(
    r"^epoch=(?P<epoch>\d+) train_loss=(?P<train_loss>[0-9.]+) val_loss=(?P<val_loss>[0-9.]+) "
    r"val_accuracy=(?P<val_accuracy>[0-9.]+) epoch_s=(?P<epoch_s>[0-9.]+)$"
)
METRIC_DEFINITIONS: list[dict[str, str]] = [
    {"Name": "epoch", "Regex": r"^epoch=(\d+) "},
    {"Name": "train:loss", "Regex": r"train_loss=([0-9.]+)"},
    {"Name": "validation:loss", "Regex": r"val_loss=([0-9.]+)"},
    {"Name": "validation:accuracy", "Regex": r"val_accuracy=([0-9.]+)"},
    {"Name": "epoch:seconds", "Regex": r"epoch_s=([0-9.]+)"},
]


class TrainingError(Exception):
    """Bad hyperparameters, locations or channel data: reported on one line, exit code 2."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters (SageMaker passes them as ``--name value`` flags)."""

    architecture: str = DEFAULT_ARCHITECTURE
    epochs: int = 4
    batch_size: int = 64
    embedding_dim: int = 64
    hidden_dim: int = 128
    learning_rate: float = 2e-3
    dropout: float = 0.3
    patience: int = 2
    max_grad_norm: float = 5.0
    seed: int = 42
    # Intra-op CPU threads; 0 = torch's default (one per core). 1 by measurement: LSTM steps are too small to
    # split, and spinning threads made an epoch 20x slower on a shared 2-core machine.
    num_threads: int = 1

    def validate(self) -> TrainConfig:
        problems = []
        if self.architecture not in ARCHITECTURES:
            problems.append(f"--architecture {self.architecture!r} is unknown (choose {', '.join(ARCHITECTURES)})")
        for name in ("epochs", "batch_size", "embedding_dim", "hidden_dim", "patience"):
            if getattr(self, name) < 1:
                problems.append(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            problems.append(f"--learning-rate must be a positive number, got {self.learning_rate}")
        if not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.max_grad_norm < 0 or self.num_threads < 0:
            problems.append("--max-grad-norm and --num-threads must not be negative")
        if problems:
            raise TrainingError("bad hyperparameters: " + "; ".join(problems))
        return self

    def resume_key(self) -> dict[str, Any]:
        """The settings a checkpoint must share to be resumed (epochs/patience/threads may change)."""
        return {k: v for k, v in asdict(self).items() if k not in ("epochs", "patience", "num_threads")}


def default_hyperparameters() -> dict[str, Any]:
    return asdict(TrainConfig())


@dataclass(frozen=True)
class TrainPaths:
    model_dir: Path
    train: Path
    validation: Path
    output_dir: Path
    checkpoint_dir: Path


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise TrainingError(f"bad command line: {message}")


def _parser() -> _Parser:
    parser = _Parser(prog="train.py", description="Train the sentiment network (SageMaker script mode).")
    types = {int: int, float: float, str: str}
    for item in fields(TrainConfig):
        flag = item.name.replace("_", "-")
        names = [f"--{flag}"] + ([f"--{item.name}"] if flag != item.name else [])
        if item.name == "learning_rate":
            names.append("--lr")
        kind = types[type(item.default)]
        parser.add_argument(*names, dest=item.name, type=kind, default=item.default)
    for name, env in (
        ("model-dir", "SM_MODEL_DIR"),
        ("train", "SM_CHANNEL_TRAIN"),
        ("validation", "SM_CHANNEL_VALIDATION"),
        ("output-data-dir", "SM_OUTPUT_DATA_DIR"),
        ("checkpoint-dir", "SM_CHECKPOINT_DIR"),
    ):
        names = [f"--{name}"] + ([f"--{name.replace('-', '_')}"] if "-" in name else [])
        parser.add_argument(*names, dest=name.replace("-", "_"), default=None, help=f"default: ${env}")
    parser.add_argument("--job-name", default=None, help="default: $TRAINING_JOB_NAME")
    return parser


def parse_hyperparameters(argv: Sequence[str]) -> TrainConfig:
    """Hyperparameters from SageMaker-style flags (location flags are ignored here)."""
    args = _parser().parse_args(list(argv))
    return TrainConfig(**{item.name: getattr(args, item.name) for item in fields(TrainConfig)}).validate()


def resolve_paths(argv: Sequence[str], env: dict[str, str]) -> TrainPaths:
    """Locations from flags, then the SageMaker environment, then defaults (``/opt/ml`` or ``./job``)."""
    args = _parser().parse_args(list(argv))
    base = Path("/opt/ml") if Path("/opt/ml").is_dir() else Path("job")

    def pick(flag: str | None, var: str, default: Path) -> Path:
        return Path(flag or env.get(var) or default)

    return TrainPaths(
        model_dir=pick(args.model_dir, "SM_MODEL_DIR", base / "model"),
        train=pick(args.train, "SM_CHANNEL_TRAIN", base / "input" / "data" / "train"),
        validation=pick(args.validation, "SM_CHANNEL_VALIDATION", base / "input" / "data" / "validation"),
        output_dir=pick(args.output_data_dir, "SM_OUTPUT_DATA_DIR", base / "output" / "data"),
        checkpoint_dir=pick(args.checkpoint_dir, "SM_CHECKPOINT_DIR", base / "checkpoints"),
    )


def check_hosts(env: dict[str, str]) -> None:
    """Refuse multi-host jobs: this script trains on one machine."""
    try:
        hosts = json.loads(env.get("SM_HOSTS") or "[]")
    except ValueError:
        hosts = None
    if not isinstance(hosts, list):
        raise TrainingError(f"SM_HOSTS is not a JSON list of host names: {env.get('SM_HOSTS')!r}")
    if len(hosts) > 1:
        raise TrainingError(
            f"SM_HOSTS lists {len(hosts)} hosts ({', '.join(hosts)}); distributed training is not supported, "
            "run the job with instance_count=1"
        )


def pick_device(env: dict[str, str]) -> torch.device:
    wants_gpu = int(env.get("SM_NUM_GPUS") or 0) > 0 or "SM_NUM_GPUS" not in env
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


# --- data --------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> np.ndarray:
    try:
        import pandas as pd

        return pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    except ImportError:  # pragma: no cover - containers without pandas
        return np.loadtxt(path, delimiter=",", dtype=np.int64, ndmin=2)


def read_channel(folder: Path, name: str, max_len: int, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, rows)`` of ``folder/<name>.csv``; raises TrainingError naming what is wrong."""
    path = folder / f"{name}.csv"
    if not path.is_file():
        raise TrainingError(
            f"channel {name!r}: {path} not found; pass the {name} channel (SM_CHANNEL_{name.upper()} or --{name})"
        )
    try:
        table = _read_csv(path)
    except ValueError as error:
        raise TrainingError(f"channel {name!r}: {path} is not an integer CSV: {error}") from error
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] != max_len + 2:
        raise TrainingError(
            f"channel {name!r}: {path} has shape {table.shape}, expected (n >= 1, {max_len + 2}) rows "
            f"'label,length,ids…' for max_len {max_len}; re-run data preparation"
        )
    labels, rows = table[:, 0], table[:, 1:]
    if not np.isin(labels, (0, 1)).all():
        raise TrainingError(f"channel {name!r}: {path} has labels other than 0/1 in column 1")
    if rows[:, 0].min() < 0 or rows[:, 0].max() > max_len or rows[:, 1:].min() < 0 or rows[:, 1:].max() >= vocab_size:
        raise TrainingError(
            f"channel {name!r}: {path} has lengths outside [0, {max_len}] or ids outside [0, {vocab_size}); "
            "it does not match preprocessing.json — re-run data preparation"
        )
    return labels.astype(np.float32), rows


def load_preprocessor(train_dir: Path) -> Preprocessor:
    for required in ("word_dict.json", "preprocessing.json"):
        if not (train_dir / required).is_file():
            raise TrainingError(f"channel 'train': {train_dir / required} not found; re-run data preparation")
    try:
        return Preprocessor.from_dir(train_dir)
    except (ValueError, KeyError, TypeError) as error:
        raise TrainingError(f"channel 'train': bad preprocessing state in {train_dir}: {error}") from error


def train_batches(lengths: np.ndarray, batch_size: int, seed: int, bucketed: bool) -> list[np.ndarray]:
    """Shuffled batches of row indices; when ``bucketed``, rows of similar length share a batch."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    if bucketed:
        window = batch_size * BUCKET_BATCHES
        order = np.concatenate(
            [
                chunk[np.argsort(lengths[chunk], kind="stable")]
                for chunk in np.split(order, range(window, len(order), window))
            ]
        )
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if bucketed:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def _batch(rows: torch.Tensor, index: np.ndarray, trim: bool) -> torch.Tensor:
    batch = rows[torch.from_numpy(index)]
    return batch[:, : int(batch[:, 0].max().clamp(min=1)) + 1] if trim else batch


# --- the loop ----------------------------------------------------------------------------------------


@dataclass
class TrainState:
    epoch: int = 0
    best_epoch: int = 0
    best_val_loss: float = math.inf
    bad_epochs: int = 0
    stopped_early: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


def _loss_fn(network: nn.Module) -> nn.Module:
    return nn.BCEWithLogitsLoss() if returns_logits(network) else nn.BCELoss()


def evaluate(network: nn.Module, rows: torch.Tensor, labels: torch.Tensor, device: torch.device) -> tuple[float, float]:
    """(mean loss, accuracy) over all rows, in length-sorted batches."""
    network.eval()
    loss_fn = _loss_fn(network)
    order = np.argsort(rows[:, 0].numpy(), kind="stable")
    total_loss, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(order), EVAL_BATCH_SIZE):
            index = order[start : start + EVAL_BATCH_SIZE]
            out = network(_batch(rows, index, trim=True).to(device))
            target = labels[torch.from_numpy(index)].to(device)
            total_loss += float(loss_fn(out, target)) * len(index)
            predicted = (out > 0) if returns_logits(network) else (out > 0.5)
            correct += int((predicted.float() == target).sum())
    return total_loss / len(order), correct / len(order)


def train_epoch(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    rows: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
) -> float:
    network.train()
    loss_fn = _loss_fn(network)
    bucketed = bool(getattr(network, "bucketed", False))
    batches = train_batches(rows[:, 0].numpy(), config.batch_size, config.seed * 1000 + epoch, bucketed)
    total = 0.0
    for index in batches:
        optimizer.zero_grad(set_to_none=True)
        out = network(_batch(rows, index, trim=bucketed).to(device))
        loss = loss_fn(out, labels[torch.from_numpy(index)].to(device))
        loss.backward()
        if config.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(network.parameters(), config.max_grad_norm)
        optimizer.step()
        total += loss.item() * len(index)
    return total / len(rows)


def _state_copy(network: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().cpu().clone() for key, value in network.state_dict().items()}


def save_checkpoint(
    path: Path,
    config: TrainConfig,
    state: TrainState,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    best: dict[str, torch.Tensor],
) -> None:
    atomic_torch_save(
        {
            "format": CHECKPOINT_FORMAT,
            "config": json.dumps(config.resume_key(), sort_keys=True),
            "state": json.dumps(asdict(state)),
            "model": _state_copy(network),
            "optimizer": optimizer.state_dict(),
            "best_model": best,
            "rng": torch.get_rng_state(),
        },
        path,
    )


def load_checkpoint(path: Path, config: TrainConfig, log: Log) -> dict[str, Any] | None:
    """The checkpoint at ``path`` if it belongs to this configuration, else None (training starts afresh)."""
    if not path.is_file():
        return None
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT or payload.get("config") != json.dumps(
        config.resume_key(), sort_keys=True
    ):
        log(f"ignoring checkpoint {path}: written with other hyperparameters; starting from epoch 1")
        return None
    return payload


def model_info(config: TrainConfig, preprocessor: Preprocessor, job_name: str | None) -> dict[str, Any]:
    network = build_network({**asdict(config), "vocab_size": preprocessor.config.vocab_size})
    return {
        "format_version": 1,
        "architecture": config.architecture,
        "vocab_size": preprocessor.config.vocab_size,
        "max_len": preprocessor.max_len,
        "embedding_dim": config.embedding_dim,
        "hidden_dim": config.hidden_dim,
        "dropout": config.dropout,
        "returns_logits": returns_logits(network),
        "hyperparameters": asdict(config),
        "version": job_name,
        "torch_version": torch.__version__.split("+")[0],
    }


def run_training(
    config: TrainConfig,
    paths: TrainPaths,
    log: Log = print,
    device: torch.device | None = None,
    job_name: str | None = None,
    inference_code: bool = True,
) -> dict[str, Any]:
    """Train, checkpointing every epoch, and write the model folder; returns the metrics written.

    ``inference_code=False`` leaves out ``code/`` (benchmarks only: the artifact is then not deployable).
    """
    started = time.perf_counter()
    device = device or torch.device("cpu")
    if inference_code:
        try:
            check_inference_sources()
        except ArtifactError as error:
            raise TrainingError(str(error)) from error
    preprocessor = load_preprocessor(paths.train)
    vocab_size, max_len = preprocessor.config.vocab_size, preprocessor.max_len
    train_y, train_x = read_channel(paths.train, "train", max_len, vocab_size)
    val_y, val_x = read_channel(paths.validation, "validation", max_len, vocab_size)

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    info = model_info(config, preprocessor, job_name)
    network = build_network(info).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    rows, labels = torch.from_numpy(train_x), torch.from_numpy(train_y)
    val_rows, val_labels = torch.from_numpy(val_x), torch.from_numpy(val_y)

    state, best = TrainState(), _state_copy(network)
    checkpoint_path = paths.checkpoint_dir / CHECKPOINT_NAME
    checkpoint = load_checkpoint(checkpoint_path, config, log)
    if checkpoint is not None:
        network.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        best = checkpoint["best_model"]
        state = TrainState(**json.loads(checkpoint["state"]))
        torch.set_rng_state(checkpoint["rng"])
        log(f"resuming from checkpoint {checkpoint_path} after epoch {state.epoch}")
    log(
        f"training {config.architecture} on {len(train_y)} rows (validation {len(val_y)}), device {device}, "
        f"threads {torch.get_num_threads()}, epochs {config.epochs}"
    )

    while state.epoch < config.epochs and not state.stopped_early:
        epoch_started = time.perf_counter()
        epoch = state.epoch + 1
        train_loss = train_epoch(network, optimizer, rows, labels, config, epoch, device)
        val_loss, val_accuracy = evaluate(network, val_rows, val_labels, device)
        seconds = time.perf_counter() - epoch_started
        state.epoch = epoch
        state.history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "epoch_s": seconds,
            }
        )
        if val_loss < state.best_val_loss:
            state.best_epoch, state.best_val_loss, state.bad_epochs = epoch, val_loss, 0
            best = _state_copy(network)
        else:
            state.bad_epochs += 1
            state.stopped_early = state.bad_epochs >= config.patience
        log(
            f"epoch={epoch} train_loss={train_loss:.4f} val_loss={val_loss:.4f} "
            f"val_accuracy={val_accuracy:.4f} epoch_s={seconds:.1f}"
        )
        save_checkpoint(checkpoint_path, config, state, network, optimizer, best)
    if state.stopped_early:
        log(f"early stop: no validation-loss improvement for {config.patience} epochs")

    best_entry = next(entry for entry in state.history if entry["epoch"] == state.best_epoch)
    metrics = {
        "history": state.history,
        "best_epoch": state.best_epoch,
        "val_loss": best_entry["val_loss"],
        "val_accuracy": best_entry["val_accuracy"],
        "train_loss": best_entry["train_loss"],
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "train_rows": len(train_y),
        "validation_rows": len(val_y),
        "device": str(device),
        "duration_s": time.perf_counter() - started,
    }
    write_model_dir(paths, best, info, metrics, inference_code)
    log(f"wrote model to {paths.model_dir} (best epoch {state.best_epoch}, val_accuracy={metrics['val_accuracy']:.4f})")
    return metrics


def write_model_dir(
    paths: TrainPaths, best: dict[str, torch.Tensor], info: dict, metrics: dict, inference_code: bool = True
) -> None:
    """The SageMaker model folder: weights, model info, preprocessing state, metrics and ``code/``."""
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(best, paths.model_dir / "model.pth")
    atomic_write_json(paths.model_dir / "model_info.json", info)
    for name in ("word_dict.json", "preprocessing.json"):
        shutil.copyfile(paths.train / name, paths.model_dir / name)
    atomic_write_json(paths.model_dir / "metrics.json", metrics)
    if inference_code:
        write_inference_code(paths.model_dir)
    paths.output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(paths.output_dir / "metrics.json", metrics)


def main(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> int:
    """Command-line entry: returns the exit code (0 ok, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else argv
    env = dict(os.environ) if env is None else env
    try:
        config = parse_hyperparameters(argv)
        paths = resolve_paths(argv, env)
        check_hosts(env)
        for name in ("train", "validation"):
            if not getattr(paths, name).is_dir():
                raise TrainingError(
                    f"channel {name!r}: folder {getattr(paths, name)} not found; "
                    f"set SM_CHANNEL_{name.upper()} or pass --{name} DIR"
                )
        job_name = _parser().parse_args(list(argv)).job_name or env.get("TRAINING_JOB_NAME")
        run_training(
            config,
            paths,
            log=lambda line: print(line, flush=True),
            device=pick_device(env),
            job_name=job_name,
        )
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
