"""OAuth2 access tokens for Vertex AI, from service-account credentials (google-auth).

The token is cached and refreshed five minutes before it expires; the refresh (an HTTPS call to
Google's token endpoint, blocking in google-auth) runs in a worker thread, one at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import trio

from sidegate.runtime.errors import UpstreamError
from sidegate.runtime.upstream.transport import UpstreamRequest

__all__ = ["SCOPES", "RefreshableCredentials", "VertexTokenSource"]

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
REFRESH_MARGIN = timedelta(minutes=5)


class RefreshableCredentials(Protocol):
    """What is used of `google.auth.credentials.Credentials`."""

    token: str | None
    expiry: datetime | None

    def refresh(self, request: Any) -> None:
        """Fetch a new token (blocking I/O)."""
        ...


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: datetime) -> datetime:
    # google-auth keeps expiry as a naive UTC datetime.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _http_request() -> Any:
    import urllib3
    from google.auth.transport.urllib3 import Request

    return Request(urllib3.PoolManager())  # type: ignore[no-untyped-call]


class VertexTokenSource:
    """A cached bearer token for Vertex AI; also a `RequestAuthorizer` for the proxy."""

    def __init__(
        self,
        credentials: RefreshableCredentials,
        *,
        now: Callable[[], datetime] = _utcnow,
        http: Callable[[], Any] = _http_request,
    ) -> None:
        self._credentials = credentials
        self._now = now
        self._http = http
        self._transport: Any = None
        self._lock = trio.Lock()
        self.refreshes = 0
        """How many times a token was fetched."""

    @classmethod
    def from_service_account_file(cls, path: str, **kw: Any) -> VertexTokenSource:
        """Credentials from a service-account JSON key file (reads the file: call off the loop)."""
        from google.oauth2 import service_account

        load = service_account.Credentials.from_service_account_file
        credentials = load(path, scopes=list(SCOPES))  # type: ignore[no-untyped-call]
        return cls(credentials, **kw)

    @classmethod
    def from_service_account_info(cls, info: dict[str, Any], **kw: Any) -> VertexTokenSource:
        """Credentials from a parsed service-account key (the JSON a `credentials` secret holds)."""
        from google.oauth2 import service_account

        load = service_account.Credentials.from_service_account_info
        credentials = load(info, scopes=list(SCOPES))  # type: ignore[no-untyped-call]
        return cls(credentials, **kw)

    @classmethod
    def from_default(cls, **kw: Any) -> VertexTokenSource:
        """Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud, metadata server)."""
        import google.auth

        credentials, _ = google.auth.default(scopes=list(SCOPES))
        return cls(credentials, **kw)

    def token_nowait(self) -> str | None:
        """The cached token when it is good for at least five more minutes, else None."""
        token, expiry = self._credentials.token, self._credentials.expiry
        if not token:
            return None
        if expiry is not None and _aware(expiry) - REFRESH_MARGIN <= self._now():
            return None
        return token

    def _refresh(self) -> None:
        if self._transport is None:
            self._transport = self._http()
        self._credentials.refresh(self._transport)

    async def token(self) -> str:
        """A fresh token, refreshed in a worker thread when needed (concurrent callers share one refresh).

        A failed refresh raises UpstreamError `upstream_auth_error`.
        """
        token = self.token_nowait()
        if token is not None:
            return token
        async with self._lock:
            token = self.token_nowait()
            if token is None:
                try:
                    await trio.to_thread.run_sync(self._refresh)
                except Exception as exc:  # google-auth raises RefreshError, TransportError, ValueError...
                    raise UpstreamError(
                        f"could not get a Vertex AI access token: {type(exc).__name__}: {exc}",
                        code="upstream_auth_error",
                    ) from None
                self.refreshes += 1
                token = self._credentials.token
        if not token:
            raise UpstreamError("google-auth returned no Vertex AI access token", code="upstream_auth_error")
        return token

    async def authorize(self, request: UpstreamRequest) -> UpstreamRequest:
        """`request` with `Authorization: Bearer <token>` (any configured authorization replaced)."""
        token = await self.token()
        headers = tuple(h for h in request.headers if h[0].lower() != "authorization")
        return dataclasses.replace(request, headers=(*headers, ("authorization", f"Bearer {token}")))
