"""An S3-compatible bucket for the spend archive, through botocore (SigV4). Every method blocks:
call it in a worker thread (`trio.to_thread.run_sync`), never on the event loop.

Errors come out as :class:`BucketError` with a one-line reason fit for logs: the operation, the
service's error code and message, or the connection failure; never a credential (botocore's
messages name the access key id at most, never the secret)."""

from __future__ import annotations

from typing import IO, Any, Literal

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from sidegate.runtime.plan.archive import Archive
from sidegate.runtime.store.bucket_error import BucketError

__all__ = ["Bucket", "BucketError"]

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        code = error.get("Code") or status or "error"
        message = error.get("Message") or ""
        return f"{code} (HTTP {status}): {message}".rstrip(": ") if status else f"{code}: {message}".rstrip(": ")
    return f"{type(exc).__name__}: {exc}"


class Bucket:
    """The archive's bucket. `credentials` is (access key id, secret access key), or None for
    botocore's default chain (AWS_* environment variables, the shared config, an instance role)."""

    def __init__(self, config: Archive, credentials: tuple[str, str] | None) -> None:
        self.name = config.bucket
        session = botocore.session.get_session()
        key_id, secret = credentials if credentials is not None else (None, None)
        # S3-compatible servers often refuse botocore's default checksum trailers (aws-chunked bodies);
        # the payload is covered by the SigV4 signature over plain HTTP, by TLS over HTTPS.
        checksums: Literal["when_supported", "when_required"] = (
            "when_required" if config.endpoint_url is not None else "when_supported")
        self._client: Any = session.create_client(
            "s3",
            region_name=config.region,
            endpoint_url=config.endpoint_url,
            aws_access_key_id=key_id,
            aws_secret_access_key=secret,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path" if config.path_style else "virtual"},
                connect_timeout=CONNECT_TIMEOUT,
                read_timeout=READ_TIMEOUT,
                retries={"total_max_attempts": 2, "mode": "standard"},
                request_checksum_calculation=checksums,
                response_checksum_validation=checksums,
            ),
        )

    def put(self, key: str, body: IO[bytes], *, sha256: str, rows: int, content_type: str) -> None:
        """Write one object (replacing one of the same name: writes are idempotent by name)."""
        try:
            self._client.put_object(Bucket=self.name, Key=key, Body=body, ContentType=content_type,
                                    Metadata={"sha256": sha256, "rows": str(rows)})
        except (BotoCoreError, ClientError) as exc:
            raise BucketError(f"PutObject s3://{self.name}/{key} failed: {_reason(exc)}") from None

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()
