"""The spend archive's plan (`store.archive`): where closed periods of spend rows are written (an
S3-compatible bucket), how often, in which format, and how long the database keeps them after."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sidegate.runtime.plan.values import Secret

__all__ = ["Archive", "ArchiveFormat"]


class ArchiveFormat(enum.Enum):
    """How one period's rows are encoded in its object."""

    JSONL_GZ = "jsonl.gz"
    """One JSON object a line, gzip-compressed."""
    PARQUET = "parquet"
    """Apache Parquet (needs pyarrow: the `parquet` extra)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Archive:
    """Spend rows archived to object storage, one object per closed period."""

    bucket: str
    prefix: str
    """Key prefix without leading or trailing slash ('' for the bucket's root)."""
    every: float
    """Seconds a period lasts; periods are aligned to the UTC epoch (hours start at :00)."""
    grace: float
    """Seconds after a period's end before it counts as closed (late spend rows still land in it)."""
    format: ArchiveFormat
    keep_days: int | None
    """Days rows are kept in the database once archived; None: never pruned."""
    endpoint_url: str | None
    """An S3-compatible server (MinIO, Ceph, R2...); None: AWS S3 of `region`."""
    region: str
    access_key_id: Secret | None
    secret_access_key: Secret | None
    """Both or neither; neither: botocore's default credential chain (environment, profile, role)."""
    path_style: bool
    """Address the bucket in the path (`host/bucket/key`) rather than as a subdomain."""
