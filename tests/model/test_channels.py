"""Channel files: the .npz format round trip, ragged access, the batch-transform CSV lines, older CSV channels."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from model.channels import (
    Channel,
    ChannelError,
    load_channel,
    read_channel,
    read_rows_csv,
    write_channel,
    write_rows_csv,
)

SEQUENCES = [[5, 6, 7], [], [2], [9, 8, 7, 6, 5, 4], [3, 3]]
LABELS = [1, 0, 1, 0, 1]


@pytest.fixture
def channel() -> Channel:
    return Channel.from_sequences(SEQUENCES, LABELS)


def test_npz_round_trip_without_pickle(channel: Channel, tmp_path: Path) -> None:
    path = write_channel(tmp_path / "train" / "train.npz", channel)
    with zipfile.ZipFile(path) as archive:
        assert sorted(archive.namelist()) == ["ids.npy", "labels.npy", "lengths.npy"]
    with np.load(path, allow_pickle=False) as data:
        assert data["lengths"].dtype == np.int32 and data["ids"].dtype == np.int32 and data["labels"].dtype == np.int8
    loaded = load_channel(path)
    assert loaded.lengths.tolist() == [3, 0, 1, 6, 2] and loaded.labels.tolist() == LABELS
    assert [loaded.review(i).tolist() for i in range(len(loaded))] == SEQUENCES
    assert read_channel(tmp_path / "train", "train").ids.tolist() == channel.ids.tolist()
    assert not list((tmp_path / "train").glob(".*")), "no temporary file left behind"


def test_unlabelled_channel_round_trip(tmp_path: Path) -> None:
    loaded = load_channel(write_channel(tmp_path / "test.npz", Channel.from_sequences(SEQUENCES)))
    assert loaded.labels is None and loaded.max_id() == 9


def test_rows_take_and_truncate(channel: Channel) -> None:
    rows = channel.rows()
    assert rows.dtype == np.int64 and rows.shape == (5, 7)
    assert rows[3].tolist() == [6, 9, 8, 7, 6, 5, 4] and rows[1].tolist() == [0] * 7
    assert channel.rows([2, 0], max_tokens=2).tolist() == [[1, 2, 0], [2, 5, 6]]
    assert channel.rows([1]).tolist() == [[0, 0]]  # at least one id column
    taken = channel.take([3, 0])
    assert taken.labels.tolist() == [0, 1] and [taken.review(i).tolist() for i in range(2)] == [
        SEQUENCES[3],
        SEQUENCES[0],
    ]
    cut = channel.truncated(2)
    assert cut.lengths.tolist() == [2, 0, 1, 2, 2] and cut.review(3).tolist() == [9, 8]
    assert Channel.from_rows(rows, LABELS).ids.tolist() == channel.ids.tolist()
    seen = sorted(int(i) for index, batch in channel.batches(2) for i in index)
    assert seen == list(range(5))
    for index, batch in channel.batches(2):
        assert (batch[:, 0] == channel.lengths[index]).all()


def test_batch_transform_lines_are_whole_reviews(channel: Channel, tmp_path: Path) -> None:
    path = write_rows_csv(tmp_path / "test_features.csv", channel)
    assert path.read_text().splitlines() == ["3,5,6,7", "0", "1,2", "6,9,8,7,6,5,4", "2,3,3"]
    back = read_rows_csv(path)
    assert back.labels is None and back.ids.tolist() == channel.ids.tolist()


def test_fixed_width_csv_of_older_data_preparation_is_read(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text("1,2,5,6,0,0\n0,0,0,0,0,0\n1,4,2,3,4,5\n")
    legacy = read_channel(tmp_path, "train")
    assert legacy.labels.tolist() == [1, 0, 1] and legacy.lengths.tolist() == [2, 0, 4]
    assert legacy.ids.tolist() == [5, 6, 2, 3, 4, 5]
    (tmp_path / "bad.csv").write_text("1,7,5,6\n")
    with pytest.raises(ChannelError, match="room for length ids"):
        read_channel(tmp_path, "bad")


def test_malformed_channels_are_named(tmp_path: Path) -> None:
    with pytest.raises(ChannelError, match="validation.npz not found"):
        read_channel(tmp_path, "validation")
    np.savez(tmp_path / "short.npz", lengths=np.array([3, 2], dtype=np.int32), ids=np.arange(4, dtype=np.int32))
    with pytest.raises(ChannelError, match="lengths add up to 5 ids but the channel holds 4"):
        load_channel(tmp_path / "short.npz")
    np.savez(tmp_path / "other.npz", rows=np.zeros((2, 2)))
    with pytest.raises(ChannelError, match="expected lengths, ids and labels"):
        load_channel(tmp_path / "other.npz")
    np.savez(tmp_path / "objects.npz", lengths=np.array([1], dtype=object), ids=np.array([1]))
    with pytest.raises(ChannelError, match="not a channel file"):  # object arrays need pickle: refused
        load_channel(tmp_path / "objects.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ChannelError, match="not a channel file"):
        load_channel(tmp_path / "junk.npz")
    with pytest.raises(ChannelError, match="2 labels for 5 reviews"):
        Channel.from_sequences(SEQUENCES, [1, 0])
    (tmp_path / "lines.csv").write_text("2,5\n")
    with pytest.raises(ChannelError, match="line 1"):
        read_rows_csv(tmp_path / "lines.csv")
