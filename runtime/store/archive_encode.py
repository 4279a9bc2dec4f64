"""Encoding one period of spend rows into an archive object: gzip'd JSON lines, or Parquet (with
pyarrow, the optional `parquet` extra). Rows are written chunk by chunk into a temporary file (kept
in memory up to 8 MiB), so a busy period is never held in memory whole; the digest is of the
object's bytes. The encoding is deterministic (gzip without a timestamp): the same rows make the
same object, so a period archived twice writes the same bytes under the same name.

Every function here blocks: call it in a worker thread."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import tempfile
from typing import IO, Any

import orjson

from sidegate.runtime.plan.archive import ArchiveFormat

__all__ = ["COLUMNS", "Encoder", "parquet_available"]

COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "int"), ("request_id", "str"), ("key_hash", "str"), ("team", "str"), ("user", "str"),
    ("model", "str"), ("deployment", "str"), ("prompt_tokens", "int"), ("completion_tokens", "int"),
    ("cached_tokens", "int"), ("reasoning_tokens", "int"), ("cost", "float"), ("estimated", "bool"),
    ("latency_ms", "float"), ("status", "int"), ("created_at", "float"), ("cache_hit", "bool"),
    ("saved_cost", "float"), ("guardrails", "str"),
)
"""The archived columns of the spend log, in order, with their type: every column (the archive is
what is left of a row once it is pruned; tests/test_store_archive.py checks none is missing)."""
_SPOOL = 8 * 1024 * 1024
EXTENSIONS = {ArchiveFormat.JSONL_GZ: "jsonl.gz", ArchiveFormat.PARQUET: "parquet"}
CONTENT_TYPES = {ArchiveFormat.JSONL_GZ: "application/gzip", ArchiveFormat.PARQUET: "application/vnd.apache.parquet"}


def parquet_available() -> bool:
    """Whether pyarrow can be imported (the `parquet` format needs it)."""
    return importlib.util.find_spec("pyarrow") is not None


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, kind in COLUMNS:
        value = row.get(name)
        if value is not None:
            value = bool(value) if kind == "bool" else float(value) if kind == "float" else value
        out[name] = value
    return out


class Encoder:
    """One object being written: `write` chunks of rows (dicts by column name), then `finish`."""

    def __init__(self, fmt: ArchiveFormat) -> None:
        self.format = fmt
        self.rows = 0
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=_SPOOL)  # noqa: SIM115 - closed by close()
        self._gzip: gzip.GzipFile | None = None
        self._parquet: Any = None
        if fmt is ArchiveFormat.JSONL_GZ:
            self._gzip = gzip.GzipFile(fileobj=self.file, mode="wb", compresslevel=6, mtime=0)
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq

            kinds = {"int": pa.int64(), "str": pa.string(), "float": pa.float64(), "bool": pa.bool_()}
            self._schema = pa.schema([(name, kinds[kind]) for name, kind in COLUMNS])
            self._parquet = pq.ParquetWriter(self.file, self._schema, compression="zstd")

    def write(self, rows: list[dict[str, Any]]) -> None:
        """Append rows to the object."""
        typed = [_typed(r) for r in rows]
        if self._gzip is not None:
            self._gzip.write(b"".join(orjson.dumps(r) + b"\n" for r in typed))
        else:
            import pyarrow as pa

            self._parquet.write_table(pa.Table.from_pylist(typed, schema=self._schema))
        self.rows += len(rows)

    def finish(self) -> str:
        """Close the encoding; returns the sha256 (hex) of the object's bytes, the file rewound."""
        if self._gzip is not None:
            self._gzip.close()
        else:
            self._parquet.close()
        self.file.seek(0)
        digest = hashlib.sha256()
        while chunk := self.file.read(1 << 20):
            digest.update(chunk)
        self.file.seek(0)
        return digest.hexdigest()

    def close(self) -> None:
        """Drop the temporary file."""
        self.file.close()
