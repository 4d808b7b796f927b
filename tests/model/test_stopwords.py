"""The shipped stopword list equals NLTK's English list."""

from __future__ import annotations

from model.stopwords import ENGLISH_STOPWORDS


def test_shipped_list_has_nltk_size_and_no_duplicates() -> None:
    assert len(ENGLISH_STOPWORDS) == 179 == len(set(ENGLISH_STOPWORDS))


def test_shipped_list_equals_nltk_corpus(nltk_data_dir, monkeypatch) -> None:
    import nltk
    from nltk.corpus.reader import WordListCorpusReader
    from nltk.data import find

    monkeypatch.setattr(nltk.data, "path", [str(nltk_data_dir)])
    corpus = WordListCorpusReader(find("corpora/stopwords.zip/stopwords/"), r"(?!README|\.).*")
    assert list(ENGLISH_STOPWORDS) == corpus.words("english")
