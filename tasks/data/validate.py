"""Stage 3: validate the extracted IMDB table with a Great Expectations (1.x) suite.

The table has one row per review file — ``split, label, id, rating, review``. :func:`build_suite` declares
what a sound aclImdb dataset looks like, :func:`validate_dataset` runs it in an ephemeral GX context (no
files, no network, no progress bars) and writes ``validation.json`` plus GX's Data Docs into a folder,
:func:`raise_for_failures` turns a failed report into one :class:`~core.errors.DataError` that
names every failed check with its observed value, and :func:`validation_markdown` renders the Prefect
artifact; ``validate_task`` is the Prefect stage around them: it reads the table from the artifact store and
publishes the report there (``validation/<key>/``, keyed by the dataset, the limits and this code).

``great_expectations`` takes seconds to import, so it is imported on first use, not with this module.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import task

from core.config import Settings
from core.errors import DataError
from core.fingerprint import code_fingerprint
from core.io import atomic_dir, atomic_write_json, local_path, sha256_text
from tasks.data.keys import VALIDATE, data_stage_cache
from tasks.policies import once_stage

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations import ExpectationSuite
    from great_expectations.core import ExpectationValidationResult

SPLITS = ("train", "test")
COLUMNS = ("split", "label", "id", "rating", "review")
LENGTH_COLUMN = "review_chars"  # derived before validation: characters per review
BALANCE_RANGE = (0.45, 0.55)
NEGATIVE_RATINGS = (1, 4)
POSITIVE_RATINGS = (7, 10)
SUITE_NAME = "imdb-reviews"
REPORT_FILE = "validation.json"
DOCS_DIR = "data_docs"
_DOCS_SITE = "sentiflow"
_EXAMPLES = 3  # example values quoted per failed check
_MAX_TEXT = 80  # characters kept of any string in the JSON details

# No usage statistics: GX 1.24 ships none, older 1.x releases read this variable at import.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one expectation, in words and in GX's raw numbers."""

    check: str  # human name, e.g. "rows per split (train)"
    expectation: str  # GX expectation type
    kwargs: dict[str, Any]  # the expectation's arguments (row conditions as text)
    expected: str  # what the check wants, in words
    success: bool
    observed: str  # what the data shows, in words
    details: dict[str, Any] = field(default_factory=dict)  # GX's result dict (JSON-safe, strings truncated)


