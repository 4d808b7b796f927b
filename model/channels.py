"""Channel files: the encoded reviews training reads, and the batch-transform input.

A training channel is one ``<name>.npz`` file (``train/train.npz``, ``validation/validation.npz``,
``test/test.npz``) holding three arrays, no pickle (read with ``np.load(..., allow_pickle=False)``)::

    lengths  int32 (n,)            each review's token count (the whole review, up to max_len)
    ids      int32 (sum lengths,)  every review's word ids, concatenated in row order
    labels   int8  (n,)            0/1 (absent in an unlabelled channel)

It keeps whole reviews without padding: the full IMDB train split is about 22 MB where fixed-width CSV rows of
3,000 ids would be twelve times that. SageMaker copies it like any channel file.

The batch-transform input stays text: ``test_features.csv`` holds one line ``length,id_1,…,id_length`` per review
(variable length, no padding), which is what the serving code's ``text/csv`` input reads (SplitType=Line).

Training channels written before this format existed — fixed-width CSV rows ``label,length,id_1 … id_max_len``
(``<name>.csv``) — are still read by :func:`read_channel`.

Only the standard library and numpy are imported: this module ships inside ``model.tar.gz``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SUFFIX = ".npz"
LEGACY_SUFFIX = ".csv"
ARRAYS = ("lengths", "ids", "labels")


class ChannelError(ValueError):
    """A channel file is missing, malformed or inconsistent."""


@dataclass(frozen=True, eq=False)
class Channel:
    """Encoded reviews in ragged form: ``lengths`` (int64), ``ids`` (int32, concatenated), ``labels`` or None."""

    lengths: np.ndarray
    ids: np.ndarray
    labels: np.ndarray | None = None
    starts: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        lengths = np.asarray(self.lengths, dtype=np.int64).reshape(-1)
        ids = np.asarray(self.ids, dtype=np.int32).reshape(-1)
        if lengths.size and lengths.min() < 0:
            raise ChannelError("negative review length")
        if int(lengths.sum()) != ids.size:
            raise ChannelError(f"lengths add up to {int(lengths.sum())} ids but the channel holds {ids.size}")
        labels = None
        if self.labels is not None:
            labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
            if labels.size != lengths.size:
                raise ChannelError(f"{labels.size} labels for {lengths.size} reviews")
        starts = np.zeros(len(lengths), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        for name, value in (("lengths", lengths), ("ids", ids), ("labels", labels), ("starts", starts)):
            object.__setattr__(self, name, value)

    # --- construction ---

    @classmethod
    def from_rows(cls, rows: np.ndarray, labels: np.ndarray | Sequence[int] | None = None) -> Channel:
        """From padded rows ``length, ids…`` (a row's length is capped by its width)."""
        rows = np.asarray(rows)
        lengths = np.minimum(rows[:, 0], rows.shape[1] - 1).astype(np.int64)
        mask = np.arange(rows.shape[1] - 1)[None, :] < lengths[:, None]
        return cls(lengths, rows[:, 1:][mask], None if labels is None else np.asarray(labels))

    @classmethod
    def from_sequences(cls, sequences: Sequence[Sequence[int]], labels: Sequence[int] | None = None) -> Channel:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        ids = np.fromiter((i for s in sequences for i in s), dtype=np.int32, count=int(lengths.sum()))
        return cls(lengths, ids, None if labels is None else np.asarray(labels))

    # --- access ---

    def __len__(self) -> int:
        return len(self.lengths)

    def review(self, i: int) -> np.ndarray:
        """Review ``i``'s ids (a view)."""
        start = self.starts[i]
        return self.ids[start : start + self.lengths[i]]

    def max_id(self) -> int:
        return int(self.ids.max()) if self.ids.size else 0

    def take(self, index: np.ndarray | Sequence[int]) -> Channel:
        """The reviews ``index``, in that order."""
        index = np.asarray(index, dtype=np.int64)
        lengths = self.lengths[index]
        return Channel(lengths, self.ids[ragged_positions(self.starts[index], lengths)], _take(self.labels, index))

    def truncated(self, max_tokens: int) -> Channel:
        """Each review cut to its first ``max_tokens`` ids."""
        lengths = np.minimum(self.lengths, max_tokens)
        return Channel(lengths, self.ids[ragged_positions(self.starts, lengths)], self.labels)

    def rows(self, index: np.ndarray | Sequence[int] | None = None, max_tokens: int | None = None) -> np.ndarray:
        """Padded int64 rows ``length, ids…`` of reviews ``index`` (all by default), each cut to ``max_tokens``, as
        wide as the longest of them (at least one id column)."""
        index = np.arange(len(self)) if index is None else np.asarray(index, dtype=np.int64)
        lengths = self.lengths[index]
        if max_tokens is not None:
            lengths = np.minimum(lengths, max_tokens)
        width = int(lengths.max(initial=0)) + 1
        rows = np.zeros((len(index), max(width, 2)), dtype=np.int64)
        rows[:, 0] = lengths
        mask = np.arange(rows.shape[1] - 1)[None, :] < lengths[:, None]
        rows[:, 1:][mask] = self.ids[ragged_positions(self.starts[index], lengths)]
        return rows

    def batches(self, size: int, max_tokens: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(index, rows)`` in length order, ``size`` reviews at a time (each batch as wide as its longest)."""
        order = np.argsort(self.lengths, kind="stable")
        for start in range(0, len(order), size):
            index = order[start : start + size]
            yield index, self.rows(index, max_tokens)


def ragged_positions(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Indices into ``ids`` of ``lengths[k]`` ids from ``starts[k]``, for every k, concatenated."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1], out=offsets[1:])
    return np.repeat(starts - offsets, lengths) + np.arange(total, dtype=np.int64)


def _take(labels: np.ndarray | None, index: np.ndarray) -> np.ndarray | None:
    return None if labels is None else labels[index]


# --- files ----------------------------------------------------------------------------------------------


def _atomic(path: Path, suffix: str) -> tuple[int, Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    return fd, Path(name)


def write_channel(path: Path | str, channel: Channel) -> Path:
    """Write ``channel`` to ``path`` (``<name>.npz``) atomically: a crash never leaves half a file."""
    path = Path(path)
    arrays = {"lengths": channel.lengths.astype(np.int32), "ids": channel.ids.astype(np.int32)}
    if channel.labels is not None:
        arrays["labels"] = channel.labels.astype(np.int8)
    fd, tmp = _atomic(path, ".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_channel(path: Path | str) -> Channel:
    """Read a ``.npz`` channel file; raises ChannelError naming what is wrong."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            names = set(data.files)
            if not {"lengths", "ids"} <= names or names - set(ARRAYS):
                raise ChannelError(f"{path} holds arrays {sorted(names)}, expected lengths, ids and labels")
            arrays = {name: data[name] for name in names}
    except (OSError, ValueError, EOFError) as error:
        if isinstance(error, ChannelError):
            raise
        raise ChannelError(f"{path} is not a channel file: {error}") from None
    for name, value in arrays.items():
        if value.ndim != 1 or not np.issubdtype(value.dtype, np.integer):
            raise ChannelError(f"{path}: {name} must be a 1-D integer array, got {value.dtype} {value.shape}")
    try:
        return Channel(arrays["lengths"], arrays["ids"], arrays.get("labels"))
    except ChannelError as error:
        raise ChannelError(f"{path}: {error}") from None


def write_rows_csv(path: Path | str, channel: Channel) -> Path:
    """The batch-transform input: one line ``length,id_1,…,id_length`` per review (atomically)."""
    path = Path(path)
    fd, tmp = _atomic(path, ".tmp")
    try:
        with os.fdopen(fd, "w", encoding="ascii", newline="\n") as handle:
            texts = channel.ids.astype(str)
            for i in range(len(channel)):
                start, length = int(channel.starts[i]), int(channel.lengths[i])
                handle.write(",".join((str(length), *texts[start : start + length])) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_rows_csv(path: Path | str, labelled: bool = False) -> Channel:
    """Lines ``[label,]length,id_1,…`` (variable length, or padded with zeros after ``length`` ids)."""
    path = Path(path)
    sequences: list[list[int]] = []
    labels: list[int] = []
    with open(path, encoding="ascii") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                values = [int(value) for value in line.split(",")]
            except ValueError:
                raise ChannelError(f"{path} line {number} is not comma-separated integers") from None
            if labelled:
                labels.append(values.pop(0) if values else -1)
            if not values or not 0 <= values[0] <= len(values) - 1:
                raise ChannelError(f"{path} line {number}: the length {values[:1]} does not fit the ids on the line")
            sequences.append(values[1 : values[0] + 1])
    return Channel.from_sequences(sequences, labels if labelled else None)


def _read_legacy_csv(path: Path) -> Channel:
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - containers without pandas
        return read_rows_csv(path, labelled=True)
    try:
        table = pd.read_csv(path, header=None, dtype=np.int64).to_numpy()
    except ValueError as error:
        raise ChannelError(f"{path} is not an integer CSV: {error}") from None
    if table.ndim != 2 or table.shape[1] < 3 or (table[:, 1] < 0).any() or (table[:, 1] > table.shape[1] - 2).any():
        raise ChannelError(
            f"{path} has shape {table.shape}; expected rows 'label,length,ids…' with room for length ids"
        )
    return Channel.from_rows(table[:, 1:], table[:, 0])


def read_channel(folder: Path | str, name: str) -> Channel:
    """Channel ``name`` of ``folder``: ``<name>.npz``, else the fixed-width CSV ``<name>.csv`` of older data
    preparation (``label,length,ids…``). Raises ChannelError naming what is missing or wrong."""
    folder = Path(folder)
    path = folder / f"{name}{SUFFIX}"
    if path.is_file():
        return load_channel(path)
    legacy = folder / f"{name}{LEGACY_SUFFIX}"
    if legacy.is_file():
        return _read_legacy_csv(legacy)
    raise ChannelError(f"{path} not found")
