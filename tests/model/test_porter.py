"""The vendored Porter stemmer (model/porter.py) stems exactly like the installed NLTK."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from nltk.stem.porter import PorterStemmer as NltkPorterStemmer

from model.porter import PorterStemmer

PAPER_EXAMPLES = """
sky skies dying lying tying news innings inning outings canning howe proceed exceed succeed
caresses ponies ties caress cats feed agreed plastered bled motoring sing conflated troubled sized
hopping tanned falling hissing fizzed failing filing happy enjoy spy fly try flies died spied
relational conditional rational valenci hesitanci digitizer conformabli radicalli differentli
vileli analogousli vietnamization predication operator feudalism decisiveness hopefulness
callousness formaliti sensitiviti sensibiliti triplicate formative formalize electriciti electrical
hopeful goodness revival allowance inference airliner gyroscopic adjustable defensible irritant
replacement adjustment dependent adoption homologou communism activate angulariti homologous
effective bowdlerize probate rate cease controll roll generously fully logi geology archaeology
"""  # the examples of Porter's paper and NLTK's extensions
TRICKY = [
    *PAPER_EXAMPLES.split(),
    *["a", "is", "by", "y", "yy", "yyyy", "y" * 500, "ab" * 200, "1990s", "2nd", "br", "it's", "x1y2", ""],
]


@pytest.mark.parametrize("word", TRICKY)
def test_stems_like_nltk(word: str) -> None:
    assert PorterStemmer().stem(word) == NltkPorterStemmer().stem(word)


@pytest.mark.e2e  # reads the shared mirror and stems 89,527 words twice (~15 s)
@pytest.mark.data
def test_every_word_of_the_imdb_vocabulary_stems_like_nltk(imdb_archive: Path) -> None:
    with tarfile.open(imdb_archive) as tar:  # imdb.vocab is the archive's second member: read at once
        member = tar.extractfile("aclImdb/imdb.vocab")
        assert member is not None
        words = member.read().decode("utf-8").split()
    assert len(words) > 80_000
    ours, theirs = PorterStemmer(), NltkPorterStemmer()
    different = [word for word in words if ours.stem(word) != theirs.stem(word)]
    assert different == []


def test_tokenizer_does_not_import_nltk() -> None:
    """Serving imports model.preprocessing; NLTK's package import alone costs ~160 MiB (it pulls scipy, pandas)."""
    code = "import sys, model.preprocessing; print(sorted(m for m in ('nltk', 'scipy', 'pandas') if m in sys.modules))"
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
