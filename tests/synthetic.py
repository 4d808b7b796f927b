"""A small, deterministic aclImdb-shaped dataset for fast tests (no shared data needed).

Reviews mix sentiment words with neutral filler and a little HTML, so a model can learn them in one epoch.
"""

from __future__ import annotations

import random
import tarfile
from pathlib import Path

POSITIVE = [
    "great",
    "wonderful",
    "loved",
    "excellent",
    "brilliant",
    "superb",
    "enjoyable",
    "masterpiece",
    "touching",
]
NEGATIVE = ["awful", "terrible", "boring", "waste", "worst", "dull", "horrible", "stupid", "disappointing"]
FILLER = [
    "movie",
    "film",
    "plot",
    "actor",
    "scene",
    "story",
    "director",
    "camera",
    "music",
    "ending",
    "character",
    "script",
    "cinema",
    "screen",
    "time",
    "minutes",
    "cast",
    "role",
    "dialogue",
    "studio",
]


def synthetic_review(rng: random.Random, positive: bool) -> str:
    mood = POSITIVE if positive else NEGATIVE
    words = [rng.choice(FILLER) for _ in range(rng.randint(20, 60))]
    for _ in range(rng.randint(3, 6)):
        words.insert(rng.randrange(len(words)), rng.choice(mood))
    text = " ".join(words)
    return text[:40] + "<br /><br />" + text[40:] + ("" if rng.random() < 0.8 else " &amp; <i>more</i>")


def write_aclimdb(root: Path, per_class: int = 100, seed: int = 7, unlearnable: bool = False) -> Path:
    """Write ``root/aclImdb/{train,test}/{pos,neg}/ID_RATING.txt``; returns the ``aclImdb`` folder.

    ``unlearnable``: each text's mood is a coin flip, unrelated to its label (a model can only guess).
    """
    rng = random.Random(seed)
    base = root / "aclImdb"
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            folder = base / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                rating = rng.randint(7, 10) if label == "pos" else rng.randint(1, 4)
                (folder / f"{i}_{rating}.txt").write_text(synthetic_review(rng, label == "pos"), encoding="utf-8")
    (base / "README").write_text("synthetic aclImdb for tests\n")
    return base


def write_archive(
    root: Path,
    per_class: int = 100,
    seed: int = 7,
    name: str = "aclImdb_test.tar.gz",
    unlearnable: bool = False,
) -> Path:
    """A ``.tar.gz`` of ``write_aclimdb`` output; returns its path."""
    source = write_aclimdb(root / "src", per_class, seed, unlearnable)
    archive = root / name
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname="aclImdb")
    return archive
