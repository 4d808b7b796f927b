"""The one preprocessing path: tokenizer, vocabulary and encoder.

Training, batch evaluation and serving all import this module (it ships inside ``model.tar.gz`` as
``code/model/preprocessing.py``), so a review is tokenized the same way everywhere.

The tokens are exactly those of the reference notebook::

    text = BeautifulSoup(review, "html.parser").get_text()
    text = re.sub(r"[^a-zA-Z0-9]", " ", text.lower())
    words = [PorterStemmer().stem(w) for w in text.split() if w not in stopwords.words("english")]

Speed comes from doing the same thing once instead of per word: the stopword set and stemmer are built once,
stems are memoised (the stemmer is a pure function), and reviews whose only markup is ``<br />`` skip the HTML
parser (removing those tags is exactly what ``get_text()`` does with them). Everything else goes through
BeautifulSoup. Only the standard library, numpy and beautifulsoup4 are imported (NLTK's Porter stemmer is
vendored in ``model/porter.py``).
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

import numpy as np
from bs4 import BeautifulSoup

from model.porter import PorterStemmer  # NLTK's, vendored: importing nltk costs 4 s and 160 MiB
from model.stopwords import ENGLISH_STOPWORDS, STOPWORDS_SHA256

TOKENIZER_VERSION = "reference-bs4-porter-1"
PAD_ID = 0
INFREQUENT_ID = 1
FIRST_WORD_ID = 2

_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]")
_STOPWORDS = frozenset(ENGLISH_STOPWORDS)
_STEMMER = PorterStemmer()
_BREAK_TAG = "<br />"


@cache
def _stem(word: str) -> str:
    return _STEMMER.stem(word)


def html_to_text(review: str) -> str:
    """The text BeautifulSoup's ``html.parser`` extracts from ``review``."""
    if "&" not in review:
        without_breaks = review.replace(_BREAK_TAG, "")
        if "<" not in without_breaks:
            return without_breaks
    return BeautifulSoup(review, "html.parser").get_text()


def review_to_words(review: str) -> list[str]:
    """Tokens of one raw review: HTML text, lower-cased, alphanumerics only, no stopwords, Porter-stemmed."""
    text = _NON_ALNUM.sub(" ", html_to_text(review).lower())
    return [_stem(word) for word in text.split() if word not in _STOPWORDS]


def reviews_to_words(reviews: Sequence[str]) -> list[list[str]]:
    """``review_to_words`` over many reviews, in this process and in order.

    One process on purpose: a pool forked from a process that runs threads (Prefect's flow engine does) can
    inherit a held lock and hang, and a spawned pool re-imports the parent's main module in every worker; at
    about 6,600 reviews/s per core the whole dataset takes seconds, once per change of the data.
    """
    return [review_to_words(review) for review in reviews]


# --- vocabulary and encoding ----------------------------------------------------------------------


def build_vocabulary(token_lists: Iterable[Sequence[str]], vocab_size: int) -> dict[str, int]:
    """The ``vocab_size - 2`` most frequent words (ties: count descending, then word) → ids from 2."""
    if vocab_size < FIRST_WORD_ID + 1:
        raise ValueError(f"vocab_size must be at least {FIRST_WORD_ID + 1}, got {vocab_size}")
    counts: Counter[str] = Counter()
    for tokens in token_lists:
        counts.update(tokens)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[: vocab_size - FIRST_WORD_ID]
    return {word: index for index, (word, _) in enumerate(ranked, start=FIRST_WORD_ID)}


def encode_words(words: Sequence[str], word_dict: dict[str, int], max_len: int) -> np.ndarray:
    """One row ``length, id_1 … id_max_len``: truncated or padded with 0, unknown words as 1."""
    row = np.zeros(max_len + 1, dtype=np.int64)
    kept = words[:max_len]
    row[0] = len(kept)
    row[1 : len(kept) + 1] = [word_dict.get(word, INFREQUENT_ID) for word in kept]
    return row


def encode_many(token_lists: Sequence[Sequence[str]], word_dict: dict[str, int], max_len: int) -> np.ndarray:
    """Rows for many token lists: an ``(n, max_len + 1)`` int64 array."""
    rows = np.zeros((len(token_lists), max_len + 1), dtype=np.int64)
    for i, words in enumerate(token_lists):
        kept = words[:max_len]
        rows[i, 0] = len(kept)
        rows[i, 1 : len(kept) + 1] = [word_dict.get(word, INFREQUENT_ID) for word in kept]
    return rows


# --- the state a model artifact carries ------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessingConfig:
    """What ``preprocessing.json`` records so a model reproduces its training-time preprocessing."""

    vocab_size: int
    max_len: int
    stopwords_sha256: str = STOPWORDS_SHA256
    tokenizer_version: str = TOKENIZER_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, payload: dict) -> PreprocessingConfig:
        return cls(**{key: payload[key] for key in ("vocab_size", "max_len", "stopwords_sha256", "tokenizer_version")})

    def check_compatible(self) -> None:
        """Refuse state written by a different tokenizer or stopword list than this code's."""
        if self.stopwords_sha256 != STOPWORDS_SHA256 or self.tokenizer_version != TOKENIZER_VERSION:
            raise ValueError(
                "preprocessing.json was written by a different tokenizer "
                f"({self.tokenizer_version}, stopwords {self.stopwords_sha256[:12]}) than this code "
                f"({TOKENIZER_VERSION}, stopwords {STOPWORDS_SHA256[:12]}); retrain the model with this code"
            )


class Preprocessor:
    """Raw review text → model input rows, with a fixed vocabulary and max length."""

    def __init__(self, word_dict: dict[str, int], config: PreprocessingConfig) -> None:
        config.check_compatible()
        self.word_dict = word_dict
        self.config = config

    @classmethod
    def from_dir(cls, directory: Path | str) -> Preprocessor:
        """Load ``word_dict.json`` and ``preprocessing.json`` from a model or channel folder."""
        directory = Path(directory)
        with open(directory / "word_dict.json", encoding="utf-8") as handle:
            word_dict = json.load(handle)
        with open(directory / "preprocessing.json", encoding="utf-8") as handle:
            config = PreprocessingConfig.from_dict(json.load(handle))
        return cls(word_dict, config)

    @property
    def max_len(self) -> int:
        return self.config.max_len

    def encode_texts(self, reviews: Sequence[str]) -> np.ndarray:
        """Rows for raw reviews (tokenized in this process: serving batches are small)."""
        return encode_many([review_to_words(review) for review in reviews], self.word_dict, self.max_len)

    def save(self, directory: Path | str) -> None:
        """Write ``word_dict.json`` and ``preprocessing.json`` into ``directory`` (atomically each)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in (
            ("word_dict.json", json.dumps(self.word_dict, sort_keys=True)),
            ("preprocessing.json", self.config.to_json()),
        ):
            tmp = directory / f".{name}.tmp"
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, directory / name)
