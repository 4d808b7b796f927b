"""Preprocessing throughput: sentiflow's batch tokenizer vs. a faithful copy of the reference notebook's.

Both run in this process on reviews from the IMDB mirror. The reference is timed on a sample (the whole dataset
takes it about an hour); sentiflow's batch form on the whole dataset. Prints reviews per second and the ratio.

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
    from model.preprocessing import reviews_to_words
    from tasks.data.load import load_archive

    reviews = load_archive(args.archive)["review"].tolist()
    sample = reviews[:: max(1, len(reviews) // args.reference_sample)][: args.reference_sample]

    started = time.perf_counter()
    reference_tokens = [reference(review) for review in sample]
    reference_rate = len(sample) / (time.perf_counter() - started)

    started = time.perf_counter()
    ours = reviews_to_words(reviews)
    ours_seconds = time.perf_counter() - started
    ours_rate = len(reviews) / ours_seconds

    single = reviews_to_words(sample)
    assert single == reference_tokens, "sentiflow's tokens differ from the reference on the sample"

    minutes = len(reviews) / reference_rate / 60
    rows = [
        ("reviews", f"{len(reviews):,} (reference timed on {len(sample):,})"),
        ("reference notebook", f"{reference_rate:10,.0f} reviews/s  (full dataset ≈ {minutes:.0f} min)"),
        ("sentiflow, 1 process", f"{ours_rate:10,.0f} reviews/s  (full dataset {ours_seconds:.1f} s)"),
        ("speed-up", f"{ours_rate / reference_rate:10,.0f}x"),
    ]
    for label, value in rows:
        print(f"{label:<28}{value}")
    if args.verify_all:
        mismatches = sum(a != review_to_words_fast_reference(r) for r, a in zip(reviews, ours, strict=True))
        print(f"identical tokens            {len(reviews) - mismatches:,} of {len(reviews):,} reviews")
        if mismatches:
            return 1
    print(f"reference_rps={reference_rate:.1f} sentiflow_rps={ours_rate:.1f} ratio={ours_rate / reference_rate:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
