"""OAuth 2.0 client credentials (RFC 6749 §4.4) for upstream MCP servers: a token fetched from the
token endpoint with HTTP Basic client authentication, cached until shortly before it expires, and
fetched again early when the upstream refuses it (401)."""

from __future__ import annotations

import httpx
import trio

from sidegate.runtime.mcp.protocol import UPSTREAM_UNAVAILABLE, McpError

__all__ = ["TokenSource"]

_DEFAULT_LIFETIME = 3600.0
_MARGIN = 30.0


class TokenSource:
    """One server's access token."""

    def __init__(self, server: str, token_url: str, client_id: str, client_secret: str, scope: str | None,
                 timeout: float) -> None:
        self.server = server
        self.token_url = token_url
        self._auth = (client_id, client_secret)
        self._scope = scope
        self._token: str | None = None
        self._expires = 0.0
        self._lock = trio.Lock()
        self._client = httpx.AsyncClient(timeout=timeout)
        self.fetched = 0
        """Tokens fetched so far (for tests and health)."""

    def invalidate(self) -> None:
        """Forget the cached token (the upstream refused it)."""
        self._token = None

    async def aclose(self) -> None:
        await self._client.aclose()

    async def token(self) -> str:
        """A valid access token, fetched when none is cached or it is about to expire."""
        async with self._lock:
            if self._token is not None and trio.current_time() < self._expires:
                return self._token
            form = {"grant_type": "client_credentials"}
            if self._scope:
                form["scope"] = self._scope
            try:
                response = await self._client.post(self.token_url, data=form, auth=self._auth,
                                                   headers={"accept": "application/json"})
                body = response.json() if response.content else {}
            except (httpx.HTTPError, ValueError) as exc:
                raise self._failed(type(exc).__name__) from None
            if response.status_code != 200 or not isinstance(body, dict):
                code = body.get("error") if isinstance(body, dict) else None
                raise self._failed(f"HTTP {response.status_code}" + (f" ({code})" if isinstance(code, str) else ""))
            token, lifetime = body.get("access_token"), body.get("expires_in", _DEFAULT_LIFETIME)
            if not isinstance(token, str) or not token:
                raise self._failed("no access_token in the answer")
            if not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool):
                lifetime = _DEFAULT_LIFETIME
            self._token = token
            self._expires = trio.current_time() + max(float(lifetime) - _MARGIN, float(lifetime) / 2)
            self.fetched += 1
            return token

    def _failed(self, why: str) -> McpError:
        return McpError(UPSTREAM_UNAVAILABLE, f"MCP server '{self.server}': OAuth token request failed: {why}")
