"""The spend archive's bucket error, apart from `bucket` so that catching it loads no botocore."""

from __future__ import annotations

__all__ = ["BucketError"]


class BucketError(Exception):
    """A request to the archive's bucket failed (the message is safe to log: no credential)."""
