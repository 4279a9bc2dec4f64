"""JWT bearer tokens (pyjwt): verified with an HMAC secret, or with keys from a JWKS URL that are
cached and re-read on an unknown `kid` (at most every 10 s) and every `jwks_refresh`. Claims map to
team, user and allowed models; the result is a key grant like any other."""

from __future__ import annotations

import contextlib
from typing import Any

import httpx
import jwt
import trio

from sidegate.runtime.governance.gate import AuthError
from sidegate.runtime.governance.keys import Grant, looks_like_jwt
from sidegate.runtime.plan import JwtRule

__all__ = ["JwtVerifier", "claim", "looks_like_jwt"]

_MIN_REFETCH = 10.0


def claim(claims: Any, path: str | None) -> Any:
    """The value at a dotted path such as `groups[0]` or `realm.roles`, or None."""
    if not path:
        return None
    value = claims
    for part in path.replace("]", "").split("."):
        name, *indexes = part.split("[")
        if name:
            value = value.get(name) if isinstance(value, dict) else None
        for index in indexes:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
    return value


class JwtVerifier:
    """Verifies tokens for one `auth.jwt` rule."""

    def __init__(self, rule: JwtRule, secret: str | None) -> None:
        self.rule = rule
        self._secret = secret
        self._keys: dict[str, Any] = {}
        self._fetched_at = -_MIN_REFETCH

    async def refresh(self) -> None:
        """Fetch the JWKS now."""
        assert self.rule.jwks_url is not None
        async with httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False) as client:
            response = await client.get(self.rule.jwks_url)
        response.raise_for_status()
        keys = {}
        for jwk in jwt.PyJWKSet.from_dict(response.json()).keys:
            if jwk.key_id:
                keys[jwk.key_id] = jwk.key
        self._keys = keys
        self._fetched_at = trio.current_time()

    async def _key(self, kid: str | None) -> Any:
        if self._secret is not None:
            return self._secret
        if kid is None:
            raise AuthError("the token has no kid")
        key = self._keys.get(kid)
        if key is None and trio.current_time() - self._fetched_at >= _MIN_REFETCH:
            try:
                await self.refresh()
            except (httpx.HTTPError, jwt.PyJWKError, ValueError) as exc:
                raise AuthError(f"cannot read the signing keys: {type(exc).__name__}") from None
            key = self._keys.get(kid)
        if key is None:
            raise AuthError("the token was signed with an unknown key")
        return key

    async def verify(self, token: str) -> Grant:
        """The grant for a valid token; AuthError otherwise."""
        r = self.rule
        try:
            header = jwt.get_unverified_header(token)
            key = await self._key(header.get("kid"))
            claims = jwt.decode(
                token, key, algorithms=list(r.algorithms), audience=r.audience, issuer=r.issuer,
                options={"require": ["exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("the token has expired", code="expired_token") from None
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid token: {exc}") from None
        user = claim(claims, r.user_claim)
        team = claim(claims, r.team_claim)
        models = claim(claims, r.models_claim)
        subject = str(user if user is not None else claims.get("sub", "anonymous"))
        return Grant(
            hash=f"jwt:{subject}", name=subject, team=str(team) if team is not None else None, user=subject,
            models=frozenset(map(str, models)) if isinstance(models, list) else None,
        )

    async def run(self) -> None:
        """Re-read the JWKS every `jwks_refresh` (errors keep the last keys)."""
        if self.rule.jwks_url is None:
            return
        while True:
            with contextlib.suppress(httpx.HTTPError, jwt.PyJWKError, ValueError):
                await self.refresh()
            await trio.sleep(self.rule.jwks_refresh)
