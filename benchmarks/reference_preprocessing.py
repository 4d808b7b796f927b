"""A faithful copy of the reference notebook's preprocessing, kept only to compare against.

It re-reads the stopword list and builds a new ``PorterStemmer`` for every word, exactly as the course notebook
did — which is why it took about an hour on the full dataset.
"""

from __future__ import annotations

import re

from bs4 import BeautifulSoup
from nltk.stem.porter import PorterStemmer

from model.stopwords import ENGLISH_STOPWORDS


def _stopwords() -> list[str]:
    """``stopwords.words("english")``: NLTK's corpus when NLTK_DATA provides it, else the shipped copy."""
    try:
        from nltk.corpus import stopwords

        return stopwords.words("english")
    except LookupError:
        return list(ENGLISH_STOPWORDS)


def review_to_words(review: str) -> list[str]:
    """The notebook's function, line for line (minus its per-call ``nltk.download``)."""
    text = BeautifulSoup(review, "html.parser").get_text()  # Remove HTML tags
    text = re.sub(r"[^a-zA-Z0-9]", " ", text.lower())  # Convert to lower case
    words = text.split()  # Split string into words
    words = [w for w in words if w not in _stopwords()]  # Remove stopwords
    words = [PorterStemmer().stem(w) for w in words]  # stem
    return words


def review_to_words_fast_reference(review: str) -> list[str]:
    """The same definition with one stopword set and one stemmer: identical output, for tests over many reviews."""
    stop = frozenset(_stopwords())
    stemmer = PorterStemmer()
    text = re.sub(r"[^a-zA-Z0-9]", " ", BeautifulSoup(review, "html.parser").get_text().lower())
    return [stemmer.stem(w) for w in text.split() if w not in stop]
