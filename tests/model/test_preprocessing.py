"""The tokenizer must produce exactly the reference notebook's tokens; vocabulary and encoding follow the spec."""

from __future__ import annotations

import random
import re
import tarfile

import numpy as np
import pytest

from benchmarks.reference_preprocessing import review_to_words as reference_review_to_words
from benchmarks.reference_preprocessing import review_to_words_fast_reference
from model.preprocessing import (
    INFREQUENT_ID,
    PreprocessingConfig,
    Preprocessor,
    build_vocabulary,
    encode_many,
    encode_words,
    html_to_text,
    review_to_words,
    reviews_to_words,
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
    with pytest.raises(ValueError, match="different tokenizer"):
        Preprocessor({}, config)
