"""Tokenizer versions: the reference one produces exactly the notebook's tokens, the default one keeps what sentiment
needs; the state records the version and its parameters; vocabulary and encoding follow the spec."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from benchmarks.reference_preprocessing import review_to_words as reference_review_to_words
from benchmarks.reference_preprocessing import review_to_words_fast_reference
from model.preprocessing import (
    DEFAULT_TOKENIZER_VERSION,
    INFREQUENT_ID,
    NEG_PUNCT_VERSION,
    REFERENCE_VERSION,
    TOKENIZERS,
    PreprocessingConfig,
    Preprocessor,
    build_vocabulary,
    encode_ids,
    encode_many,
    encode_words,
    html_to_text,
    review_to_words,
    reviews_to_words,
    tokenize_many,
    tokenizer,
    words_neg_punct,
)

UNIT_CASES = [
    "This movie was great!<br /><br />I loved it.",
    "<br/>Broken <b>nested <i>tags</b> here</i> and <unclosed",
    "Entities: &amp; &lt;b&gt; &quot;quoted&quot; &eacute;t&eacute; &#39;s &nbsp;",
    "Digits 1984, 2001: a space odyssey, 3rd time, 10/10",
    "Apostrophes: don't, it's, isn't, couldn't've, rock 'n' roll",
    "Non-ASCII letters: café naïve Zoë Ångström İstanbul KELVIN",
    "",
    "   \n\t  ",
    "<script>alert('x')</script><style>p{}</style> after",
    "a > b and c < d but <br /> not &amp",
    "<!-- comment --> visible <![CDATA[ cdata ]]> text",
    "Running runners ran; the generously generalized generation",
]


@pytest.mark.parametrize("review", UNIT_CASES)
def test_tokens_match_the_reference_definition(review: str) -> None:
    assert review_to_words(review) == reference_review_to_words(review)


def test_stopwords_removed_and_words_stemmed() -> None:
    assert review_to_words("The films were running and the actors are loving it") == [
        "film",
        "run",
        "actor",
        "love",
    ]


def test_break_tags_are_removed_like_the_html_parser() -> None:
    assert html_to_text("one<br />two<br /><br />three") == "onetwothree"


def test_batch_form_keeps_order_and_matches_single() -> None:
    rng = random.Random(3)
    words = ["good", "bad", "<br />", "film", "&amp;", "acting", "loved"]
    reviews = [" ".join(rng.choice(words) for _ in range(30)) for _ in range(1200)]
    assert reviews_to_words(reviews) == [review_to_words(r) for r in reviews]


@pytest.mark.e2e  # reads the whole shared dataset
@pytest.mark.data
def test_tokens_identical_on_thousands_of_real_reviews(imdb_archive) -> None:
    """Every 10th review of both splits (5,000 reviews) tokenizes exactly as the reference does."""
    with tarfile.open(imdb_archive) as tar:
        members = [m for m in tar if m.isfile() and re.search(r"/(train|test)/(pos|neg)/\d+_\d+\.txt$", m.name)]
        reviews = [tar.extractfile(m).read().decode("utf-8") for m in members[::10]]
    assert len(reviews) == 5000
    ours = reviews_to_words(reviews)
    mismatches = [r for r, tokens in zip(reviews, ours, strict=True) if tokens != review_to_words_fast_reference(r)]
    assert mismatches == []


def test_vocabulary_orders_by_count_then_word() -> None:
    tokens = [["b", "a", "c", "c"], ["a", "b", "d"], ["c"]]
    assert build_vocabulary(tokens, vocab_size=5) == {"c": 2, "a": 3, "b": 4}


def test_vocabulary_rejects_a_size_without_room_for_words() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        build_vocabulary([["a"]], vocab_size=2)


def test_encoding_truncates_pads_and_marks_infrequent_words() -> None:
    word_dict = {"good": 2, "film": 3}
    assert encode_words(["good", "zzz", "film"], word_dict, max_len=5).tolist() == [
        3,
        2,
        INFREQUENT_ID,
        3,
        0,
        0,
    ]
    assert encode_words(["film"] * 9, word_dict, max_len=4).tolist() == [4, 3, 3, 3, 3]
    assert encode_words([], word_dict, max_len=3).tolist() == [0, 0, 0, 0]
    rows = encode_many([["good"], ["film", "good"]], word_dict, max_len=3)
    assert rows.dtype == np.int64 and rows.tolist() == [[1, 2, 0, 0], [2, 3, 2, 0]]


def test_preprocessor_round_trips_through_json(tmp_path) -> None:
    pre = Preprocessor({"love": 2, "film": 3}, PreprocessingConfig(vocab_size=4, max_len=4))
    pre.save(tmp_path)
    loaded = Preprocessor.from_dir(tmp_path)
    assert loaded.word_dict == pre.word_dict and loaded.config == pre.config
    assert loaded.encode_texts(["I loved this film"]).tolist() == [[2, 2, 3, 0, 0]]


def test_preprocessor_refuses_state_from_another_tokenizer(tmp_path) -> None:
    config = PreprocessingConfig(vocab_size=4, max_len=4, tokenizer_version="something-else")
    with pytest.raises(ValueError, match="'something-else', which this code does not have"):
        Preprocessor({}, config)
    other_stopwords = PreprocessingConfig(vocab_size=4, max_len=4, stopwords_sha256="0" * 64)
    with pytest.raises(ValueError, match="different tokenizer"):
        Preprocessor({}, other_stopwords)
    other_params = PreprocessingConfig(
        vocab_size=4, max_len=4, tokenizer_version=NEG_PUNCT_VERSION, tokenizer_params={"stopwords": "nltk"}
    )
    with pytest.raises(ValueError, match="different tokenizer"):
        Preprocessor({}, other_params)


# --- versions --------------------------------------------------------------------------------------------


def test_the_default_version_keeps_negations_and_punctuation() -> None:
    assert DEFAULT_TOKENIZER_VERSION == NEG_PUNCT_VERSION
    assert words_neg_punct("Not good. I wouldn't recommend it!") == [
        "not", "good", "i", "would", "not", "recommend", "it", "!",
    ]  # fmt: skip
    assert words_neg_punct("It isn\u2019t bad… or is it?") == ["it", "is", "not", "bad", "or", "is", "it", "?"]
    assert words_neg_punct("No, nor THE very best<br /><br />of &amp; all") == [
        "no", "nor", "the", "very", "best", "of", "all",
    ]  # fmt: skip
    assert words_neg_punct("<i>1984</i>: 10/10&nbsp;stars") == ["1984", "10", "10", "stars"]
    assert words_neg_punct("") == [] and words_neg_punct("<br /><br />") == []
    # the reference version drops exactly what the default keeps
    assert review_to_words("Not good. I wouldn't recommend it!") == ["good", "recommend"]


@pytest.mark.parametrize("review", UNIT_CASES)
def test_every_version_is_a_pure_function_of_the_text(review: str) -> None:
    for version in TOKENIZERS:
        tokens = tokenizer(version)(review)
        assert tokens == tokenizer(version)(review) and all(isinstance(t, str) and t for t in tokens)


def test_the_default_version_imports_neither_nltk_nor_bs4() -> None:
    """Only the reference version may load bs4, lazily; nothing loads NLTK (its stemmer is vendored)."""
    script = (
        "import sys\n"
        "from model.preprocessing import Preprocessor, PreprocessingConfig, tokenize_many\n"
        "config = PreprocessingConfig(vocab_size=10, max_len=5, tokenizer_version='words-neg-punct-2')\n"
        "Preprocessor({'good': 2}, config).encode_texts(['<b>Not</b> good &amp; fine'])\n"
        "tokenize_many(['a', 'b'], 'words-neg-punct-2', workers=1)\n"
        "assert not {'bs4', 'nltk'} & {name.split('.')[0] for name in sys.modules}, 'imported'\n"
        "from model.preprocessing import review_to_words\n"
        "review_to_words('<b>loved</b> it')\n"
        "assert 'bs4' in sys.modules and 'nltk' not in sys.modules  # the stemmer is vendored\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_state_records_the_version_and_its_parameters(tmp_path) -> None:
    config = PreprocessingConfig(vocab_size=5, max_len=4, tokenizer_version=NEG_PUNCT_VERSION)
    assert config.stopwords_sha256 is None and config.tokenizer_params == TOKENIZERS[NEG_PUNCT_VERSION].params
    Preprocessor({"not": 2, "good": 3}, config).save(tmp_path)
    saved = json.loads((tmp_path / "preprocessing.json").read_text())
    assert saved["tokenizer_version"] == NEG_PUNCT_VERSION and saved["tokenizer_params"]["negations"]
    loaded = Preprocessor.from_dir(tmp_path)
    assert loaded.config == config and loaded.version == NEG_PUNCT_VERSION
    assert loaded.encode_texts(["Not good, isn't it?"]).tolist() == [[4, 2, 3, 1, 2]]
    reference = PreprocessingConfig(vocab_size=5, max_len=4)
    assert reference.tokenizer_version == REFERENCE_VERSION and reference.stopwords_sha256


def test_state_written_before_versions_reads_as_the_reference_version(tmp_path) -> None:
    old = {"vocab_size": 4, "max_len": 3, "stopwords_sha256": TOKENIZERS[REFERENCE_VERSION].stopwords_sha256}
    config = PreprocessingConfig.from_dict(old)
    assert config.tokenizer_version == REFERENCE_VERSION
    assert config.tokenizer_params == TOKENIZERS[REFERENCE_VERSION].params
    Preprocessor({}, config)  # compatible


def test_many_reviews_in_forkserver_workers_match_one_process() -> None:
    """In a child interpreter: pool workers import the parent's ``__main__`` (here pytest, slow to import)."""
    script = (
        "import random\n"
        "from model.preprocessing import TOKENIZERS, reviews_to_words, review_to_words, tokenize_many, tokenizer\n"
        "rng = random.Random(5)\n"
        "words = ['not', 'good', '<br />', 'film', '&amp;', \"isn't\", 'loved', '!']\n"
        "reviews = [' '.join(rng.choice(words) for _ in range(20)) for _ in range(240)]\n"
        "for version in TOKENIZERS:\n"
        "    single = [tokenizer(version)(r) for r in reviews]\n"
        "    assert tokenize_many(reviews, version, workers=2, chunk_size=40) == single, version\n"
        "assert reviews_to_words(reviews, workers=2, chunk_size=40) == [review_to_words(r) for r in reviews]\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with pytest.raises(ValueError, match="unknown tokenizer_version"):
        tokenize_many(["a"], "nope")


def test_ragged_encoding_matches_the_padded_rows() -> None:
    word_dict = {"good": 2, "film": 3}
    lengths, ids = encode_ids([["good", "zzz"], [], ["film"] * 5], word_dict, max_len=3)
    assert lengths.tolist() == [2, 0, 3] and ids.dtype == np.int32 and ids.tolist() == [2, 1, 3, 3, 3]
    assert encode_many([["good", "zzz"], [], ["film"] * 5], word_dict, 3).tolist() == [
        [2, 2, 1, 0], [0, 0, 0, 0], [3, 3, 3, 3],
    ]  # fmt: skip