@dataclass(frozen=True)
class ValidationReport:
    """All checks of one validation run and where its files are."""

    success: bool
    results: list[CheckResult]
    statistics: dict[str, Any]
    report_path: Path | str | None = None  # a local path, or the store URI it was published to
    data_docs_index: Path | str | None = None
    source: str | None = None

    @property
    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if not result.success]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (what ``validation.json`` holds)."""
        payload = asdict(self)
        for key in ("report_path", "data_docs_index"):
            payload[key] = None if payload[key] is None else str(payload[key])
        return payload


def _gx() -> Any:
    """``great_expectations``, imported on first use."""
    import great_expectations

    return great_expectations


def _ephemeral_context(docs_dir: Path) -> Any:
    """An in-memory GX context whose only Data Docs site is ``docs_dir``; no progress bars, no analytics."""
    gx = _gx()
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    site = {
        "class_name": "SiteBuilder",
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
    }
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        data_docs_sites={_DOCS_SITE: site},
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
    )
    return gx.get_context(mode="ephemeral", project_config=config)


def _condition(column: str, value: Any) -> Any:
    from great_expectations.expectations.row_conditions import Column

    return Column(column) == value


def build_suite(settings: Settings) -> ExpectationSuite:
    """The expectation suite for an extracted aclImdb table, one expectation per check.

    Each expectation carries its check name, the expected value in words and its position in ``meta``. The
    suite expects the :data:`LENGTH_COLUMN` column that :func:`validate_dataset` derives from ``review``.
    """
    gxe = _gx().expectations
    expectations: list[Any] = []

    def expect(kind: str, check: str, expected: str, unexpected: str = "out of range", **kwargs: Any) -> None:
        meta = {"check": check, "expected": expected, "unexpected": unexpected, "order": len(expectations)}
        expectations.append(getattr(gxe, kind)(**kwargs, meta=meta, description=f"{check}: {expected}"))

    rows, (low, high) = settings.expected_rows_per_split, BALANCE_RANGE
    min_chars, max_chars = settings.min_review_chars, settings.max_review_chars
    expect(
        "ExpectTableColumnsToMatchSet",
        "columns present",
        ", ".join(COLUMNS),
        column_set=[*COLUMNS, LENGTH_COLUMN],
        exact_match=False,
    )
    expect(
        "ExpectColumnDistinctValuesToEqualSet",
        "splits",
        " and ".join(SPLITS) + " only",
        column="split",
        value_set=list(SPLITS),
    )
    for split in SPLITS:
        expect(
            "ExpectTableRowCountToEqual",
            f"rows per split ({split})",
            f"{rows} rows",
            value=rows,
            row_condition=_condition("split", split),
        )
    expect(
        "ExpectColumnValuesToBeInSet",
        "labels in {0, 1}",
        "0 or 1",
        "with another label",
        column="label",
        value_set=[0, 1],
    )
    for split in SPLITS:
        expect(
            "ExpectColumnMeanToBeBetween",
            f"labels balanced ({split})",
            f"{low:.0%}–{high:.0%} positive",
            column="label",
            min_value=low,
            max_value=high,
            row_condition=_condition("split", split),
        )
    for label, name, (lo, hi) in ((0, "negative", NEGATIVE_RATINGS), (1, "positive", POSITIVE_RATINGS)):
        expect(
            "ExpectColumnValuesToBeBetween",
            f"ratings of {name} reviews",
            f"{lo}–{hi}",
            column="rating",
            min_value=lo,
            max_value=hi,
            row_condition=_condition("label", label),
        )
    expect("ExpectColumnValuesToNotBeNull", "reviews not null", "no null review", "null", column="review")
    expect(
        "ExpectColumnValuesToMatchRegex",
        "reviews not blank",
        "no whitespace-only review",
        "blank",
        column="review",
        regex=r"\S",
    )
    expect(
        "ExpectCompoundColumnsToBeUnique",
        "unique (split, label, id)",
        "no duplicates",
        "duplicated",
        column_list=["split", "label", "id"],
    )
    expect(
        "ExpectColumnValuesToBeBetween",
        "review length",
        f"{min_chars}–{max_chars} characters",
        column=LENGTH_COLUMN,
        min_value=min_chars,
        max_value=max_chars,
    )
    return _gx().ExpectationSuite(name=SUITE_NAME, expectations=expectations)


def _with_lengths(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` plus :data:`LENGTH_COLUMN` (NaN for missing or non-text reviews); as is without ``review``."""
    import pandas as pd

    if "review" not in df.columns:
        return df
    reviews = df["review"]
    is_text = pd.api.types.is_object_dtype(reviews) or pd.api.types.is_string_dtype(reviews)
    return df.assign(**{LENGTH_COLUMN: reviews.str.len() if is_text else float("nan")})


