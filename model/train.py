"""SageMaker script-mode training entry point for the sentiment network.

SageMaker's PyTorch training container runs it through the SageMaker Training Toolkit: the toolkit turns the
job's hyperparameters into ``--name value`` flags (``python model/train.py --epochs 10 --hidden_dim 128 …``) and
the job's locations into the environment. Flags are hyperparameters only — exactly the fields of
:class:`TrainConfig` (``hyperparameter_names()``); anything else, a location such as ``--model_dir`` included, is
refused with one line naming the allowed keys, so a hyperparameter can never redirect where training reads or
writes.

Locations come from the environment only:

* ``SM_CHANNEL_TRAIN``, ``SM_CHANNEL_VALIDATION``, ``SM_MODEL_DIR``, ``SM_OUTPUT_DATA_DIR`` (set by the toolkit);
* otherwise under ``$SAGEMAKER_BASE_DIR`` (the toolkit's stand-in for ``/opt/ml``, which the local backend
  uses), else ``/opt/ml`` when it exists, else ``./job``: ``input/data/<channel>``, ``model``, ``output/data``;
* checkpoints in ``<base>/checkpoints`` — where SageMaker mounts ``CheckpointConfig.LocalPath`` (the toolkit sets
  no ``SM_CHECKPOINT_DIR``; that variable is honoured for runs by hand only).

By hand, from the project root::

    SM_CHANNEL_TRAIN=ch/train SM_CHANNEL_VALIDATION=ch/validation SM_MODEL_DIR=out/model \
        python model/train.py --epochs 1          # output/ and checkpoints/ go under ./job

Bad hyperparameters, a missing channel or malformed channel data end the run with ``error: …`` on stderr and
exit code 2 before any training; under the toolkit the same one line is written to ``$SM_OUTPUT_DIR/failure``
(the toolkit keeps a file that exists), so it is the job's FailureReason. Each epoch prints exactly one line
matched by ``METRIC_DEFINITIONS``::

    epoch=3 train_loss=0.3121 val_loss=0.2987 val_accuracy=0.8810 epoch_s=41.2

A checkpoint is written after every epoch and training resumes from it (spot interruptions, a killed job). The
model folder receives ``model.pth`` (best epoch by validation loss), ``model_info.json``, ``word_dict.json``,
``preprocessing.json`` (tokenizer version and parameters), ``metrics.json`` and ``code/``.

Channels are ``<name>.npz`` (ragged whole reviews, :mod:`model.channels`) or the fixed-width ``<name>.csv`` of
older data preparation. The default architecture ``nb-lstm`` is trained stage by stage by :mod:`model.stages`
(wide NB n-gram bag over whole reviews, deep LSTM over the first ``lstm_len`` tokens, mix chosen on validation;
a checkpoint per stage); the other architectures (``reference``, ``lstm-pool``, ``bilstm-pool``) by the one loop
below.

Distributed (torch DDP): launched by ``torchrun`` (what SageMaker's ``torch_distributed`` distribution runs: one
process per host × ``sagemaker_mpi_num_of_processes_per_host``), ``WORLD_SIZE > 1`` switches it on: gloo on CPU,
nccl on GPU. ``--batch_size`` stays the *global* batch: every rank builds the same length-bucketed batches as one
process and takes every ``WORLD_SIZE``-th row of each, so the same hyperparameters train the same model on any
number of ranks; DDP averages the gradients, validation sums are all-reduced, rank 0's figures decide the best
epoch and early stopping on every rank, rank 0 alone writes checkpoints and the model folder, and on resume rank 0
reads the checkpoint and broadcasts its bytes (other hosts need no copy). Channels are fully replicated; each rank
shards the rows itself. Without ``WORLD_SIZE`` nothing changes. For ``nb-lstm`` the wide stage runs on rank 0
alone and its weights are broadcast (a sparse update of a few thousand rows per step: a dense all-reduce would
cost more than it computes); the deep stage is data-parallel as above.
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import math
import os
import re
import shutil
import socket
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
from model.channels import Channel, ChannelError  # noqa: E402
from model.channels import read_channel as read_channel_file  # noqa: E402
from model.network import (  # noqa: E402
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    STAGED_ARCHITECTURES,
    build_network,
    returns_logits,
)
from model.preprocessing import Preprocessor  # noqa: E402
from model.stages import StagedConfig, train_staged  # noqa: E402

Log = Callable[[str], None]
DDP_TIMEOUT_S = 600  # a rank that waits this long for the others fails instead of hanging the job
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
class TrainConfig(StagedConfig):
    """Hyperparameters (SageMaker passes them as ``--name value`` flags): nb-lstm's (``model.stages.StagedConfig``:
    the deep path's optimiser and sizes — shared by every network —, the LSTM's vocabulary and window, the n-gram
    bag, the mix) and the two every run has."""

    architecture: str = DEFAULT_ARCHITECTURE
    # Intra-op CPU threads; 0 = torch's default (one per core). 1 by measurement: LSTM steps are too small to
    # split, and spinning threads made an epoch 20x slower on a shared 2-core machine.
    num_threads: int = 1

    @property
    def staged(self) -> bool:
        return self.architecture in STAGED_ARCHITECTURES

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
        problems.extend(self.problems())
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


def hyperparameter_names() -> tuple[str, ...]:
    """The hyperparameters this script accepts: :class:`TrainConfig`'s fields, nothing else (the network first)."""
    names = [item.name for item in fields(TrainConfig)]
    return ("architecture", *(name for name in names if name != "architecture"))


