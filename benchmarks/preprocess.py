"""Preprocessing throughput: sentiflow's tokenizers vs. a faithful copy of the reference notebook's.

All run on reviews from the IMDB mirror. The notebook's code is timed on a sample (the whole dataset takes it about
an hour); sentiflow's versions — ``reference-bs4-porter-1`` (the notebook's tokens) and ``words-neg-punct-2`` (the
default: keeps negations) — on the whole dataset, in one process and on a worker pool. Prints reviews per second
and the ratios; ``--verify-all`` checks the reference version's tokens against the notebook's on every review.

    python benchmarks/preprocess.py [--archive PATH] [--reference-sample 500] [--verify-all]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_ARCHIVE = ROOT.parent / "shared" / "data" / "aclImdb_v1_labeled.tar.gz"
os.environ.setdefault("NLTK_DATA", str(ROOT.parent / "shared" / "data" / "nltk_data"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, default=DEFAULT_ARCHIVE)
    parser.add_argument("--reference-sample", type=int, default=500, help="reviews to time the reference on")
    parser.add_argument("--verify-all", action="store_true", help="check every review against the reference")
    args = parser.parse_args()
    if not args.archive.is_file():
        print(f"IMDB archive not found at {args.archive}; pass --archive (see ../shared/data/README.md)")
        return 2

    from benchmarks.reference_preprocessing import review_to_words as reference
    from benchmarks.reference_preprocessing import review_to_words_fast_reference
    from model.preprocessing import NEG_PUNCT_VERSION, default_workers, reviews_to_words, tokenize_many
    from tasks.data.load import load_archive

    reviews = load_archive(args.archive)["review"].tolist()
    sample = reviews[:: max(1, len(reviews) // args.reference_sample)][: args.reference_sample]

    started = time.perf_counter()
    reference_tokens = [reference(review) for review in sample]
    reference_rate = len(sample) / (time.perf_counter() - started)

    started = time.perf_counter()
    ours = reviews_to_words(reviews, workers=0)
    ours_seconds = time.perf_counter() - started
    ours_rate = len(reviews) / ours_seconds

    started = time.perf_counter()
    single = reviews_to_words(sample, workers=1)
    single_rate = len(sample) / (time.perf_counter() - started)
    assert single == reference_tokens, "sentiflow's tokens differ from the reference on the sample"

    started = time.perf_counter()
    tokenize_many(reviews, NEG_PUNCT_VERSION, workers=1)
    default_single_rate = len(reviews) / (time.perf_counter() - started)
    started = time.perf_counter()
    tokenize_many(reviews, NEG_PUNCT_VERSION, workers=0)
    default_seconds = time.perf_counter() - started
    default_rate = len(reviews) / default_seconds

    minutes = len(reviews) / reference_rate / 60
    workers = default_workers()
    rows = [
        ("reviews", f"{len(reviews):,} (reference timed on {len(sample):,})"),
        ("reference notebook", f"{reference_rate:10,.0f} reviews/s  (full dataset ≈ {minutes:.0f} min)"),
        ("reference-bs4-porter-1, 1 process", f"{single_rate:10,.0f} reviews/s  (sample)"),
        (
            f"reference-bs4-porter-1, {workers} processes",
            f"{ours_rate:10,.0f} reviews/s  (full dataset {ours_seconds:.1f} s)",
        ),
        ("words-neg-punct-2, 1 process", f"{default_single_rate:10,.0f} reviews/s  (full dataset)"),
        (
            f"words-neg-punct-2, {workers} processes",
            f"{default_rate:10,.0f} reviews/s  (full dataset {default_seconds:.1f} s)",
        ),
        ("speed-up", f"{ours_rate / reference_rate:10,.0f}x (1 process: {single_rate / reference_rate:,.0f}x)"),
    ]
    for label, value in rows:
        print(f"{label:<42}{value}")
    if args.verify_all:
        mismatches = sum(a != review_to_words_fast_reference(r) for r, a in zip(reviews, ours, strict=True))
        print(f"{'identical tokens':<42}{len(reviews) - mismatches:,} of {len(reviews):,} reviews")
        if mismatches:
            return 1
    print(
        f"reference_rps={reference_rate:.1f} sentiflow_rps={ours_rate:.1f} ratio={ours_rate / reference_rate:.1f} "
        f"default_rps={default_rate:.1f} default_single_rps={default_single_rate:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