def _json_safe(value: Any) -> Any:
    """GX result values as plain JSON types, long strings cut to :data:`_MAX_TEXT` characters."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_json_safe(v) for v in value]
    if isinstance(value, str):
        return value if len(value) <= _MAX_TEXT else value[:_MAX_TEXT] + "…"
    if value is None or isinstance(value, bool | int | float):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _json_safe(value.item())
    return str(value)


def _examples(values: list[Any]) -> str:
    shown = [v[:30] if isinstance(v, str) else v for v in values[:_EXAMPLES]]
    return f", e.g. {shown!r}" if shown else ""


def _describe(kind: str, result: dict[str, Any], unexpected: str) -> str:
    """The observed value of one expectation in words; ``unexpected`` says what is wrong with a bad row."""
    observed = result.get("observed_value")
    if kind == "expect_table_columns_to_match_set":
        missing = result.get("details", {}).get("mismatched", {}).get("missing") or []
        if missing:
            return f"missing {sorted(missing)}"
        return ", ".join(c for c in COLUMNS if c in (observed or []))
    if kind == "expect_column_distinct_values_to_equal_set":
        parts = []
        if result.get("partial_missing_list"):
            parts.append(f"missing {sorted(map(str, result['partial_missing_list']))}")
        if result.get("partial_unexpected_list"):
            parts.append(f"unexpected {sorted(map(str, result['partial_unexpected_list']))}")
        return ", ".join(parts) or ", ".join(SPLITS)
    if kind == "expect_table_row_count_to_equal":
        return f"{observed} rows"
    if kind == "expect_column_mean_to_be_between":
        return "no rows" if observed is None else f"{observed:.1%} positive"
    if "unexpected_count" in result:
        count, total = result["unexpected_count"], result.get("element_count", 0)
        return f"{count} of {total} rows {unexpected}{_examples(result.get('partial_unexpected_list') or [])}"
    return str(observed)


def _kwargs_summary(kwargs: dict[str, Any]) -> dict[str, Any]:
    summary = {k: v for k, v in kwargs.items() if k != "batch_id" and v is not None}
    condition = summary.get("row_condition")
    if isinstance(condition, dict) and {"column", "operator", "parameter"} <= condition.keys():
        summary["row_condition"] = f"{condition['column']['name']} {condition['operator']} {condition['parameter']!r}"
    elif condition is not None:
        summary["row_condition"] = repr(condition)
    return _json_safe(summary)


def _check_result(result: ExpectationValidationResult) -> CheckResult:
    config = result.expectation_config
    meta = config.meta or {}
    exception = result.exception_info or {}
    # One error can be reported per metric: {metric_id: {"exception_message": ...}} or flat.
    errors = [exception] if "raised_exception" in exception else list(exception.values())
    messages = sorted({e["exception_message"] for e in errors if e.get("raised_exception")})
    if messages:
        observed = "error: " + "; ".join(messages)
    else:
        observed = _describe(config.type, result.result or {}, meta.get("unexpected", "unexpected"))
    return CheckResult(
        check=meta.get("check", config.type),
        expectation=config.type,
        kwargs=_kwargs_summary(dict(config.kwargs)),
        expected=meta.get("expected", ""),
        success=bool(result.success),
        observed=observed,
        details=_json_safe(result.result or {}),
    )


def validate_dataset(
    df: pd.DataFrame,
    settings: Settings,
    report_dir: Path,
    source: str | None = None,
    published_as: str | None = None,
) -> ValidationReport:
    """Run :func:`build_suite` on ``df``; write ``validation.json`` and ``data_docs/`` into ``report_dir``.

    Failed expectations do not raise: they are in the returned report (see :func:`raise_for_failures`).
    ``source`` names the dataset in messages; ``published_as`` is where ``report_dir`` will be published (a store
    URI), so the report names that place instead of the temporary folder.
    """
    gx = _gx()
    started = time.perf_counter()
    report_dir = Path(report_dir)
    with atomic_dir(report_dir / DOCS_DIR) as docs:
        context = _ephemeral_context(docs)
        batch = (
            context.data_sources.add_pandas("sentiflow")
            .add_dataframe_asset(name="reviews")
            .add_batch_definition_whole_dataframe("all-reviews")
        )
        suite = context.suites.add(build_suite(settings))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=SUITE_NAME, data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=SUITE_NAME,
                validation_definitions=[definition],
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data-docs", site_names=[_DOCS_SITE])],
                result_format="SUMMARY",
            )
        )
        outcome = checkpoint.run(batch_parameters={"dataframe": _with_lengths(df)})
    (validation,) = outcome.run_results.values()
    ordered = sorted(validation.results, key=lambda r: (r.expectation_config.meta or {}).get("order", 1 << 30))
    results = [_check_result(r) for r in ordered]
    statistics = {
        **_json_safe(dict(validation.statistics)),
        "rows": len(df),
        "seconds": round(time.perf_counter() - started, 3),
    }
    report = ValidationReport(
        success=all(r.success for r in results),
        results=results,
        statistics=statistics,
        report_path=_located(published_as, REPORT_FILE) or report_dir / REPORT_FILE,
        data_docs_index=_located(published_as, f"{DOCS_DIR}/index.html") or report_dir / DOCS_DIR / "index.html",
        source=source,
    )
    atomic_write_json(report_dir / REPORT_FILE, report.to_dict())
    return report


def _located(base_uri: str | None, relative: str) -> Path | str | None:
    """``base_uri/relative`` as the user can open it: a local path for ``file://``, else the URI."""
    if base_uri is None:
        return None
    uri = f"{base_uri.rstrip('/')}/{relative}"
    path = local_path(uri) if uri.startswith("file://") else None
    return path if path is not None else uri


