"""Training ``nb-lstm`` stage by stage: wide, deep, mix (what ``model/train.py`` runs for staged architectures).

1. **Wide stage** (:mod:`model.wide`): the NB-weighted n-gram bag over whole reviews; NB ratios from the train
   channel only; SparseAdam, ``wide_epochs`` epochs, best epoch by validation loss, folded into
   ``network.wide``. A checkpoint after every epoch, and a small one once the stage is done.
2. **Deep stage**: the pooled LSTM (``network.deep``) on the reviews cut to their first ``lstm_len`` tokens, alone:
   Adam, gradient clipping, length-bucketed batches, best epoch by validation loss, early stopping after
   ``patience`` epochs without improvement; a checkpoint after every epoch. It prints the ``epoch=…`` line that
   ``model.train.METRIC_DEFINITIONS`` matches. Skipped when the mix is fixed at 0 (a wide-only model).
3. **Mix**: ``logit = (1 − a)·wide + a·deep`` with ``a`` from a 0.05-step grid minimising validation log-loss, or
   fixed by ``mix``; stored in the network's ``wide_scale``/``deep_scale`` buffers.

Resuming: each stage's checkpoint (``wide.pth``, ``deep.pth`` under the checkpoint folder) carries a key made of
the settings that decide its result and a fingerprint of the channels; a checkpoint with another key is ignored.
``epochs``, ``wide_epochs`` and ``patience`` may change between runs (training then continues).

Distributed (``dist`` given: torchrun ranks, the process group initialised by ``model/train.py``): the wide stage
runs on rank 0 only and its folded weights are broadcast — its per-step work is a sparse update of a few
thousand rows of a 4.2M-row table, which a dense gradient all-reduce would cost more than it computes (measured,
see ``benchmarks/train.py``'s notes); the deep stage is data-parallel (DDP over ``network.deep``): every rank
builds the same global batches and takes every ``world``-th row of each, losses are scaled so that DDP's average
is the global batch's mean gradient, validation sums are all-reduced, and rank 0 alone writes checkpoints.

Deterministic given ``seed`` (the caller seeds torch before building the network): batches come from
``numpy.random.default_rng`` seeds, dropout is reseeded every epoch (so a resumed run draws what the uninterrupted
run drew).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from model.artifact import atomic_torch_save
from model.channels import Channel
from model.network import NBLSTMClassifier
from model.wide import FeatureBags, WideCheckpoint, WideSettings, train_wide

Log = Callable[[str], None]
CHECKPOINT_FORMAT = 1
EVAL_BATCH = 256
BUCKET_BATCHES = 50  # length-sorting window, in batches (as model/train.py)
MIX_GRID = tuple(round(0.05 * i, 2) for i in range(21))


@dataclass(frozen=True)
class StagedConfig:
    """The hyperparameters of ``nb-lstm`` (``model/train.py``'s TrainConfig has the same names)."""

    # deep path
    epochs: int = 4
    batch_size: int = 64
    embedding_dim: int = 64
    hidden_dim: int = 64
    learning_rate: float = 2e-3
    dropout: float = 0.3
    patience: int = 2
    max_grad_norm: float = 5.0
    bidirectional: int = 0
    lstm_vocab: int = 20_000
    lstm_len: int = 256
    # wide path
    ngram_orders: int = 3
    ngram_buckets: int = 1 << 22
    nb_alpha: float = 1.0
    wide_epochs: int = 2
    wide_lr: float = 0.03
    wide_batch_size: int = 64
    wide_r_scale: float = 0.1
    wide_w_adj: float = 0.0
    # "val": the deep share chosen on validation log-loss; or a fixed share in [0, 1] (0: no LSTM at all)
    mix: str = "val"
    seed: int = 42

    @classmethod
    def from_config(cls, config: Any) -> StagedConfig:
        """The staged settings of any object with these attribute names (model/train.py's TrainConfig)."""
        return cls(**{item.name: getattr(config, item.name) for item in fields(cls) if hasattr(config, item.name)})

    def problems(self) -> list[str]:
        """What is wrong with these settings (flag names as ``--name``), empty when they are fine."""
        problems = []
        for name in ("lstm_vocab", "lstm_len", "ngram_buckets", "wide_epochs", "wide_batch_size"):
            if getattr(self, name) < 1:
                problems.append(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.ngram_orders not in (1, 2, 3):
            problems.append(f"--ngram_orders must be 1, 2 or 3, got {self.ngram_orders}")
        if self.bidirectional not in (0, 1):
            problems.append(f"--bidirectional must be 0 or 1, got {self.bidirectional}")
        for name in ("wide_lr", "wide_r_scale", "nb_alpha"):
            value = getattr(self, name)
            if not (value > 0 and math.isfinite(value)):
                problems.append(f"--{name} must be a positive number, got {value}")
        if not math.isfinite(self.wide_w_adj):
            problems.append(f"--wide_w_adj must be a number, got {self.wide_w_adj}")
        if self.fixed_mix() is None and self.mix != "val":
            problems.append(f"--mix must be 'val' or a number in [0, 1], got {self.mix!r}")
        return problems

    def fixed_mix(self) -> float | None:
        """The fixed deep share, or None for ``val`` (or a bad value)."""
        try:
            share = float(self.mix)
        except ValueError:
            return None
        return share if 0.0 <= share <= 1.0 else None

    def wide_settings(self) -> WideSettings:
        return WideSettings(
            epochs=self.wide_epochs,
            lr=self.wide_lr,
            batch_size=self.wide_batch_size,
            r_scale=self.wide_r_scale,
            w_adj=self.wide_w_adj,
            nb_alpha=self.nb_alpha,
            seed=self.seed,
        )

    def network_info(self) -> dict[str, Any]:
        """The ``model_info.json`` entries ``model.network.build_network`` reads for ``nb-lstm``."""
        keys = ("lstm_vocab", "lstm_len", "bidirectional", "ngram_orders", "ngram_buckets", "dropout", "mix")
        return {key: getattr(self, key) for key in keys}

    def stage_key(self, stage: str) -> dict[str, Any]:
        """The settings that decide a stage's result (epochs and patience may change between runs)."""
        wide = ("ngram_orders", "ngram_buckets", "nb_alpha", "wide_lr", "wide_batch_size", "wide_r_scale", "wide_w_adj")
        deep = (
            "batch_size",
            "embedding_dim",
            "hidden_dim",
            "learning_rate",
            "dropout",
            "max_grad_norm",
            "bidirectional",
            "lstm_vocab",
            "lstm_len",
        )
        return {key: getattr(self, key) for key in (wide if stage == "wide" else deep) + ("seed",)}


# --- checkpoints ----------------------------------------------------------------------------------------


def channel_fingerprint(*channels: Channel) -> str:
    """A cheap content hash of channels (lengths, ids, labels): a checkpoint of other data is never resumed."""
    digest = hashlib.sha256()
    for channel in channels:
        for array in (channel.lengths, channel.ids, channel.labels):
            data = b"" if array is None else np.ascontiguousarray(array).tobytes()
            digest.update(f"{len(data)}:{zlib.crc32(data)};".encode())
    return digest.hexdigest()[:16]


class StageCheckpoints:
    """``<folder>/<stage>.pth``: written atomically (rank 0), read with ``weights_only=True``."""

    def __init__(self, folder: Path, config: StagedConfig, fingerprint: str, vocab_size: int, log: Log) -> None:
        self.folder, self.config, self.fingerprint, self.vocab_size, self.log = (
            folder,
            config,
            fingerprint,
            vocab_size,
            log,
        )

    def key(self, stage: str) -> str:
        payload = {**self.config.stage_key(stage), "vocab_size": self.vocab_size, "data": self.fingerprint}
        return json.dumps(payload, sort_keys=True)

    def path(self, stage: str) -> Path:
        return self.folder / f"{stage}.pth"

    def save(self, stage: str, payload: dict[str, Any]) -> None:
        atomic_torch_save({"format": CHECKPOINT_FORMAT, "key": self.key(stage), **payload}, self.path(stage))

    def load(self, stage: str) -> dict[str, Any] | None:
        path = self.path(stage)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - an unreadable checkpoint only means starting the stage afresh
            self.log(
                f"ignoring checkpoint {path}: unreadable ({type(error).__name__}); starting the {stage} stage afresh"
            )
            return None
        if payload.get("format") != CHECKPOINT_FORMAT or payload.get("key") != self.key(stage):
            self.log(
                f"ignoring checkpoint {path}: written with other settings or data; starting the {stage} stage afresh"
            )
            return None
        return payload


def _wide_payload(state: WideCheckpoint) -> dict[str, Any]:
    return {
        "done": False,
        "epoch": state.epoch,
        "history": json.dumps(state.history),
        "w": state.w,
        "bias": state.bias,
        "optimizers": state.optimizers,
        "best_val_loss": state.best_val_loss,
        "best_w": state.best_w,
        "best_bias": state.best_bias,
    }


def _wide_state(payload: dict[str, Any]) -> WideCheckpoint:
    return WideCheckpoint(
        epoch=int(payload["epoch"]),
        history=json.loads(payload["history"]),
        w=payload["w"],
        bias=payload["bias"],
        optimizers=list(payload["optimizers"]),
        best_val_loss=float(payload["best_val_loss"]),
        best_w=payload["best_w"],
        best_bias=payload["best_bias"],
    )


# --- distributed helpers ------------------------------------------------------------------------------------


def _is_main(dist: Any) -> bool:
    return dist is None or dist.rank == 0


def _broadcast_tensor(tensor: torch.Tensor) -> None:
    import torch.distributed as torch_dist

    torch_dist.broadcast(tensor, src=0)


def _all_sum(values: list[float]) -> list[float]:
    import torch.distributed as torch_dist

    tensor = torch.tensor(values, dtype=torch.float64)
    torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return [float(v) for v in tensor]


def _broadcast_payload(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """Rank 0's checkpoint payload on every rank, sent as ``torch.save`` bytes (loaded with ``weights_only``)."""
    import torch.distributed as torch_dist

    data = b""
    if payload is not None:
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        data = buffer.getvalue()
    size = torch.tensor([len(data)], dtype=torch.int64)
    torch_dist.broadcast(size, src=0)
    if int(size) == 0:
        return None
    tensor = torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(int(size), dtype=torch.uint8)
    torch_dist.broadcast(tensor, src=0)
    return payload if data else torch.load(io.BytesIO(tensor.numpy().tobytes()), map_location="cpu", weights_only=True)


def _barrier(dist: Any) -> None:
    if dist is not None:
        import torch.distributed as torch_dist

        torch_dist.barrier()


# --- the wide stage --------------------------------------------------------------------------------------


def run_wide_stage(
    network: NBLSTMClassifier,
    config: StagedConfig,
    train: Channel,
    validation: Channel,
    checkpoints: StageCheckpoints,
    log: Log,
    dist: Any = None,
) -> dict[str, Any]:
    """Train (or restore) the wide path into ``network.wide``; returns its metrics (on every rank)."""
    metrics: dict[str, Any] | None = None
    if _is_main(dist):
        saved = checkpoints.load("wide")
        if saved is not None and saved.get("done") and saved.get("epochs") != config.wide_epochs:
            ran = saved.get("epochs")
            log(f"wide stage in {checkpoints.path('wide')} ran {ran} epochs, not {config.wide_epochs}: training again")
            saved = None
        if saved is not None and saved.get("done"):
            with torch.no_grad():
                network.wide.weight.copy_(saved["weight"])
                network.wide.bias.copy_(saved["bias"])
            metrics = json.loads(saved["metrics"])
            log(f"wide stage restored from {checkpoints.path('wide')}")
        else:
            started = time.perf_counter()
            bags, val_bags = FeatureBags.of(network.wide, train), FeatureBags.of(network.wide, validation)
            features_s = time.perf_counter() - started
            log(f"wide features: {len(bags.flat):,} for {len(bags):,} train reviews in {features_s:.1f} s")
            resume = _wide_state(saved) if saved is not None else None
            metrics = train_wide(
                network.wide,
                config.wide_settings(),
                bags,
                train.labels,
                val_bags,
                validation.labels,
                log,
                resume=resume,
                save=lambda state: checkpoints.save("wide", _wide_payload(state)),
            )
            metrics["features_s"] = features_s
            metrics["stage_s"] = time.perf_counter() - started
            checkpoints.save(
                "wide",
                {
                    "done": True,
                    "epochs": config.wide_epochs,
                    "weight": network.wide.weight.detach().clone(),
                    "bias": network.wide.bias.detach().clone(),
                    "metrics": json.dumps(metrics),
                },
            )
    if dist is not None:  # rank 0 trained it; everybody gets its weights (about 17 MB once) and metrics
        _broadcast_tensor(network.wide.weight.data)
        _broadcast_tensor(network.wide.bias.data)
        shared = _broadcast_payload({"metrics": json.dumps(metrics)} if metrics is not None else None)
        assert shared is not None
        metrics = json.loads(shared["metrics"])
    assert metrics is not None
    return metrics


# --- the deep stage --------------------------------------------------------------------------------------


def train_batches(lengths: np.ndarray, batch_size: int, seed: int) -> list[np.ndarray]:
    """Shuffled batches in which reviews of similar length travel together (model/train.py's bucketed batches)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    window = batch_size * BUCKET_BATCHES
    order = np.concatenate(
        [
            chunk[np.argsort(lengths[chunk], kind="stable")]
            for chunk in np.split(order, range(window, len(order), window))
        ]
    )
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _crop(rows: torch.Tensor, index: np.ndarray) -> torch.Tensor:
    batch = rows[torch.from_numpy(index)]
    return batch[:, : int(batch[:, 0].max().clamp(min=1)) + 1]


def deep_logits(deep: nn.Module, rows: torch.Tensor, dist: Any = None) -> torch.Tensor:
    """The deep path's logits for (already cut) rows, length-sorted batches; with ``dist`` each rank scores
    every ``world``-th row and the rest are 0 (callers sum across ranks)."""
    deep.eval()
    out = torch.zeros(len(rows))
    order = np.argsort(rows[:, 0].numpy(), kind="stable")
    if dist is not None:
        order = order[dist.rank :: dist.world_size]
    with torch.inference_mode():
        for start in range(0, len(order), EVAL_BATCH):
            index = order[start : start + EVAL_BATCH]
            out[torch.from_numpy(index)] = deep(_crop(rows, index)).float()
    return out


def _evaluate(deep: nn.Module, rows: torch.Tensor, labels: torch.Tensor, dist: Any) -> tuple[float, float]:
    out = deep_logits(deep, rows, dist)
    if dist is None:
        return _bce(out, labels), float(((out > 0).float() == labels).float().mean())
    order = np.argsort(rows[:, 0].numpy(), kind="stable")[dist.rank :: dist.world_size]
    mine = torch.from_numpy(order)
    loss = float(F.binary_cross_entropy_with_logits(out[mine], labels[mine], reduction="sum"))
    correct = float(((out[mine] > 0).float() == labels[mine]).sum())
    loss, correct = _all_sum([loss, correct])
    return loss / len(labels), correct / len(labels)


def _bce(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(F.binary_cross_entropy_with_logits(logits, labels))


def run_deep_stage(
    network: NBLSTMClassifier,
    config: StagedConfig,
    train: Channel,
    validation: Channel,
    checkpoints: StageCheckpoints,
    log: Log,
    dist: Any = None,
) -> dict[str, Any]:
    """Train the pooled LSTM on the first ``lstm_len`` tokens; loads its best epoch into ``network.deep``."""
    started = time.perf_counter()
    deep = network.deep
    rows = network.deep_rows(torch.from_numpy(train.rows(max_tokens=config.lstm_len)))
    val_rows = network.deep_rows(torch.from_numpy(validation.rows(max_tokens=config.lstm_len)))
    labels = torch.as_tensor(train.labels, dtype=torch.float32)
    val_labels = torch.as_tensor(validation.labels, dtype=torch.float32)
    optimizer = torch.optim.Adam(deep.parameters(), lr=config.learning_rate)
    history: list[dict[str, float]] = []
    best_state = {key: value.detach().clone() for key, value in deep.state_dict().items()}
    best_loss, bad = math.inf, 0

    saved = checkpoints.load("deep") if _is_main(dist) else None
    if dist is not None:
        saved = _broadcast_payload(saved)
    if saved is not None:
        deep.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        best_state = saved["best"]
        history, best_loss, bad = json.loads(saved["history"]), float(saved["best_val_loss"]), int(saved["bad"])
        done = len(history) >= config.epochs or bad >= config.patience
        log(
            f"deep stage restored from {checkpoints.path('deep')} ({len(history)} epochs)"
            if done
            else f"resuming the deep stage after epoch {len(history)}"
        )

    model: nn.Module = deep
    world, rank = (1, 0) if dist is None else (dist.world_size, dist.rank)
    if dist is not None:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(deep)
    lengths = rows[:, 0].numpy()
    while len(history) < config.epochs and bad < config.patience:
        epoch = len(history) + 1
        epoch_started = time.perf_counter()
        torch.manual_seed(config.seed * 1_000_003 + epoch * 1009 + rank)  # dropout: the same draws after a resume
        model.train()
        total = 0.0
        for index in train_batches(lengths, config.batch_size, config.seed * 1000 + epoch):
            share, weight = index[rank::world], 1.0
            if len(share) == 0:  # a rank without rows still joins DDP's gradient all-reduce
                share, weight = index[:1], 0.0
            optimizer.zero_grad(set_to_none=True)
            out = model(_crop(rows, share))
            losses = F.binary_cross_entropy_with_logits(out, labels[torch.from_numpy(share)], reduction="none")
            loss = (losses * weight).sum() * (world / len(index))
            loss.backward()
            if config.max_grad_norm > 0:
                nn.utils.clip_grad_norm_(deep.parameters(), config.max_grad_norm)
            optimizer.step()
            total += float(losses.detach().sum()) * weight
        if dist is not None:
            total = _all_sum([total])[0]
        val_loss, val_accuracy = _evaluate(deep, val_rows, val_labels, dist)
        seconds = time.perf_counter() - epoch_started
        if dist is not None:  # rank 0's clock for everybody
            clock = torch.tensor([seconds], dtype=torch.float64)
            _broadcast_tensor(clock)
            seconds = float(clock)
        train_loss = total / len(labels)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                "val_accuracy": val_accuracy,
                "epoch_s": seconds,
            }
        )
        log(
            f"epoch={epoch} train_loss={train_loss:.4f} val_loss={val_loss:.4f} "
            f"val_accuracy={val_accuracy:.4f} epoch_s={seconds:.1f}"
        )
        if val_loss < best_loss:
            best_loss, bad = val_loss, 0
            best_state = {key: value.detach().clone() for key, value in deep.state_dict().items()}
        else:
            bad += 1
        if _is_main(dist):
            checkpoints.save(
                "deep",
                {
                    "model": {key: value.detach().clone() for key, value in deep.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "best": best_state,
                    "history": json.dumps(history),
                    "best_val_loss": best_loss,
                    "bad": bad,
                },
            )
        _barrier(dist)
    if bad >= config.patience and len(history) < config.epochs:
        log(f"early stop: no validation-loss improvement for {config.patience} epochs")
    deep.load_state_dict(best_state)
    best = min(history, key=lambda entry: entry["val_loss"])
    return {
        "history": history,
        "best_epoch": int(best["epoch"]),
        "val_loss": best["val_loss"],
        "val_accuracy": best["val_accuracy"],
        "train_loss": best["train_loss"],
        "epochs_run": len(history),
        "stopped_early": bad >= config.patience and len(history) < config.epochs,
        "stage_s": time.perf_counter() - started,
    }


# --- the mix ----------------------------------------------------------------------------------------------


def choose_mix(
    wide: torch.Tensor, deep: torch.Tensor | None, labels: torch.Tensor, fixed: float | None
) -> tuple[float, list[dict[str, float]]]:
    """The deep share ``a`` of ``(1 − a)·wide + a·deep``: ``fixed``, else the grid value with the least validation
    log-loss (ties: the smaller share). Returns it and the grid's losses."""
    if fixed is not None or deep is None:
        return (fixed or 0.0), []
    grid = [{"deep_share": a, "val_loss": _bce((1 - a) * wide + a * deep, labels)} for a in MIX_GRID]
    best = min(grid, key=lambda entry: (entry["val_loss"], entry["deep_share"]))
    return float(best["deep_share"]), grid


def wide_logits(network: NBLSTMClassifier, channel: Channel) -> torch.Tensor:
    out = torch.empty(len(channel))
    with torch.inference_mode():
        for index, rows in channel.batches(EVAL_BATCH):
            out[torch.from_numpy(index)] = network.wide(torch.from_numpy(rows))
    return out


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float(((logits > 0).float() == labels).float().mean())


# --- all stages ---------------------------------------------------------------------------------------------


def train_staged(
    network: NBLSTMClassifier,
    config: StagedConfig,
    train: Channel,
    validation: Channel,
    checkpoint_dir: Path,
    log: Log = print,
    dist: Any = None,
) -> dict[str, Any]:
    """Wide stage, deep stage (unless the mix is fixed at 0), mix; ``network`` ends in its trained state.

    Returns the metrics (``history``/``best_epoch``/``epochs_run`` of the deep stage — of the wide stage when there
    is none — and ``val_loss``/``val_accuracy`` of the mixed model, the artifact)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    for name, channel in (("train", train), ("validation", validation)):
        if channel.labels is None:
            raise ValueError(f"the {name} channel has no labels")
    checkpoints = StageCheckpoints(
        Path(checkpoint_dir), config, channel_fingerprint(train, validation), network.vocab_size, log
    )
    wide = run_wide_stage(network, config, train, validation, checkpoints, log, dist)
    _barrier(dist)
    fixed = config.fixed_mix()
    deep = None
    if fixed == 0.0:
        log("deep stage skipped: mix 0 (a wide-only model; inference never runs the LSTM)")
    else:
        deep = run_deep_stage(network, config, train, validation, checkpoints, log, dist)

    network.eval()
    val_labels = torch.as_tensor(validation.labels, dtype=torch.float32)
    wide_out = wide_logits(network, validation)
    deep_out = None
    if deep is not None:
        val_rows = network.deep_rows(torch.from_numpy(validation.rows(max_tokens=config.lstm_len)))
        deep_out = deep_logits(network.deep, val_rows)
    share, grid = choose_mix(wide_out, deep_out, val_labels, fixed)
    with torch.no_grad():
        network.wide_scale.fill_(1.0 - share)
        network.deep_scale.fill_(share)
    mixed = (1 - share) * wide_out + (share * deep_out if deep_out is not None else 0.0)
    main = deep if deep is not None else wide
    metrics: dict[str, Any] = {
        "history": main["history"],
        "best_epoch": main["best_epoch"],
        "epochs_run": len(main["history"]),
        "stopped_early": bool(deep["stopped_early"]) if deep is not None else False,
        "train_loss": next(e["train_loss"] for e in main["history"] if e["epoch"] == main["best_epoch"]),
        "val_loss": _bce(mixed, val_labels),
        "val_accuracy": _accuracy(mixed, val_labels),
        "val_accuracy_wide": _accuracy(wide_out, val_labels),
        "val_accuracy_deep": _accuracy(deep_out, val_labels) if deep_out is not None else None,
        "mix_deep_share": share,
        "mix_grid": grid,
        "wide": wide,
        "deep": deep,
        "parameters": sum(p.numel() for p in network.parameters()),
        "stages_s": time.perf_counter() - started,
        "stages_cpu_s": time.process_time() - cpu_started,
        "config": asdict(config),
    }
    log(
        f"mix: deep share {share:.2f}, validation accuracy {metrics['val_accuracy']:.4f} (wide alone "
        f"{metrics['val_accuracy_wide']:.4f}"
        + (f", deep alone {metrics['val_accuracy_deep']:.4f}" if deep_out is not None else "")
        + f"), log-loss {metrics['val_loss']:.4f}"
    )
    return metrics