def _not_hyperparameters(names: Sequence[str]) -> TrainingError:
    return TrainingError(
        f"bad hyperparameters: {', '.join(repr(name) for name in names)} "
        f"{'is not a hyperparameter' if len(names) == 1 else 'are not hyperparameters'}; "
        f"allowed: {', '.join(hyperparameter_names())} (locations come from the SageMaker environment, "
        "never from hyperparameters)"
    )


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise TrainingError(f"bad hyperparameters: {message}")


def _parser() -> _Parser:
    """``--name value`` for every TrainConfig field (``--hidden_dim`` as the toolkit writes it, or ``--hidden-dim``);
    no abbreviations, no location flags."""
    parser = _Parser(
        prog="train.py", description="Train the sentiment network (SageMaker script mode).", allow_abbrev=False
    )
    types = {int: int, float: float, str: str}
    for item in fields(TrainConfig):
        flag = item.name.replace("_", "-")
        names = [f"--{item.name}"] + ([f"--{flag}"] if flag != item.name else [])
        parser.add_argument(*names, dest=item.name, type=types[type(item.default)], default=item.default)
    return parser


def parse_hyperparameters(argv: Sequence[str]) -> TrainConfig:
    """Hyperparameters from SageMaker-style flags; any other flag is refused with the allowed names."""
    args, extra = _parser().parse_known_args(list(argv))
    if extra:
        flags = [token.lstrip("-").split("=", 1)[0] for token in extra if token.startswith("-") and token != "-"]
        if not flags:
            raise TrainingError(f"bad hyperparameters: unexpected argument(s) {' '.join(extra)!r}")
        raise _not_hyperparameters(flags)
    return TrainConfig(**{item.name: getattr(args, item.name) for item in fields(TrainConfig)}).validate()


def toolkit_argument(value: Any) -> str:
    """The command-line text the SageMaker training toolkit makes of a (JSON-decoded) hyperparameter value
    (``sagemaker_training.mapping.to_cmd_args``: ``str(value)``, ``None`` as an empty string)."""
    return "" if value is None else str(value)


