"""URL and secret redaction (core.redact): what may be logged, labelled, stored or sent."""

from __future__ import annotations

import logging

import pytest

from core.redact import SecretFilter, redact_text, redact_url, url_secrets

SIGNED = (
    "https://user:p%40ssword@bucket.s3.amazonaws.com:8443/data/aclImdb_v1.tar.gz"
    "?X-Amz-Signature=abc123def&X-Amz-Credential=AKIAX%2F1#frag"
)


@pytest.mark.parametrize(
    ("url", "want"),
    [
        (SIGNED, "https://bucket.s3.amazonaws.com:8443/data/aclImdb_v1.tar.gz"),
        ("http://user@host/p", "http://host/p"),
        ("http://[::1]:8080/a?b=c", "http://[::1]:8080/a"),
        ("s3://bucket/key?versionId=1", "s3://bucket/key"),
        ("file:///tmp/a b.tar.gz", "file:///tmp/a b.tar.gz"),
        ("/local/path/a.tar.gz", "/local/path/a.tar.gz"),
        ("relative/a.tar.gz", "relative/a.tar.gz"),
    ],
)
def test_redact_url_keeps_what_says_which_file(url: str, want: str) -> None:
    assert redact_url(url) == want


def test_without_path_only_scheme_and_host_remain() -> None:
    assert redact_url("https://hooks.slack.com/services/T0/B0/SECRET", keep_path=False) == "https://hooks.slack.com"


def test_an_unparseable_url_fails_closed() -> None:
    assert redact_url("http://[::1") == "<unparseable URL>"


def test_redact_text_covers_library_messages() -> None:
    raw = (
        "404 Client Error: Not Found for url: http://u:PLANTED@127.0.0.1:9/x.tar.gz?X-Amz-Signature=SIGNATURE "
        "and Server error '500' for url 'https://h/hook?token=TOKEN'"
    )
    clean = redact_text(raw)
    assert "PLANTED" not in clean and "SIGNATURE" not in clean and "TOKEN" not in clean
    assert "http://127.0.0.1:9/x.tar.gz" in clean and "https://h/hook" in clean


def test_known_secrets_are_masked_also_percent_encoded() -> None:
    secret = "XOXB/SECRET"
    clean = redact_text("plain XOXB/SECRET and encoded XOXB%2FSECRET", [secret])
    assert "SECRET" not in clean and clean.count("***") == 2


def test_url_secrets_lists_the_credential_parts() -> None:
    assert {"p@ssword", "abc123def", "user"} <= set(url_secrets(SIGNED))


def test_the_log_filter_redacts_messages_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("tests.core.redact")
    logger.addFilter(SecretFilter(["PLANTED"]))
    try:
        raise RuntimeError("for url: http://u:PLANTED@h/x?sig=SIGNATURE")
    except RuntimeError:
        with caplog.at_level(logging.INFO, logger="tests.core.redact"):
            logger.exception("fetching %s", "http://u:PLANTED@h/x?sig=SIGNATURE")
    text = caplog.text
    assert "PLANTED" not in text and "SIGNATURE" not in text
    assert "fetching http://h/x" in text and "RuntimeError" in text
