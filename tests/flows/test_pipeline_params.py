"""Flow parameters that Prefect would store in clear are checked at the flow boundary."""

from __future__ import annotations

import pytest

from core.errors import ConfigError
from flows.data import source_without_secrets


@pytest.mark.parametrize(
    "source",
    [
        "https://user:hunter2@example.org/aclImdb_v1.tar.gz",
        "https://bucket.s3.amazonaws.com/aclImdb.tar.gz?X-Amz-Signature=abc123",
    ],
)
def test_a_source_with_credentials_is_refused_naming_the_environment_variable(source: str) -> None:
    with pytest.raises(ConfigError, match="SENTIFLOW_DATA_URL") as refused:
        source_without_secrets(source)
    assert "hunter2" not in str(refused.value) and "abc123" not in str(refused.value)


@pytest.mark.parametrize("source", [None, "../shared/data/aclImdb_v1_labeled.tar.gz", "s3://bucket/aclImdb.tar.gz"])
def test_plain_sources_pass(source: str | None) -> None:
    assert source_without_secrets(source) == source