def check_hyperparameters(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every key in its canonical spelling (``hidden-dim`` → ``hidden_dim``), after checking that
    each key is a TrainConfig field and every value parses as the script will parse it; raises TrainingError.

    What a job builder calls before any job starts (the script checks its flags again itself)."""
    canonical: dict[str, Any] = {}
    allowed = set(hyperparameter_names())
    unknown = []
    for key, value in values.items():
        name = str(key).replace("-", "_")
        if name not in allowed:
            unknown.append(str(key))
        elif name in canonical:
            raise TrainingError(f"bad hyperparameters: {name!r} is given twice (as {key!r} and another spelling)")
        else:
            canonical[name] = value
    if unknown:
        raise _not_hyperparameters(unknown)
    parse_hyperparameters([f"--{name}={toolkit_argument(value)}" for name, value in canonical.items()])
    return canonical


def base_dir(env: dict[str, str]) -> Path:
    """The job's ``/opt/ml``: ``$SAGEMAKER_BASE_DIR`` (the training toolkit's stand-in), ``/opt/ml``, or ``./job``."""
    if env.get("SAGEMAKER_BASE_DIR"):
        return Path(env["SAGEMAKER_BASE_DIR"])
    return Path("/opt/ml") if Path("/opt/ml").is_dir() else Path("job")


def resolve_paths(env: dict[str, str]) -> TrainPaths:
    """Locations from the SageMaker environment, else the ``/opt/ml`` layout under :func:`base_dir`. Checkpoints go
    to ``<base>/checkpoints``, the platform's mount for ``CheckpointConfig.LocalPath`` (the toolkit sets no
    ``SM_CHECKPOINT_DIR``; it is honoured for runs by hand)."""
    base = base_dir(env)

    def pick(var: str, default: Path) -> Path:
        return Path(env.get(var) or default)

    return TrainPaths(
        model_dir=pick("SM_MODEL_DIR", base / "model"),
        train=pick("SM_CHANNEL_TRAIN", base / "input" / "data" / "train"),
        validation=pick("SM_CHANNEL_VALIDATION", base / "input" / "data" / "validation"),
        output_dir=pick("SM_OUTPUT_DATA_DIR", base / "output" / "data"),
        checkpoint_dir=pick("SM_CHECKPOINT_DIR", base / "checkpoints"),
    )


def check_hosts(env: dict[str, str]) -> None:
    """Refuse a multi-host job that was not launched by torchrun (each host would train alone)."""
    try:
        hosts = json.loads(env.get("SM_HOSTS") or "[]")
    except ValueError:
        hosts = None
    if not isinstance(hosts, list):
        raise TrainingError(f"SM_HOSTS is not a JSON list of host names: {env.get('SM_HOSTS')!r}")
    if len(hosts) > 1 and int(env.get("WORLD_SIZE") or 1) < 2:
        raise TrainingError(
            f"SM_HOSTS lists {len(hosts)} hosts ({', '.join(hosts)}) but the script was not launched by torchrun; "
            "set the hyperparameter sagemaker_torch_distributed_enabled=true or run with instance_count=1"
        )


def pick_device(env: dict[str, str]) -> torch.device:
    wants_gpu = int(env.get("SM_NUM_GPUS") or 0) > 0 or "SM_NUM_GPUS" not in env
    if wants_gpu and torch.cuda.is_available() and int(env.get("WORLD_SIZE") or 1) > 1:
        return torch.device("cuda", int(env.get("LOCAL_RANK") or 0))
    return torch.device("cuda" if wants_gpu and torch.cuda.is_available() else "cpu")


# --- distributed ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    """This process's place in a torchrun launch (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` from its environment)."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_from_env(env: dict[str, str]) -> Distributed | None:
    """None unless launched with several ranks (``WORLD_SIZE > 1``): the single-process path stays as it was."""
    try:
        world = int(env.get("WORLD_SIZE") or 1)
        rank, local = int(env.get("RANK") or 0), int(env.get("LOCAL_RANK") or 0)
    except ValueError as error:
        raise TrainingError(f"bad torchrun environment (RANK/WORLD_SIZE/LOCAL_RANK): {error}") from error
    if world < 2:
        return None
    if not 0 <= rank < world:
        raise TrainingError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return Distributed(rank=rank, world_size=world, local_rank=local)


def init_distributed(dist_info: Distributed, device: torch.device, env: dict[str, str]) -> None:
    """Join the process group: nccl on GPU, gloo on CPU (over SageMaker's network interface when it exists)."""
    import torch.distributed as dist

    interface = env.get("SM_NETWORK_INTERFACE_NAME")
    known = {name for _, name in socket.if_nameindex()}
    if device.type == "cpu" and interface in known and "GLOO_SOCKET_IFNAME" not in os.environ:
        os.environ["GLOO_SOCKET_IFNAME"] = interface
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(
        backend="nccl" if device.type == "cuda" else "gloo",
        timeout=datetime.timedelta(seconds=DDP_TIMEOUT_S),
    )


def _all_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum over all ranks (float64)."""
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return [float(v) for v in tensor.cpu()]


def _broadcast_floats(values: list[float], device: torch.device) -> list[float]:
    """Rank 0's ``values`` on every rank (float64)."""
    import torch.distributed as dist

    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return [float(v) for v in tensor.cpu()]


