"""The one preprocessing path: versioned tokenizers, vocabulary and encoder.

Training, batch evaluation and serving all import this module (it ships inside ``model.tar.gz`` as
``code/model/preprocessing.py``), so a review is tokenized the same way everywhere. Which tokenizer a model uses
is part of its state: ``preprocessing.json`` records ``tokenizer_version`` and the version's parameters, and
:class:`Preprocessor` tokenizes with exactly that version (it refuses a version or parameters this code does not
implement).

Versions (:data:`TOKENIZERS`):

- ``reference-bs4-porter-1`` — the tokens of the reference notebook, unchanged::

      text = BeautifulSoup(review, "html.parser").get_text()
      text = re.sub(r"[^a-zA-Z0-9]", " ", text.lower())
      words = [PorterStemmer().stem(w) for w in text.split() if w not in stopwords.words("english")]

  Speed comes from doing the same thing once instead of per word: the stopword set and stemmer are built once,
  stems are memoised (the stemmer is a pure function), and reviews whose only markup is ``<br />`` skip the HTML
  parser (removing those tags is exactly what ``get_text()`` does with them). BeautifulSoup is imported the first
  time this version is used, never by the other one; NLTK's Porter stemmer is vendored in ``model/porter.py``
  (importing nltk costs 4 s and 160 MiB).
  NLTK's stopword list removes "not", "no", "nor" and the "n't" forms, which sentiment needs.
- ``words-neg-punct-2`` (the default) — what sentiment needs, standard library only: markup tags → space, HTML
  entities decoded (``html.unescape``), lower-case, ``n't`` → `` not`` ("didn't" → "did not"), tokens are runs of
  ``[a-z0-9]`` plus ``!`` and ``?`` as tokens of their own; no stopword removal, no stemming. About 3× the
  reference tokenizer's speed on one core.

Rows: one int64 row per review, ``length, id_1 … id_length`` padded with 0 (id 1 = a word outside the
vocabulary). Channel files are in :mod:`model.channels`.
"""

from __future__ import annotations

import html
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from itertools import chain, repeat
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from model.porter import PorterStemmer  # NLTK's, vendored: importing nltk costs 4 s and 160 MiB
from model.stopwords import ENGLISH_STOPWORDS, STOPWORDS_SHA256

REFERENCE_VERSION = "reference-bs4-porter-1"
NEG_PUNCT_VERSION = "words-neg-punct-2"
DEFAULT_TOKENIZER_VERSION = NEG_PUNCT_VERSION
PAD_ID = 0
INFREQUENT_ID = 1
FIRST_WORD_ID = 2

Tokenizer = Callable[[str], list[str]]

# --- reference-bs4-porter-1 ---------------------------------------------------------------------------

_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]")
_STOPWORDS = frozenset(ENGLISH_STOPWORDS)
_BREAK_TAG = "<br />"
_REFERENCE_MODULES = ("bs4",)


@cache
def _beautiful_soup() -> Any:
    from bs4 import BeautifulSoup  # lazily: only the reference version parses HTML with it

    return BeautifulSoup


@cache
def _stemmer() -> Callable[[str], str]:
    return cache(PorterStemmer().stem)


def html_to_text(review: str) -> str:
    """The text BeautifulSoup's ``html.parser`` extracts from ``review``."""
    if "&" not in review:
        without_breaks = review.replace(_BREAK_TAG, "")
        if "<" not in without_breaks:
            return without_breaks
    return _beautiful_soup()(review, "html.parser").get_text()


def review_to_words(review: str) -> list[str]:
    """``reference-bs4-porter-1`` tokens of one raw review: HTML text, lower-cased, alphanumerics only, no
    stopwords, Porter-stemmed."""
    stem = _stemmer()
    text = _NON_ALNUM.sub(" ", html_to_text(review).lower())
    return [stem(word) for word in text.split() if word not in _STOPWORDS]


# --- words-neg-punct-2 ----------------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]*>")
_NEGATION = re.compile(r"n['\u2019]t\b")
_TOKEN = re.compile(r"[a-z0-9]+|[!?]")


def words_neg_punct(review: str) -> list[str]:
    """``words-neg-punct-2`` tokens of one raw review (see the module docstring)."""
    if "<" in review:
        review = _TAG.sub(" ", review)
    if "&" in review:
        review = html.unescape(review)
    return _TOKEN.findall(_NEGATION.sub(" not", review.lower()))


# --- the versions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenizerSpec:
    """A tokenizer version: its function and the parameters ``preprocessing.json`` records for it."""

    version: str
    tokenize: Tokenizer
    params: dict[str, Any]
    stopwords_sha256: str | None = None


