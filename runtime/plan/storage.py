"""The plan's storage sections: the database (`store`) and where uploads and batches go (`files`)."""

from __future__ import annotations

from dataclasses import dataclass

from sidegate.runtime.plan.archive import Archive
from sidegate.runtime.plan.values import Secret

__all__ = ["Files", "Store"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Store:
    """The embedded or shared database."""

    database: Secret
    """A `sqlite:///path` or `sqlite://:memory:` URL (may hold secret references)."""
    redis: Secret | None = None
    """A Redis URL: rate-limit counters and budget spend shared by every sidecar using it."""
    redis_sync: float = 0.5
    """Seconds between two syncs of the counters with Redis."""
    responses_retention: float = 30 * 86400.0
    """Seconds a stored `/v1/responses` answer is kept."""
    journal: str | None = None
    """Path of the local spend journal; None: the default for the database (see `journal_path`)."""
    spend_buffer: int = 100_000
    """Spend rows kept in memory while the database is unreachable (past it: the journal)."""
    archive: Archive | None = None
    """Closed periods of spend rows written to S3-compatible storage (None: not archived)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Files:
    """`/v1/files` and `/v1/batches` (the spec's `files` section)."""

    model: str | None = None
    """The model group whose first OpenAI or Azure deployment holds an upload that names no `model`."""
    batch_discount: float = 0.5
    """The fraction of a deployment's price a batch's results are metered at (OpenAI's Batch API: half)."""
