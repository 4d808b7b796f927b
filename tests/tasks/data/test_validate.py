"""The Great Expectations validation stage on synthetic tables, and once on the real mirror (``data``)."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from core.config import Settings
from core.errors import DataError
from tasks.data.validate import (
    ValidationReport,
    build_suite,
    raise_for_failures,
    validate_dataset,
    validation_markdown,
)
from tests.fixtures.synthetic import synthetic_review

PER_CLASS = 100  # the `settings` fixture expects 200 rows per split


def reviews_frame(per_class: int = PER_CLASS, seed: int = 3) -> pd.DataFrame:
    """A sound aclImdb table: both splits, balanced labels, ratings matching the labels."""
    rng = random.Random(seed)
    rows = [
        (
            split,
            label,
            i,
            rng.randint(7, 10) if label else rng.randint(1, 4),
            synthetic_review(rng, bool(label)),
        )
        for split in ("train", "test")
        for label in (0, 1)
        for i in range(per_class)
    ]
    return pd.DataFrame(rows, columns=["split", "label", "id", "rating", "review"])


def _row(df: pd.DataFrame, split: str, label: int, i: int = 0) -> int:
    """Index of the ``i``-th row of a split and label."""
    return int(df.index[(df["split"] == split) & (df["label"] == label)][i])


def _set(df: pd.DataFrame, column: str, value: object, split: str = "test", label: int = 1) -> pd.DataFrame:
    df.loc[_row(df, split, label), column] = value
    return df


def _missing_split(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["split"] != "test"]


def _wrong_row_count(df: pd.DataFrame) -> pd.DataFrame:
    return df.drop(index=_row(df, "train", 0))


def _one_class_split(df: pd.DataFrame) -> pd.DataFrame:
    positives = df[(df["split"] == "test") & (df["label"] == 1)]
    renumbered = positives.assign(id=positives["id"] + PER_CLASS)
    return pd.concat([df[df["split"] == "train"], positives, renumbered], ignore_index=True)


def _label_outside(df: pd.DataFrame) -> pd.DataFrame:
    return _set(df, "label", 2)


def _rating_inconsistent(df: pd.DataFrame) -> pd.DataFrame:
    return _set(df, "rating", 2, label=1)


def _empty_review(df: pd.DataFrame) -> pd.DataFrame:
    return _set(df, "review", "  \n\t ")


def _duplicated_id(df: pd.DataFrame) -> pd.DataFrame:
    return _set(df, "id", int(df.loc[_row(df, "test", 1, 1), "id"]))


def _review_too_long(df: pd.DataFrame) -> pd.DataFrame:
    return _set(df, "review", "x" * 20_001)


@pytest.fixture(scope="module")
def good_report(tmp_path_factory: pytest.TempPathFactory) -> ValidationReport:
    settings = Settings(home=tmp_path_factory.mktemp("home"), expected_rows_per_split=2 * PER_CLASS)
    return validate_dataset(reviews_frame(), settings, tmp_path_factory.mktemp("report"), source="synthetic")


def test_a_sound_dataset_passes_every_check(good_report: ValidationReport) -> None:
    assert good_report.success, [r for r in good_report.results if not r.success]
    assert not good_report.failures
    assert good_report.statistics["rows"] == 4 * PER_CLASS
    assert good_report.statistics["evaluated_expectations"] == len(good_report.results) == 13
    raise_for_failures(good_report)  # no-op


def test_checks_are_reported_in_suite_order_with_observed_values(good_report: ValidationReport) -> None:
    by_name = {r.check: r for r in good_report.results}
    assert [r.check for r in good_report.results][:4] == [
        "columns present",
        "splits",
        "rows per split (train)",
        "rows per split (test)",
    ]
    assert by_name["rows per split (test)"].observed == "200 rows"
    assert by_name["rows per split (test)"].kwargs == {"value": 200, "row_condition": "split == 'test'"}
    assert by_name["labels balanced (train)"].observed == "50.0% positive"
    assert by_name["splits"].observed == "train, test"
    assert by_name["unique (split, label, id)"].observed == "0 of 400 rows duplicated"


def test_the_suite_follows_the_settings(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, expected_rows_per_split=7, min_review_chars=3, max_review_chars=150)
    expectations = build_suite(settings).expectations
    checks = {e.meta["check"]: e for e in expectations}
    assert checks["rows per split (train)"].value == 7
    assert (checks["review length"].min_value, checks["review length"].max_value) == (3, 150)
    assert [e.meta["order"] for e in expectations] == list(range(len(expectations)))


def test_report_files_are_written(good_report: ValidationReport) -> None:
    assert good_report.report_path is not None and good_report.data_docs_index is not None
    saved = json.loads(good_report.report_path.read_text())
    assert saved["success"] is True
    assert len(saved["results"]) == 13
    assert {"check", "expectation", "kwargs", "expected", "success", "observed"} <= saved["results"][0].keys()
    index = good_report.data_docs_index
    assert index.is_file()
    assert "<html" in index.read_text().lower()
    assert list(index.parent.glob("validations/**/*.html")), "the validation result page is missing"
    assert not list(index.parent.parent.glob(".data_docs.*")), "a temporary folder was left behind"


def test_markdown_lists_every_check(good_report: ValidationReport) -> None:
    markdown = validation_markdown(good_report)
    assert "passed — 13 of 13 checks" in markdown
    assert markdown.count("| ✓ |") == 13
    assert "| ✓ | rows per split (train) | 200 rows | 200 rows |" in markdown


@pytest.mark.parametrize(
    ("corrupt", "failed", "observed"),
    [
        (_missing_split, ["splits", "rows per split (test)", "labels balanced (test)"], "missing ['test']"),
        (_wrong_row_count, ["rows per split (train)"], "199 rows"),
        (_one_class_split, ["labels balanced (test)"], "100.0% positive"),
        (_label_outside, ["labels in {0, 1}"], "1 of 400 rows with another label, e.g. [2]"),
        (_rating_inconsistent, ["ratings of positive reviews"], "1 of 200 rows out of range, e.g. [2]"),
        (_empty_review, ["reviews not blank", "review length"], "1 of 400 rows blank"),
        (_duplicated_id, ["unique (split, label, id)"], "2 of 400 rows duplicated"),
        (_review_too_long, ["review length"], "1 of 400 rows out of range, e.g. [20001]"),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else None,
)
def test_a_broken_dataset_fails_with_the_check_named(
    corrupt: Callable[[pd.DataFrame], pd.DataFrame],
    failed: list[str],
    observed: str,
    settings: Settings,
    tmp_path: Path,
) -> None:
    report = validate_dataset(corrupt(reviews_frame()), settings, tmp_path / "report")
    assert not report.success
    assert [r.check for r in report.failures] == failed
    with pytest.raises(DataError) as caught:
        raise_for_failures(report)
    message = str(caught.value)
    assert message.startswith(f"dataset failed {len(failed)} of 13 checks:")
    for name in failed:
        assert f"  - {name}: expected " in message
    assert observed in message
    assert str(tmp_path / "report" / "validation.json") in message
    assert json.loads((tmp_path / "report" / "validation.json").read_text())["success"] is False
    assert (tmp_path / "report" / "data_docs" / "index.html").is_file()
    assert "| ✗ |" in validation_markdown(report)


def test_a_null_review_and_a_missing_column_are_named(settings: Settings, tmp_path: Path) -> None:
    null_review = _set(reviews_frame(), "review", None)
    report = validate_dataset(null_review, settings, tmp_path / "null")
    assert [r.check for r in report.failures] == ["reviews not null"]

    report = validate_dataset(reviews_frame().drop(columns="rating"), settings, tmp_path / "column")
    failures = {r.check: r.observed for r in report.failures}
    assert failures["columns present"] == "missing ['rating']"
    assert failures["ratings of negative reviews"].startswith("error: ")
    assert "rating" in failures["ratings of negative reviews"]


@pytest.mark.e2e  # reads the whole shared dataset
@pytest.mark.data
def test_the_real_dataset_passes(imdb_archive: Path, tmp_path: Path) -> None:
    from tasks.data.load import load_archive

    report = validate_dataset(load_archive(imdb_archive), Settings(home=tmp_path), tmp_path / "report")
    assert report.success, [(r.check, r.observed) for r in report.failures]
    assert report.statistics["rows"] == 50_000
    assert report.statistics["seconds"] < 10