def failure_message(report: ValidationReport) -> str:
    """What failed, one line per failed check, and where the full report is."""
    failures = report.failures
    name = f"dataset {report.source}" if report.source else "dataset"
    lines = [f"{name} failed {len(failures)} of {len(report.results)} checks:"]
    lines += [f"  - {r.check}: expected {r.expected}, observed {r.observed}" for r in failures]
    if report.report_path is not None:
        lines.append(f"Details: {report.report_path} and {report.data_docs_index}.")
    lines.append("Check that the source is the complete aclImdb dataset, or adjust SENTIFLOW_EXPECTED_ROWS_PER_SPLIT.")
    return "\n".join(lines)


def raise_for_failures(report: ValidationReport) -> None:
    """Raise :class:`DataError` naming every failed check and its observed value; no-op when all passed."""
    if not report.success:
        raise DataError(failure_message(report))


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def validation_markdown(report: ValidationReport) -> str:
    """A Markdown table of every check (✓/✗, expected, observed) for a Prefect artifact."""
    passed = sum(r.success for r in report.results)
    verdict = "✓ passed" if report.success else "✗ failed"
    rows = report.statistics.get("rows")
    head = f"## Data validation: {verdict} — {passed} of {len(report.results)} checks"
    lines = [head, ""]
    if report.source:
        lines.append(f"Dataset: `{report.source}`" + (f" ({rows:,} rows)" if rows is not None else ""))
        lines.append("")
    lines += ["| | check | expected | observed |", "|---|---|---|---|"]
    lines += [
        f"| {'✓' if r.success else '✗'} | {_cell(r.check)} | {_cell(r.expected)} | {_cell(r.observed)} |"
        for r in report.results
    ]
    if report.data_docs_index is not None:
        lines += ["", f"Data Docs: `{report.data_docs_index}`"]
    return "\n".join(lines) + "\n"


# --- the Prefect task ----------------------------------------------------------------------------------


@task(**once_stage(VALIDATE), **data_stage_cache(VALIDATE))
def validate_task(
    dataset_uri: str, expected_rows_per_split: int, min_review_chars: int, max_review_chars: int, backend: str
) -> dict[str, Any]:
    """Run the Great Expectations suite; stop the flow with every failed expectation named."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.logging import get_run_logger

    from backends.base import get_store
    from core.config import get_settings
    from tasks.data.load import read_dataset

    settings = get_settings(
        "parameter",
        backend=backend,
        expected_rows_per_split=expected_rows_per_split,
        min_review_chars=min_review_chars,
        max_review_chars=max_review_chars,
    )
    store = get_store(settings)
    limits = f"{expected_rows_per_split}:{min_review_chars}:{max_review_chars}"
    prefix = f"validation/{sha256_text(dataset_uri, limits, code_fingerprint('tasks.data.validate'))[:20]}"
    frame = read_dataset(store, dataset_uri)
    with store.publish_dir(prefix) as folder:
        report = validate_dataset(frame, settings, folder, source=dataset_uri, published_as=store.uri(prefix))
    create_markdown_artifact(
        key="data-validation", markdown=validation_markdown(report), description="IMDB dataset validation"
    )
    raise_for_failures(report)
    get_run_logger().info("validate: all %d checks passed (report %s)", len(report.results), report.report_path)
    return {
        "checks": len(report.results),
        "report": str(report.report_path),
        "data_docs": str(report.data_docs_index),
        "report_uri": store.uri(f"{prefix}/{REPORT_FILE}"),
    }
