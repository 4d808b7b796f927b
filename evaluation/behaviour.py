"""Behavioural tests of a sentiment model, in the manner of CheckList (Ribeiro et al., 2020), beside accuracy.

Three kinds of check, each over fixed, hand-written cases (deterministic, no data needed):

- **MFT** (minimum functionality): short reviews with an obvious label — negated praise ("Not good. I would not
  recommend it."), plain praise and complaints, intensified ones. A case passes when the predicted label
  (P ≥ 0.5 → positive) is the expected one.
- **INV** (invariance): a change that must not move the verdict — names swapped, numbers swapped, markup added
  (``<br />``, ``<b>``), casing changed. A pair passes when both get the same label and the score moves by at most
  ``INV_TOLERANCE``.
- **DIR** (direction): a change with a known direction — an intensifier ("very", "absolutely") before a sentiment
  word, a clearly positive or negative sentence appended. A pair passes when the score does not move the wrong
  way by more than ``DIR_TOLERANCE``.

:func:`run_suite` takes any ``predict(texts) -> P(positive)`` (``SentimentModel.predict_texts``), returns a
:class:`BehaviourReport`: one row per check (pass rate, a few failures) and the overall pass rate over all cases.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

Predict = Callable[[list[str]], np.ndarray]
INV_TOLERANCE = 0.1
DIR_TOLERANCE = 0.02
MAX_EXAMPLES = 3

NEGATED_PRAISE = [
    "Not good. I would not recommend it.",
    "This movie is not good.",
    "I did not like this film at all.",
    "It wasn't funny and it wasn't interesting.",
    "Not a good film. I don't recommend it.",
    "The acting was not great and the story was not interesting.",
    "I didn't enjoy it.",
    "Never again. Not worth watching.",
]
PLAIN = [
    ("A wonderful film.", 1),
    ("I loved this movie.", 1),
    ("Great acting and a moving story.", 1),
    ("One of the best films I have seen.", 1),
    ("An awful, boring film.", 0),
    ("I hated this movie.", 0),
    ("Terrible acting and a dull story.", 0),
    ("One of the worst films I have seen.", 0),
]
INTENSIFIED = [
    ("An absolutely brilliant film.", 1),
    ("A truly excellent movie, highly recommended!", 1),
    ("Really, really good.", 1),
    ("An utterly terrible waste of time.", 0),
    ("Absolutely awful from start to finish.", 0),
    ("A really bad movie.", 0),
]
BASES = [
    "John Smith gave a great performance and I loved the film.",
    "John Smith was terrible and the film was boring.",
    "I watched it with Mary in 2005 and we both enjoyed it, 9 out of 10.",
    "I watched it with Mary in 2005 and we both hated it, 2 out of 10.",
    "The story is moving and the music is beautiful.",
    "The plot makes no sense and the dialogue is awful.",
]
NAME_SWAPS = [("John Smith", "Priya Patel"), ("John Smith", "Wei Chen"), ("Mary", "Ahmed")]
NUMBER_SWAPS = [("2005", "1987"), ("9 out of 10", "8 out of 10"), ("2 out of 10", "3 out of 10")]
INTENSIFIER_PAIRS = [
    ("good", "very good"),
    ("great", "really great"),
    ("enjoyable", "absolutely enjoyable"),
    ("bad", "very bad"),
    ("boring", "really boring"),
    ("awful", "absolutely awful"),
]
POSITIVE_WORDS = {"good", "great", "enjoyable"}
APPENDED = [(" I loved it.", 1), (" Highly recommended!", 1), (" I hated it.", 0), (" A complete waste of time.", 0)]


@dataclass(frozen=True)
class CheckResult:
    """One check: how many of its cases passed, and a few that did not."""

    name: str
    kind: str  # MFT, INV or DIR
    capability: str
    passed: int
    total: int
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def pass_rate(self) -> float:
        return self.passed / self.total if self.total else 1.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "pass_rate": self.pass_rate}


@dataclass(frozen=True)
class BehaviourReport:
    checks: list[CheckResult]

    @property
    def passed(self) -> int:
        return sum(check.passed for check in self.checks)

    @property
    def total(self) -> int:
        return sum(check.total for check in self.checks)

    @property
    def pass_rate(self) -> float:
        """Passed cases over all cases (every case weighs the same)."""
        return self.passed / self.total if self.total else 1.0

    def check(self, name: str) -> CheckResult:
        return next(check for check in self.checks if check.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "pass_rate": self.pass_rate,
            "passed": self.passed,
            "total": self.total,
            "checks": [check.to_dict() for check in self.checks],
        }

    def table(self) -> list[dict[str, Any]]:
        """Rows for a Prefect table artifact."""
        return [
            {
                "check": check.name,
                "type": check.kind,
                "capability": check.capability,
                "passed": f"{check.passed}/{check.total}",
                "pass rate": round(check.pass_rate, 4),
                "first failure": check.failures[0]["text"] if check.failures else "",
            }
            for check in self.checks
        ] + [{"check": "all", "type": "", "capability": "", "passed": f"{self.passed}/{self.total}",
              "pass rate": round(self.pass_rate, 4), "first failure": ""}]  # fmt: skip


def _mft(name: str, capability: str, cases: Sequence[tuple[str, int]], predict: Predict) -> CheckResult:
    scores = np.asarray(predict([text for text, _ in cases]), dtype=np.float64)
    failures = [
        {"text": text, "expected": "positive" if label else "negative", "score": round(float(score), 4)}
        for (text, label), score in zip(cases, scores, strict=True)
        if int(score >= 0.5) != label
    ]
    return CheckResult(name, "MFT", capability, len(cases) - len(failures), len(cases), failures[:MAX_EXAMPLES])


def _pairs(
    name: str, kind: str, capability: str, pairs: Sequence[tuple[str, str, int | None]], predict: Predict
) -> CheckResult:
    """``(original, changed, direction)``: direction None = invariance, 1 = must not fall, 0 = must not rise."""
    before = np.asarray(predict([a for a, _, _ in pairs]), dtype=np.float64)
    after = np.asarray(predict([b for _, b, _ in pairs]), dtype=np.float64)
    failures = []
    for (original, changed, direction), x, y in zip(pairs, before, after, strict=True):
        if direction is None:
            ok = (x >= 0.5) == (y >= 0.5) and abs(y - x) <= INV_TOLERANCE
        elif direction == 1:
            ok = y >= x - DIR_TOLERANCE
        else:
            ok = y <= x + DIR_TOLERANCE
        if not ok:
            failures.append(
                {"text": changed, "original": original, "before": round(float(x), 4), "after": round(float(y), 4)}
            )
    return CheckResult(name, kind, capability, len(pairs) - len(failures), len(pairs), failures[:MAX_EXAMPLES])


def _swapped(swaps: Sequence[tuple[str, str]]) -> list[tuple[str, str, int | None]]:
    return [(base, base.replace(a, b), None) for base in BASES for a, b in swaps if a in base]


def _intensified() -> list[tuple[str, str, int | None]]:
    pairs: list[tuple[str, str, int | None]] = []
    for plain, strong in INTENSIFIER_PAIRS:
        for frame in ("The film was {}.", "A {} movie.", "The acting is {} and the ending is {}."):
            pairs.append((frame.format(plain, plain), frame.format(strong, strong), int(plain in POSITIVE_WORDS)))
    return pairs


def _appended() -> list[tuple[str, str, int | None]]:
    neutral = ["I saw this film last week.", "The movie is about a family in a small town.", "It runs two hours."]
    return [(base, base + sentence, direction) for base in neutral for sentence, direction in APPENDED]


def _noise() -> list[tuple[str, str, int | None]]:
    pairs: list[tuple[str, str, int | None]] = []
    for base in BASES:
        pairs.append((base, f"{base}<br /><br />", None))
        pairs.append((base, base.replace("and", "<b>and</b>", 1), None))
        pairs.append((base, base.upper(), None))
        pairs.append((base, base.lower(), None))
    return pairs


def run_suite(predict: Predict) -> BehaviourReport:
    """Every check of the suite on ``predict`` (raw texts → P(positive))."""
    checks = [
        _mft("negated praise is negative", "negation", [(text, 0) for text in NEGATED_PRAISE], predict),
        _mft("plain praise and complaints", "vocabulary", PLAIN, predict),
        _mft("intensified reviews", "intensifiers", INTENSIFIED, predict),
        _pairs("names swapped", "INV", "named entities", _swapped(NAME_SWAPS), predict),
        _pairs("numbers swapped", "INV", "numbers", _swapped(NUMBER_SWAPS), predict),
        _pairs("markup and casing", "INV", "robustness", _noise(), predict),
        _pairs("an intensifier strengthens", "DIR", "intensifiers", _intensified(), predict),
        _pairs("a clear sentence appended", "DIR", "vocabulary", _appended(), predict),
    ]
    return BehaviourReport(checks)
