"""The aws artifact store: an S3 prefix (``s3://<aws_bucket>/<aws_prefix>/<key>``).

Implemented with the boto3 S3 client from :mod:`backends.aws.clients` rather than prefect-aws ``S3Bucket``:
the store needs ``head_object`` metadata (the sha256 of each object, so identical content is never uploaded
twice — ETags are not content hashes for multipart uploads) and exact control of keys, which ``S3Bucket``
wraps behind its own ``bucket_folder`` and async-dispatch methods. Credentials from an ``AwsCredentials``
block still apply, because the client comes from :class:`~backends.aws.clients.AwsClients`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from backends.aws.clients import AwsClients, aws_errors, error_code
from core.errors import ConfigError, SentiflowError
from core.io import sha256_file

SHA256_METADATA = "sha256"  # stored as x-amz-meta-sha256


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> ``(bucket, key)``; SentiflowError for anything else."""
    if not uri.startswith("s3://"):
        raise SentiflowError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise SentiflowError(f"{uri!r} has no bucket name")
    return bucket, key


class S3ArtifactStore:
    """Channels, models and reports under one S3 prefix. Keys are ``/``-separated relative paths."""

    def __init__(self, clients: AwsClients, bucket: str, prefix: str = "") -> None:
        if not bucket:
            raise ConfigError(
                "the aws backend needs an S3 bucket: set SENTIFLOW_AWS_BUCKET (see docs/aws.md, 'Prerequisites')"
            )
        self.clients = clients
        self.bucket = bucket
        self.prefix = prefix.strip("/")

    @property
    def s3(self) -> Any:
        return self.clients.client("s3")

    # --- naming ---------------------------------------------------------------------------------------
    def object_key(self, key: str) -> str:
        """The S3 object key of a store key."""
        key = key.strip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    def key_from_uri(self, uri: str) -> str:
        bucket, object_key = split_s3_uri(uri)
        root = f"{self.prefix}/" if self.prefix else ""
        if bucket != self.bucket or not object_key.startswith(root):
            raise SentiflowError(f"{uri} is outside the artifact store s3://{self.bucket}/{root}")
        return object_key[len(root) :]

    # --- objects --------------------------------------------------------------------------------------
    def _head(self, object_key: str) -> dict[str, Any] | None:
        """The object's metadata, None if it does not exist.

        S3 answers HeadObject on a missing key with 404 only to a caller that may ``s3:ListBucket``; without it,
        403 — for a missing key and a forbidden one alike (HEAD has no body, so the code is ``'403'``). That is a
        permission to fix, not a transient fault: one line naming the grant, never retried.
        """
        from botocore.exceptions import ClientError

        try:
            with aws_errors(f"reading s3://{self.bucket}/{object_key}"):
                return self.s3.head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as error:
            code = error_code(error)
            if code in {"404", "NoSuchKey", "NotFound"}:
                return None
            if code in {"403", "Forbidden"}:
                raise SentiflowError(
                    f"reading s3://{self.bucket}/{object_key} was refused (HTTP 403: S3 answers a missing key "
                    "with 403 to a caller without s3:ListBucket): grant s3:ListBucket on the bucket and "
                    "s3:GetObject on the store's prefixes (deployments/iam/operator.json, docs/aws.md)"
                ) from None
            raise

    def exists(self, key: str) -> bool:
        return self._head(self.object_key(key)) is not None

    def sha256(self, key: str) -> str | None:
        """The sha256 recorded in the object's metadata (None if absent or written by another tool)."""
        head = self._head(self.object_key(key))
        return None if head is None else head.get("Metadata", {}).get(SHA256_METADATA)

    def put_file(self, path: Path, key: str) -> tuple[str, bool]:
        """Upload ``path`` unless the object holds the same content (sha256 metadata); (uri, uploaded)."""
        path = Path(path)
        if not path.is_file():
            raise SentiflowError(f"cannot upload {path}: not a file")
        digest = sha256_file(path)
        object_key = self.object_key(key)
        head = self._head(object_key)
        if head is not None and head.get("Metadata", {}).get(SHA256_METADATA) == digest:
            return self.uri(key), False
        from boto3.exceptions import S3UploadFailedError

        try:
            with aws_errors(f"uploading {path} to {self.uri(key)}", "check the bucket name and s3:PutObject"):
                self.s3.upload_file(
                    str(path), self.bucket, object_key, ExtraArgs={"Metadata": {SHA256_METADATA: digest}}
                )
        except S3UploadFailedError as error:
            # boto3 wraps the ClientError; missing buckets and denials are the user's to fix
            if any(code in str(error) for code in ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId")):
                raise SentiflowError(
                    f"uploading {path} to {self.uri(key)} failed: {error}; check SENTIFLOW_AWS_BUCKET and "
                    "s3:PutObject on it"
                ) from error
            raise
        return self.uri(key), True

    def get_file(self, key: str, path: Path) -> Path:
        """Download to ``path`` atomically (temp sibling, then rename)."""
        path = Path(path)
        object_key = self.object_key(key)
        if self._head(object_key) is None:
            raise SentiflowError(f"{self.uri(key)} does not exist; run the stage that writes it first")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            with aws_errors(f"downloading {self.uri(key)}"):
                self.s3.download_file(self.bucket, object_key, tmp_name)
            os.replace(tmp_name, path)
        finally:
            Path(tmp_name).unlink(missing_ok=True)
        return path

    @contextlib.contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        """A temporary download of the object, removed after the block."""
        with tempfile.TemporaryDirectory(prefix="sentiflow-s3-") as tmp:
            yield self.get_file(key, Path(tmp) / (Path(key).name or "object"))

    @contextlib.contextmanager
    def publish_dir(self, prefix: str) -> Iterator[Path]:
        """Upload the folder's files under ``prefix/`` once the block succeeds (unchanged objects are skipped).

        S3 has no atomic multi-object write: an interrupted upload can leave some objects, but no stage result
        points at them (Prefect records a result only after its task completed) and a rerun completes them."""
        with tempfile.TemporaryDirectory(prefix="sentiflow-publish-") as tmp:
            folder = Path(tmp)
            yield folder
            for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                self.put_file(path, f"{prefix.strip('/')}/{path.relative_to(folder).as_posix()}")

    def list_keys(self, prefix: str) -> list[str]:
        """Store keys under ``prefix`` (sorted)."""
        root = self.object_key(prefix).rstrip("/") + "/"
        keys: list[str] = []
        with aws_errors(f"listing {self.uri(prefix)}"):
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=root):
                keys.extend(self.key_from_uri(f"s3://{self.bucket}/{obj['Key']}") for obj in page.get("Contents", []))
        return sorted(keys)

    def list(self, prefix: str) -> list[str]:
        """Keys of the objects below ``prefix`` (same as the local store's ``list``)."""
        return self.list_keys(prefix)