TOKENIZERS: dict[str, TokenizerSpec] = {
    REFERENCE_VERSION: TokenizerSpec(
        REFERENCE_VERSION,
        review_to_words,
        {
            "html": "bs4 html.parser get_text",
            "lowercase": True,
            "tokens": "[a-zA-Z0-9]+",
            "negations": "removed with the stopwords",
            "stopwords": f"nltk english ({len(ENGLISH_STOPWORDS)})",
            "stemmer": "nltk porter",
        },
        STOPWORDS_SHA256,
    ),
    NEG_PUNCT_VERSION: TokenizerSpec(
        NEG_PUNCT_VERSION,
        words_neg_punct,
        {
            "html": "tags to space, html.unescape",
            "lowercase": True,
            "tokens": "[a-z0-9]+|[!?]",
            "negations": "n't -> ' not'",
            "stopwords": None,
            "stemmer": None,
        },
    ),
}


def tokenizer_spec(version: str) -> TokenizerSpec:
    """The spec of ``version``; raises ValueError naming the known versions."""
    if version not in TOKENIZERS:
        raise ValueError(f"unknown tokenizer_version {version!r}; choose one of {', '.join(sorted(TOKENIZERS))}")
    return TOKENIZERS[version]


def tokenizer(version: str) -> Tokenizer:
    """The tokenize function of ``version``."""
    return tokenizer_spec(version).tokenize


def _tokenize_chunk(version: str, reviews: Sequence[str]) -> list[list[str]]:
    tokenize = tokenizer(version)
    return [tokenize(review) for review in reviews]


