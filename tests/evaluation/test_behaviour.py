"""The behavioural suite: on the tiny trained model (and its broken copy), and on predictors built to fail one
capability each, so every check is shown to catch what it is named after."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from evaluation.behaviour import NEGATED_PRAISE, run_suite
from tests.fixtures.tiny_model import TinyModel, shuffled_copy

POSITIVE = {"good", "great", "wonderful", "loved", "best", "brilliant", "excellent", "recommend", "enjoy", "enjoyed",
            "funny", "like", "interesting", "beautiful", "moving", "recommended", "worth", "enjoyable"}  # fmt: skip
NEGATIVE = {"bad", "awful", "boring", "terrible", "hated", "worst", "dull", "waste", "nonsense", "no", "utterly"}


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", re.sub(r"<[^>]*>", " ", text.lower()))


def lexicon(text: str) -> float:
    """A bag of sentiment words that cannot read negation."""
    words = _words(text)
    score = sum(w in POSITIVE for w in words) - sum(w in NEGATIVE for w in words)
    return 1 / (1 + np.exp(-2 * score))


def negation_aware(text: str) -> float:
    """The lexicon, with a word after "not"/"n't"/"never" counted the other way."""
    words = _words(text.replace("n't", " not"))
    score = 0
    for i, word in enumerate(words):
        sign = -1 if i and words[i - 1] in ("not", "never") or (i > 1 and words[i - 2] == "not") else 1
        score += sign * ((word in POSITIVE) - (word in NEGATIVE))
    return 1 / (1 + np.exp(-2 * score))


def batch(fn):  # noqa: ANN001, ANN201 - a Predict built from a per-text function
    return lambda texts: np.array([fn(text) for text in texts])


def test_negation_check_fails_a_bag_of_words_and_passes_a_negation_aware_one() -> None:
    blind = run_suite(batch(lexicon)).check("negated praise is negative")
    aware = run_suite(batch(negation_aware)).check("negated praise is negative")
    assert blind.pass_rate <= 0.25 and aware.pass_rate == 1.0
    assert "Not good. I would not recommend it." in NEGATED_PRAISE
    assert blind.failures and blind.failures[0]["expected"] == "negative"


def test_invariance_checks_catch_markup_casing_and_name_sensitivity() -> None:
    clean = run_suite(batch(lexicon))
    assert clean.check("markup and casing").pass_rate == 1.0 and clean.check("names swapped").pass_rate == 1.0
    case_sensitive = run_suite(batch(lambda t: 1 - lexicon(t) if t.isupper() else lexicon(t)))
    assert case_sensitive.check("markup and casing").pass_rate <= 0.75
    markup = run_suite(batch(lambda t: 0.5 + (lexicon(t) - 0.5) * (-1 if "<" in t else 1)))
    assert markup.check("markup and casing").pass_rate <= 0.5
    names = run_suite(batch(lambda t: 0.95 if "Smith" in t else 0.05 if "Patel" in t or "Chen" in t else lexicon(t)))
    assert names.check("names swapped").pass_rate <= 0.5


def test_direction_checks_catch_a_dampening_intensifier() -> None:
    assert run_suite(batch(lexicon)).check("an intensifier strengthens").pass_rate == 1.0
    intensifiers = ("very", "really", "absolutely")
    dampened = run_suite(  # an intensifier pulls the score towards 0.5: the wrong way for both polarities
        batch(lambda t: 0.5 + (lexicon(t) - 0.5) * (0.2 if any(w in _words(t) for w in intensifiers) else 1.0))
    )
    assert dampened.check("an intensifier strengthens").pass_rate == 0.0


@pytest.fixture(scope="module")
def tiny_suite(tiny: TinyModel):  # noqa: ANN201
    from model.artifact import load_artifact

    return run_suite(load_artifact(tiny.model_dir).predict_texts)


def test_the_tiny_model_passes_what_its_data_taught_it(tiny_suite) -> None:  # noqa: ANN001
    """Its synthetic reviews hold sentiment words but no negation: vocabulary and invariance pass, negation not."""
    vocabulary = [tiny_suite.check(name) for name in ("plain praise and complaints", "intensified reviews")]
    assert sum(c.passed for c in vocabulary) / sum(c.total for c in vocabulary) >= 0.75
    for name in ("names swapped", "numbers swapped", "markup and casing"):
        assert tiny_suite.check(name).pass_rate == 1.0, name  # words-neg-punct-2 drops tags and case
    assert tiny_suite.pass_rate >= 0.8 and tiny_suite.total == sum(c.total for c in tiny_suite.checks)
    table = tiny_suite.to_dict()
    assert table["checks"][0]["kind"] == "MFT" and 0 <= table["pass_rate"] <= 1


def test_broken_preprocessing_fails_the_vocabulary_checks(tiny: TinyModel, tiny_suite, tmp_path: Path) -> None:  # noqa: ANN001
    from model.artifact import load_artifact

    broken = run_suite(load_artifact(shuffled_copy(tiny.model_dir, tmp_path / "broken")).predict_texts)
    vocabulary = [broken.check(name) for name in ("plain praise and complaints", "intensified reviews")]
    assert sum(c.passed for c in vocabulary) / sum(c.total for c in vocabulary) < 0.75
    assert broken.pass_rate < tiny_suite.pass_rate
