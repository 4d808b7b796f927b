from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from model.artifact import (
    ArtifactError,
    SentimentModel,
    load_artifact,
    pack_model_dir,
    unpack_model,
    write_inference_code,
)
from model.train import TrainConfig, TrainPaths, run_training

LAYOUT = {
    "model.pth",
    "model_info.json",
    "word_dict.json",
    "preprocessing.json",
    "metrics.json",
    "code/inference.py",
    "code/requirements.txt",
    "code/model/__init__.py",
    "code/model/preprocessing.py",
    "code/model/stopwords.py",
    "code/model/network.py",
    "code/model/artifact.py",
    "code/model/inference.py",
    "code/model/train.py",
}


@pytest.fixture(scope="module")
def model_dir(channels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    job = tmp_path_factory.mktemp("job")
    config = TrainConfig(embedding_dim=8, hidden_dim=8, batch_size=16, learning_rate=0.01, epochs=2, seed=1)
    paths = TrainPaths(job / "model", channels / "train", channels / "validation", job / "output", job / "ckpt")
    run_training(config, paths, log=lambda line: None, job_name="job-7")
    return paths.model_dir


@pytest.fixture(scope="module")
def model(model_dir: Path) -> SentimentModel:
    return load_artifact(model_dir)


def test_loaded_model_is_in_eval_mode_with_its_preprocessing(model: SentimentModel) -> None:
    assert not model.network.training
    assert model.version == "job-7"
    assert model.info["vocab_size"] == model.preprocessor.config.vocab_size
    assert model.preprocessor.max_len == model.info["max_len"]


def test_predict_proba_is_float64_ordered_and_deterministic(model: SentimentModel, channels: Path) -> None:
    rows = np.loadtxt(channels / "validation" / "validation.csv", delimiter=",", dtype=np.int64)[:, 1:]
    model.batch_size = 7  # several length-sorted batches
    scores = model.predict_proba(rows)
    assert scores.dtype == np.float64 and scores.shape == (len(rows),)
    assert ((scores >= 0) & (scores <= 1)).all()
    assert np.array_equal(scores, model.predict_proba(rows))
    order = np.random.default_rng(0).permutation(len(rows))
    np.testing.assert_allclose(model.predict_proba(rows[order]), scores[order], atol=1e-6)
    one_by_one = np.array([model.predict_proba(row[None, :])[0] for row in rows[:5]])
    np.testing.assert_allclose(one_by_one, scores[:5], atol=1e-6)


def test_predict_texts_separates_the_synthetic_sentiment(model: SentimentModel) -> None:
    positive, negative = model.predict_texts(["wonderful brilliant loved it", "awful boring, a waste"])
    assert positive > 0.5 > negative
    assert model.predict_texts([]).shape == (0,)


def test_predict_proba_rejects_rows_of_another_vocabulary(model: SentimentModel) -> None:
    rows = np.array([[2, 5, 10_000]], dtype=np.int64)
    with pytest.raises(ArtifactError, match="word ids outside"):
        model.predict_proba(rows)
    with pytest.raises(ArtifactError, match="2-D integer array"):
        model.predict_proba(np.array([1.5, 2.0]))


def test_load_artifact_names_a_missing_file(model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    (broken / "model.pth").unlink()
    with pytest.raises(ArtifactError, match="lacks model.pth"):
        load_artifact(broken)


def test_model_tar_layout_and_round_trip(model_dir: Path, tmp_path: Path) -> None:
    tar_path = pack_model_dir(model_dir, tmp_path / "model.tar.gz")
    with tarfile.open(tar_path) as tar:
        names = {member.name for member in tar.getmembers() if member.isfile()}
    assert names >= LAYOUT
    assert not any(name.startswith(("/", "./", "model/model.pth")) or "__pycache__" in name for name in names)
    assert pack_model_dir(model_dir, tmp_path / "again.tar.gz").read_bytes() == tar_path.read_bytes()

    unpacked = unpack_model(tar_path, tmp_path / "unpacked")
    rows = load_artifact(model_dir).preprocessor.encode_texts(["a great film", "a dull film"])
    np.testing.assert_array_equal(
        load_artifact(unpacked).predict_proba(rows), load_artifact(model_dir).predict_proba(rows)
    )


def test_requirements_pin_the_tokenizer_dependencies_with_hashes_at_the_installed_versions(model_dir: Path) -> None:
    """code/requirements.txt: bs4 and its dependencies, each ``==`` this venv's version (so the local twin's
    toolkits find them installed) with one wheel hash; no nltk (its stemmer is vendored)."""
    from importlib.metadata import version

    lines = [line for line in (model_dir / "code" / "requirements.txt").read_text().splitlines() if line[:1] != "#"]
    matches = [re.fullmatch(r"(\S+)==(\S+) --hash=sha256:[0-9a-f]{64}", line) for line in lines]
    pins = {match[1]: match[2] for match in matches if match}
    assert len(pins) == len(lines)
    assert sorted(pins) == ["beautifulsoup4", "soupsieve", "typing-extensions"]
    assert all(pins[name] == version(name) for name in pins)
    assert (model_dir / "code" / "model" / "requirements.lock.txt").is_file()  # code/model/ is self-contained
    assert not (model_dir / "code" / "wheels").exists()  # vendored only when asked


def test_code_dir_serves_on_its_own(model_dir: Path, tmp_path: Path) -> None:
    """code/inference.py imports only what code/ carries (as in SageMaker's container) and loads the model."""
    script = (
        "import sys, inference, model.artifact\n"
        f"assert model.artifact.__file__.startswith({str(model_dir / 'code')!r}), model.artifact.__file__\n"
        f"loaded = inference.model_fn({str(model_dir)!r})\n"
        "print(type(loaded).__name__, all(callable(f) for f in "
        "(inference.input_fn, inference.predict_fn, inference.output_fn)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(model_dir / "code")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["SentimentModel", "True"]


def test_code_dir_is_a_copy_of_the_model_package_and_the_three_line_entry(model_dir: Path) -> None:
    package = Path(__file__).resolve().parents[2] / "model"
    shipped = sorted(path.name for path in (model_dir / "code" / "model").iterdir())
    assert shipped == sorted([*(path.name for path in package.glob("*.py")), "requirements.lock.txt"])
    for name in shipped:
        assert (model_dir / "code" / "model" / name).read_bytes() == (package / name).read_bytes()
    assert sorted(path.name for path in (model_dir / "code").iterdir()) == ["inference.py", "model", "requirements.txt"]
    assert (model_dir / "code" / "inference.py").read_text().count("\n") == 3


def test_write_inference_code_fails_clearly_without_the_handlers(tmp_path: Path) -> None:
    source = tmp_path / "src" / "model"
    shutil.copytree(Path(__file__).resolve().parents[2] / "model", source)
    (source / "inference.py").unlink()
    with pytest.raises(ArtifactError, match=r"model/inference.py not found"):
        write_inference_code(tmp_path / "model", package_dir=source)


def _tar_with(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    path = tmp_path / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize("name", ["../escape.txt", "/etc/evil.txt"])
def test_unpack_refuses_paths_leaving_the_destination(name: str, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="unsafe entry"):
        unpack_model(_tar_with(tmp_path, tarfile.TarInfo(name), b"x"), tmp_path / "dest")
    assert not (tmp_path / "escape.txt").exists()


def test_unpack_refuses_links(tmp_path: Path) -> None:
    link = tarfile.TarInfo("model.pth")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    with pytest.raises(ArtifactError, match="unsafe entry 'model.pth'"):
        unpack_model(_tar_with(tmp_path, link), tmp_path / "dest")


def test_unpack_rejects_a_file_that_is_not_a_tarball(tmp_path: Path) -> None:
    junk = tmp_path / "model.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(ArtifactError, match="cannot unpack"):
        unpack_model(junk, tmp_path / "dest")


# --- the default model (nb-lstm over words-neg-punct-2) ------------------------------------------------------


@pytest.fixture(scope="module")
def nb_model_dir(np2_channels: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An nb-lstm model folder written by hand from a staged training on the synthetic default channels."""
    import json

    import torch

    from model.artifact import atomic_torch_save, write_inference_code
    from model.channels import read_channel
    from model.network import NBLSTMClassifier
    from model.stages import StagedConfig, train_staged

    config = StagedConfig(epochs=1, batch_size=16, embedding_dim=8, hidden_dim=8, lstm_vocab=60, lstm_len=30,
                          ngram_buckets=2000, wide_batch_size=16, wide_lr=0.05, seed=2)  # fmt: skip
    torch.manual_seed(config.seed)
    network = NBLSTMClassifier(60, lstm_vocab=60, lstm_len=30, embedding_dim=8, hidden_dim=8, ngram_buckets=2000)
    root = tmp_path_factory.mktemp("nb-model")
    train = read_channel(np2_channels / "train", "train")
    validation = read_channel(np2_channels / "validation", "validation")
    train_staged(network, config, train, validation, root / "ckpt", log=lambda line: None)
    with torch.no_grad():  # a real mix of both paths, whatever the validation grid chose
        network.wide_scale.fill_(0.6)
        network.deep_scale.fill_(0.4)
    model_dir = root / "model"
    model_dir.mkdir()
    atomic_torch_save(network.state_dict(), model_dir / "model.pth")
    info = {"architecture": "nb-lstm", "vocab_size": 60, "max_len": 200, "embedding_dim": 8, "hidden_dim": 8,
            **config.network_info(), "returns_logits": True}  # fmt: skip
    (model_dir / "model_info.json").write_text(json.dumps(info))
    for name in ("word_dict.json", "preprocessing.json"):
        shutil.copyfile(np2_channels / "train" / name, model_dir / name)
    (model_dir / "metrics.json").write_text("{}")
    write_inference_code(model_dir)
    return model_dir


def test_nb_lstm_artifact_round_trip_and_prediction_path(nb_model_dir: Path, tmp_path: Path) -> None:
    import torch

    model = load_artifact(nb_model_dir)
    assert model.preprocessor.version == "words-neg-punct-2" and model.network.cost_window == 30
    reviews = ["Not good. I would not recommend it.", "wonderful brilliant loved it", "awful boring waste", ""]
    scores = model.predict_texts(reviews)
    rows = model.preprocessor.encode_texts(reviews)
    with torch.inference_mode():
        direct = torch.sigmoid(model.network(torch.from_numpy(rows))).double().numpy()
    np.testing.assert_allclose(scores, direct, atol=1e-6)
    model.batch_size, model.batch_tokens = 2, 40  # other batches, the same scores
    np.testing.assert_allclose(model.predict_texts(reviews), scores, atol=1e-6)
    unpacked = unpack_model(pack_model_dir(nb_model_dir, tmp_path / "model.tar.gz"), tmp_path / "unpacked")
    np.testing.assert_array_equal(load_artifact(unpacked).predict_texts(reviews), scores)
    state = torch.load(nb_model_dir / "model.pth", weights_only=True)
    assert state["wide.weight"][0].item() == 0.0 and float(state["deep_scale"]) == pytest.approx(0.4)


def test_predict_proba_cuts_padding_and_budgets_the_lstm_window(nb_model_dir: Path) -> None:
    model = load_artifact(nb_model_dir)
    seen: list[tuple[int, int]] = []
    forward = model.network.forward
    model.network.forward = lambda x: (seen.append(tuple(x.shape)), forward(x))[1]
    lengths = [3, 180, 5, 150, 0]
    rows = np.zeros((5, 201), dtype=np.int64)
    for i, length in enumerate(lengths):
        rows[i, 0] = length
        rows[i, 1 : length + 1] = np.arange(length) % 57 + 2
    model.batch_tokens = 60  # two rows of the 30-token LSTM window per batch, whatever their full length
    scores = model.predict_proba(rows)
    assert seen == [(3, 6), (2, 181)]  # length-sorted, each batch as wide as its longest row
    seen.clear()
    model.network.lstm_len = 1000  # counted on whole lengths, the two long reviews would travel alone
    model.predict_proba(rows)
    assert seen == [(3, 6), (1, 151), (1, 181)]
    model.network.lstm_len = 30
    assert np.array_equal(scores[[4, 0]], model.predict_proba(rows[[4, 0]]))