def default_workers() -> int:
    """One worker per usable core."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def tokenize_many(reviews: Sequence[str], version: str, workers: int = 1, chunk_size: int = 500) -> list[list[str]]:
    """``version``'s tokens of many reviews, order kept: in this process (``workers`` 1, the default — at about
    10,000 reviews/s per core the default version does the whole dataset in seconds), or on ``workers`` processes
    (0 = one per core).

    The workers come from a ``forkserver``, never from ``fork`` of this process: forking a process that runs
    other threads (Prefect's engine, an event loop) can leave a child blocked on a lock copied mid-use and the
    parent waiting for it forever. The fork server is a fresh single-threaded interpreter that has imported this
    module (and, for the reference version, BeautifulSoup); it is started once per process (about 0.6 s),
    and later pools fork from it in about 0.1 s. Workers also import the parent's ``__main__`` module, as
    ``spawn`` does.
    """
    tokenizer_spec(version)
    workers = workers or default_workers()
    if workers == 1 or len(reviews) < 2 * chunk_size:
        return _tokenize_chunk(version, reviews)
    chunks = [(version, reviews[i : i + chunk_size]) for i in range(0, len(reviews), chunk_size)]
    context = get_context("forkserver")
    # what the workers need, imported once in the server (the first pool decides: the server then keeps running)
    context.set_forkserver_preload([__name__, *(_REFERENCE_MODULES if version == REFERENCE_VERSION else ())])
    with context.Pool(min(workers, len(chunks))) as pool:
        parts = pool.starmap(_tokenize_chunk, chunks, chunksize=1)
    return [words for part in parts for words in part]


def reviews_to_words(reviews: Sequence[str], workers: int = 1, chunk_size: int = 500) -> list[list[str]]:
    """``review_to_words`` (the reference version) over many reviews: :func:`tokenize_many` (one process unless
    ``workers`` says otherwise: the data stage runs inside Prefect's threaded engine)."""
    return tokenize_many(reviews, REFERENCE_VERSION, workers, chunk_size)


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


def encode_ids(token_lists: Sequence[Sequence[str]], word_dict: dict[str, int], max_len: int) -> tuple:
    """``(lengths, ids)``: each list's kept length (at most ``max_len``) as int64 and all kept ids concatenated in
    row order as int32 (unknown words → 1) — the ragged form :mod:`model.channels` stores."""
    kept = [tokens[:max_len] for tokens in token_lists]
    lengths = np.fromiter((len(tokens) for tokens in kept), dtype=np.int64, count=len(kept))
    total = int(lengths.sum())
    # map() over the chained words with a repeated default: C loops only, no generator frame per word
    words = chain.from_iterable(kept)
    ids = np.fromiter(map(word_dict.get, words, repeat(INFREQUENT_ID, total)), dtype=np.int32, count=total)
    return lengths, ids


def pad_rows(lengths: np.ndarray, ids: np.ndarray, width: int) -> np.ndarray:
    """``(n, width)`` int64 rows ``length, ids…, 0…`` from the ragged form (every length < ``width``)."""
    rows = np.zeros((len(lengths), width), dtype=np.int64)
    rows[:, 0] = lengths
    rows[:, 1:][np.arange(width - 1)[None, :] < lengths[:, None]] = ids  # row-major fill
    return rows


def encode_words(words: Sequence[str], word_dict: dict[str, int], max_len: int) -> np.ndarray:
    """One row ``length, id_1 … id_max_len``: truncated or padded with 0, unknown words as 1."""
    return encode_many([words], word_dict, max_len)[0]


def encode_many(token_lists: Sequence[Sequence[str]], word_dict: dict[str, int], max_len: int) -> np.ndarray:
    """Rows for many token lists: an ``(n, max_len + 1)`` int64 array."""
    lengths, ids = encode_ids(token_lists, word_dict, max_len)
    return pad_rows(lengths, ids, max_len + 1)


# --- the state a model artifact carries ------------------------------------------------------------


@dataclass(frozen=True)
class PreprocessingConfig:
    """What ``preprocessing.json`` records so a model reproduces its training-time preprocessing.

    ``tokenizer_version`` defaults to the reference version: the one state files written before versions existed
    used. Pipelines pass the version they want (the default model uses :data:`DEFAULT_TOKENIZER_VERSION`).
    ``stopwords_sha256`` and ``tokenizer_params`` default to the version's own.
    """

    vocab_size: int
    max_len: int
    stopwords_sha256: str | None = None
    tokenizer_version: str = REFERENCE_VERSION
    tokenizer_params: dict[str, Any] | None = field(default=None, compare=True)

    def __post_init__(self) -> None:
        spec = TOKENIZERS.get(self.tokenizer_version)
        if spec is None:
            return  # check_compatible names the problem
        if self.stopwords_sha256 is None and spec.stopwords_sha256 is not None:
            object.__setattr__(self, "stopwords_sha256", spec.stopwords_sha256)
        if self.tokenizer_params is None:
            object.__setattr__(self, "tokenizer_params", dict(spec.params))

    def to_dict(self) -> dict[str, Any]:
        return {
            "vocab_size": self.vocab_size,
            "max_len": self.max_len,
            "stopwords_sha256": self.stopwords_sha256,
            "tokenizer_version": self.tokenizer_version,
            "tokenizer_params": self.tokenizer_params,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, payload: dict) -> PreprocessingConfig:
        """Read ``preprocessing.json`` (files written before versions existed hold the reference version)."""
        return cls(
            vocab_size=int(payload["vocab_size"]),
            max_len=int(payload["max_len"]),
            stopwords_sha256=payload.get("stopwords_sha256"),
            tokenizer_version=payload.get("tokenizer_version", REFERENCE_VERSION),
            tokenizer_params=payload.get("tokenizer_params"),
        )

    def check_compatible(self) -> None:
        """Refuse state written by a tokenizer (version, parameters, stopword list) this code does not implement."""
        spec = TOKENIZERS.get(self.tokenizer_version)
        if spec is None:
            raise ValueError(
                f"preprocessing.json was written by tokenizer {self.tokenizer_version!r}, which this code does not "
                f"have (it has {', '.join(sorted(TOKENIZERS))}); retrain the model with this code"
            )
        if self.stopwords_sha256 != spec.stopwords_sha256 or self.tokenizer_params != spec.params:
            recorded = (self.stopwords_sha256 or "none")[:12]
            expected = (spec.stopwords_sha256 or "none")[:12]
            raise ValueError(
                f"preprocessing.json was written by a different tokenizer than this code's {spec.version} "
                f"(stopwords {recorded} vs {expected}, parameters {self.tokenizer_params} vs {spec.params}); "
                "retrain the model with this code"
            )


class Preprocessor:
    """Raw review text → model input rows, with the state's tokenizer version, vocabulary and max length."""

    def __init__(self, word_dict: dict[str, int], config: PreprocessingConfig) -> None:
        config.check_compatible()
        self.word_dict = word_dict
        self.config = config
        self.tokenize: Tokenizer = tokenizer(config.tokenizer_version)

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

    @property
    def version(self) -> str:
        return self.config.tokenizer_version

    def encode_texts(self, reviews: Sequence[str]) -> np.ndarray:
        """``(n, max_len + 1)`` rows for raw reviews (tokenized in this process: serving batches are small)."""
        return encode_many([self.tokenize(review) for review in reviews], self.word_dict, self.max_len)

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