def _broadcast_bytes(data: bytes | None, device: torch.device) -> bytes | None:
    """Rank 0's ``data`` (or None) on every rank, as raw bytes: no pickling, the receiver decides how to load it."""
    import torch.distributed as dist

    size = torch.tensor([-1 if data is None else len(data)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    count = int(size.item())
    if count <= 0:
        return None if count < 0 else b""
    if data is not None:
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device)
    else:
        buffer = torch.empty(count, dtype=torch.uint8, device=device)
    dist.broadcast(buffer, src=0)
    return data if data is not None else buffer.cpu().numpy().tobytes()


def rank_share(index: np.ndarray, rank: int, world: int) -> tuple[np.ndarray, float]:
    """This rank's rows of a global batch (every ``world``-th row, so each share spans the batch's lengths) and the
    weight of each of them; a rank left without rows gets the batch's first row with weight 0 (it must still run
    forward and backward for DDP's gradient all-reduce)."""
    share = index[rank::world]
    if len(share) == 0:
        return index[:1], 0.0
    return share, 1.0


# --- data --------------------------------------------------------------------------------------------


def read_channel(folder: Path, name: str, max_len: int, vocab_size: int) -> Channel:
    """Labelled channel ``name`` of ``folder`` (``<name>.npz``, or the older ``<name>.csv``), checked against the
    preprocessing state; raises TrainingError naming what is wrong."""
    where = folder / f"{name}.npz"
    try:
        channel = read_channel_file(folder, name)
    except ChannelError as error:
        raise TrainingError(
            f"channel {name!r}: {error}; pass the {name} channel (SM_CHANNEL_{name.upper()}) holding {name}.npz "
            "(or the older fixed-width CSV) — re-run data preparation"
        ) from error
    if len(channel) == 0:
        raise TrainingError(f"channel {name!r}: {where} holds no reviews; re-run data preparation")
    if channel.labels is None or not np.isin(channel.labels, (0, 1)).all():
        raise TrainingError(f"channel {name!r}: {where} needs 0/1 labels for every review; re-run data preparation")
    bad_ids = bool(channel.ids.size) and (int(channel.ids.min()) < 0 or channel.max_id() >= vocab_size)
    if int(channel.lengths.max()) > max_len or bad_ids:
        raise TrainingError(
            f"channel {name!r}: {where} has lengths outside [0, {max_len}] or ids outside [0, {vocab_size}); "
            "it does not match preprocessing.json — re-run data preparation"
        )
    return channel


def fixed_rows(channel: Channel, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """``(labels float32, rows (n, 1 + max_len) int64)`` for the one-loop architectures."""
    rows = np.zeros((len(channel), max_len + 1), dtype=np.int64)
    part = channel.rows(max_tokens=max_len)
    rows[:, : part.shape[1]] = part[:, : max_len + 1]
    assert channel.labels is not None
    return channel.labels.astype(np.float32), rows


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


def evaluate(
    network: nn.Module,
    rows: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    dist_info: Distributed | None = None,
) -> tuple[float, float]:
    """(mean loss, accuracy) over all rows, in length-sorted batches; with ``dist_info`` each rank scores every
    ``world``-th row and the sums are all-reduced (every rank returns the same figures)."""
    network.eval()
    loss_fn = _loss_fn(network)
    order = np.argsort(rows[:, 0].numpy(), kind="stable")
    if dist_info is not None:
        order = order[dist_info.rank :: dist_info.world_size]
    total_loss, correct = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(order), EVAL_BATCH_SIZE):
            index = order[start : start + EVAL_BATCH_SIZE]
            out = network(_batch(rows, index, trim=True).to(device))
            target = labels[torch.from_numpy(index)].to(device)
            total_loss += float(loss_fn(out, target)) * len(index)
            predicted = (out > 0) if returns_logits(network) else (out > 0.5)
            correct += int((predicted.float() == target).sum())
    if dist_info is not None:
        total_loss, correct, count = _all_sum([total_loss, correct, len(order)], device)
        return total_loss / count, correct / count
    return total_loss / len(order), correct / len(order)


def train_epoch(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    rows: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
    dist_info: Distributed | None = None,
    module: nn.Module | None = None,
) -> float:
    """One epoch; returns the mean training loss. With ``dist_info``, ``network`` is the DDP wrapper and ``module``
    the network inside it: each rank runs its share of every global batch."""
    if dist_info is not None:
        return _train_epoch_ddp(network, module or network, optimizer, rows, labels, config, epoch, device, dist_info)
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


def _train_epoch_ddp(
    network: nn.Module,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    rows: torch.Tensor,
    labels: torch.Tensor,
    config: TrainConfig,
    epoch: int,
    device: torch.device,
    dist_info: Distributed,
) -> float:
    """The same global batches as one process; each rank's loss is its rows' summed loss × world / batch rows, so
    DDP's gradient average equals the gradient of the global batch's mean loss."""
    network.train()
    per_row = nn.BCEWithLogitsLoss(reduction="none") if returns_logits(module) else nn.BCELoss(reduction="none")
    bucketed = bool(getattr(module, "bucketed", False))
    batches = train_batches(rows[:, 0].numpy(), config.batch_size, config.seed * 1000 + epoch, bucketed)
    # dropout masks differ per rank and do not depend on where a run resumed
    torch.manual_seed(config.seed * 1_000_003 + epoch * 1009 + dist_info.rank)
    world = dist_info.world_size
    total = 0.0
    for index in batches:
        share, weight = rank_share(index, dist_info.rank, world)
        optimizer.zero_grad(set_to_none=True)
        out = network(_batch(rows, share, trim=bucketed).to(device))
        losses = per_row(out, labels[torch.from_numpy(share)].to(device)) * weight
        loss = losses.sum() * (world / len(index))
        loss.backward()
        if config.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(network.parameters(), config.max_grad_norm)
        optimizer.step()
        total += float(losses.detach().sum())
    return _all_sum([total], device)[0] / len(rows)


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
    staged = StagedConfig.from_config(config).network_info() if config.staged else {}
    return {
        "format_version": 1,
        "architecture": config.architecture,
        "vocab_size": preprocessor.config.vocab_size,
        "max_len": preprocessor.max_len,
        "embedding_dim": config.embedding_dim,
        "hidden_dim": config.hidden_dim,
        "dropout": config.dropout,
        "returns_logits": returns_logits(network),
        **staged,
        "tokenizer_version": preprocessor.version,
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
    dist_info: Distributed | None = None,
) -> dict[str, Any]:
    """Train, checkpointing every epoch, and write the model folder; returns the metrics written.

    ``inference_code=False`` leaves out ``code/`` (benchmarks only: the artifact is then not deployable).
    With ``dist_info`` (the process group already initialised) training is data-parallel; only rank 0 writes.
    """
    is_main = dist_info is None or dist_info.is_main
    started = time.perf_counter()
    device = device or torch.device("cpu")
    if inference_code:
        try:
            check_inference_sources()
        except ArtifactError as error:
            raise TrainingError(str(error)) from error
    preprocessor = load_preprocessor(paths.train)
    vocab_size, max_len = preprocessor.config.vocab_size, preprocessor.max_len
    train_channel = read_channel(paths.train, "train", max_len, vocab_size)
    val_channel = read_channel(paths.validation, "validation", max_len, vocab_size)

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    info = model_info(config, preprocessor, job_name)
    network = build_network(info).to(device)
    if config.staged:
        return _run_staged(config, paths, network, info, train_channel, val_channel, log, inference_code, dist_info)
    train_y, train_x = fixed_rows(train_channel, max_len)
    val_y, val_x = fixed_rows(val_channel, max_len)
    del train_channel, val_channel
    optimizer = torch.optim.Adam(network.parameters(), lr=config.learning_rate)
    rows, labels = torch.from_numpy(train_x), torch.from_numpy(train_y)
    val_rows, val_labels = torch.from_numpy(val_x), torch.from_numpy(val_y)

    state, best = TrainState(), _state_copy(network)
    checkpoint_path = paths.checkpoint_dir / CHECKPOINT_NAME
    checkpoint = load_checkpoint(checkpoint_path, config, log) if is_main else None
    if dist_info is not None:  # rank 0's checkpoint for everybody: other hosts may have no copy of it
        data = _broadcast_bytes(checkpoint_path.read_bytes() if checkpoint is not None else None, device)
        if data is not None and not is_main:
            checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if checkpoint is not None:
        network.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        best = checkpoint["best_model"]
        state = TrainState(**json.loads(checkpoint["state"]))
        torch.set_rng_state(checkpoint["rng"])
        log(f"resuming from checkpoint {checkpoint_path} after epoch {state.epoch}")
    model: nn.Module = network
    if dist_info is not None:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(network, device_ids=[device.index] if device.type == "cuda" else None)
    log(
        f"training {config.architecture} on {len(train_y)} rows (validation {len(val_y)}), device {device}, "
        f"threads {torch.get_num_threads()}, epochs {config.epochs}"
        + (f", ranks {dist_info.world_size} (batch {config.batch_size} split across them)" if dist_info else "")
    )

    while state.epoch < config.epochs and not state.stopped_early:
        epoch_started = time.perf_counter()
        epoch = state.epoch + 1
        train_loss = train_epoch(model, optimizer, rows, labels, config, epoch, device, dist_info, network)
        val_loss, val_accuracy = evaluate(network, val_rows, val_labels, device, dist_info)
        seconds = time.perf_counter() - epoch_started
        if dist_info is not None:  # rank 0's figures decide best epoch and early stop on every rank
            train_loss, val_loss, val_accuracy, seconds = _broadcast_floats(
                [train_loss, val_loss, val_accuracy, seconds], device
            )
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
        if is_main:
            save_checkpoint(checkpoint_path, config, state, network, optimizer, best)
        if dist_info is not None:
            import torch.distributed as dist

            dist.barrier()  # nobody starts the next epoch before rank 0's checkpoint is on disk
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
    if dist_info is not None:
        metrics["world_size"] = dist_info.world_size
    if not is_main:
        return metrics
    write_model_dir(paths, best, info, metrics, inference_code)
    log(f"wrote model to {paths.model_dir} (best epoch {state.best_epoch}, val_accuracy={metrics['val_accuracy']:.4f})")
    return metrics


def _run_staged(
    config: TrainConfig,
    paths: TrainPaths,
    network: nn.Module,
    info: dict[str, Any],
    train: Channel,
    validation: Channel,
    log: Log,
    inference_code: bool,
    dist_info: Distributed | None,
) -> dict[str, Any]:
    """``nb-lstm``: wide, deep and mix stages (:func:`model.stages.train_staged`), then the model folder (rank 0)."""
    started = time.perf_counter()
    log(
        f"training {config.architecture} on {len(train)} reviews (validation {len(validation)}), "
        f"threads {torch.get_num_threads()}, wide epochs {config.wide_epochs}, deep epochs {config.epochs}"
        + (f", ranks {dist_info.world_size} (wide stage on rank 0, deep stage data-parallel)" if dist_info else "")
    )
    try:
        metrics = train_staged(
            network, StagedConfig.from_config(config), train, validation, paths.checkpoint_dir, log, dist_info
        )
    except ValueError as error:
        raise TrainingError(str(error)) from error
    metrics.update(
        train_rows=len(train), validation_rows=len(validation), device="cpu", duration_s=time.perf_counter() - started
    )
    if dist_info is not None:
        metrics["world_size"] = dist_info.world_size
    if dist_info is not None and not dist_info.is_main:
        return metrics
    write_model_dir(paths, _state_copy(network), info, metrics, inference_code)
    log(f"wrote model to {paths.model_dir} (val_accuracy={metrics['val_accuracy']:.4f})")
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


def report_failure(message: str, env: dict[str, str]) -> None:
    """Write ``message`` to ``$SM_OUTPUT_DIR/failure`` (set by the SageMaker training toolkit): SageMaker reports
    that file's first 1024 characters as the job's FailureReason and the toolkit keeps a file that exists. The first
    rank to fail wins; outside the toolkit nothing is written."""
    output_dir = env.get("SM_OUTPUT_DIR")
    if not output_dir:
        return
    try:
        with open(Path(output_dir) / "failure", "x", encoding="utf-8") as handle:
            handle.write(message)
    except OSError:
        pass


def main(argv: Sequence[str] | None = None, env: dict[str, str] | None = None) -> int:
    """Command-line entry: returns the exit code (0 ok, 2 bad input)."""
    argv = sys.argv[1:] if argv is None else argv
    env = dict(os.environ) if env is None else env
    dist_info = None
    try:
        config = parse_hyperparameters(argv)
        paths = resolve_paths(env)
        dist_info = distributed_from_env(env)
        check_hosts(env)
        for name in ("train", "validation"):
            if not getattr(paths, name).is_dir():
                raise TrainingError(
                    f"channel {name!r}: folder {getattr(paths, name)} not found; "
                    f"set SM_CHANNEL_{name.upper()} (or SAGEMAKER_BASE_DIR to a folder laid out like /opt/ml)"
                )
        job_name = env.get("TRAINING_JOB_NAME")
        device = pick_device(env)
        if dist_info is not None:
            init_distributed(dist_info, device, env)
        run_training(
            config,
            paths,
            log=(lambda line: print(line, flush=True)) if dist_info is None or dist_info.is_main else (lambda _: None),
            device=device,
            job_name=job_name,
            dist_info=dist_info,
        )
    except TrainingError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        report_failure(str(error), env)
        return 2
    finally:
        if dist_info is not None:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
