"""JWT bearer tokens end to end: HS256 with a shared secret; RS256 with keys from a JWKS served by a
local HTTP server, re-read when a token names an unknown kid (key rotation); claims mapped to team,
user and models; expired and badly signed tokens refused."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric import rsa
from hypercorn.config import Config
from hypercorn.trio import serve

from sidegate.runtime.governance.jwt_auth import claim
from sidegate.runtime.plan import Auth, JwtRule, Team
from tests.support.gateway import base_url, open_gateway
from tests.support.plans import env, group, mock_provider, plan, target

MSG = {"messages": [{"role": "user", "content": "hi"}]}


def _plan(rule: JwtRule):  # type: ignore[no-untyped-def]
    return plan([mock_provider("fake")], [group("demo", target("fake", "demo")), group("other", target("fake", "o"))],
                auth=Auth(master_key=None, keys=(), refresh=5.0, jwt=rule),
                teams=(Team(name="platform", models=("demo",), budget=None, limits=None),))


def _rule(**kw: Any) -> JwtRule:
    values: dict[str, Any] = dict(secret=None, jwks_url=None, algorithms=("HS256",), audience="sidegate", issuer=None,
                                  team_claim="groups[0]", user_claim="sub", models_claim=None, jwks_refresh=600.0)
    values.update(kw)
    return JwtRule(**values)


def test_claim_paths() -> None:
    claims = {"sub": "u1", "groups": ["platform", "x"], "a": {"b": [{"c": 3}]}}
    assert claim(claims, "groups[0]") == "platform" and claim(claims, "a.b[0].c") == 3
    assert claim(claims, "groups[5]") is None and claim(claims, "missing.x") is None


async def _post(gw, token: str, model: str = "demo") -> httpx.Response:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient() as c:
        return await c.post(f"{base_url(gw)}/chat/completions", headers={"authorization": f"Bearer {token}"},
                            json={"model": model, **MSG})


async def test_hs256_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_JWT_SECRET", "a-long-enough-shared-secret-for-hs256!")
    secret = "a-long-enough-shared-secret-for-hs256!"
    now = int(time.time())
    good = jwt.encode({"sub": "alice", "groups": ["platform"], "aud": "sidegate", "exp": now + 60}, secret)
    expired = jwt.encode({"sub": "alice", "aud": "sidegate", "exp": now - 10}, secret)
    forged = jwt.encode({"sub": "alice", "aud": "sidegate", "exp": now + 60}, "another-secret-of-enough-length!!")
    wrong_aud = jwt.encode({"sub": "alice", "aud": "elsewhere", "exp": now + 60}, secret)
    with trio.fail_after(10):
        async with open_gateway(_plan(_rule(secret=env("TEST_JWT_SECRET")))) as gw:
            ok = await _post(gw, good)
            team_says_no = await _post(gw, good, model="other")
            refused = [await _post(gw, t) for t in (expired, forged, wrong_aud)]
    assert ok.status_code == 200 and team_says_no.status_code == 403
    assert [r.status_code for r in refused] == [401, 401, 401]
    assert refused[0].json()["error"]["code"] == "expired_token"


@asynccontextmanager
async def _jwks_server(keys: list[dict[str, Any]]) -> AsyncIterator[tuple[str, list[int]]]:
    hits = [0]

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                m = await receive()
                await send({"type": m["type"] + ".complete"})
                if m["type"] == "lifespan.shutdown":
                    return
        hits[0] += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": json.dumps({"keys": keys}).encode()})

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, app, config)  # type: ignore[arg-type]
        yield f"{binds[0]}/jwks.json", hits
        nursery.cancel_scope.cancel()


def _jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    data = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**data, "kid": kid, "use": "sig", "alg": "RS256"}


async def test_rs256_tokens_from_jwks_with_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sidegate.runtime.governance.jwt_auth._MIN_REFETCH", 0.5)
    old = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    new = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    keys = [_jwk(old, "k1")]
    now = int(time.time())
    claims = {"sub": "bob", "groups": ["platform"], "aud": "sidegate", "exp": now + 60, "models": ["demo"]}
    with trio.fail_after(15):
        async with _jwks_server(keys) as (url, hits):
            rule = _rule(jwks_url=url, algorithms=("RS256",), models_claim="models")
            async with open_gateway(_plan(rule)) as gw:
                first = await _post(gw, jwt.encode(claims, old, algorithm="RS256", headers={"kid": "k1"}))
                keys.append(_jwk(new, "k2"))  # the issuer rotates in a new key
                await trio.sleep(0.6)  # past the minimum interval between forced re-reads
                rotated = await _post(gw, jwt.encode(claims, new, algorithm="RS256", headers={"kid": "k2"}))
                unknown = await _post(gw, jwt.encode(claims, new, algorithm="RS256", headers={"kid": "nope"}))
    assert first.status_code == 200 and rotated.status_code == 200
    assert unknown.status_code == 401 and hits[0] >= 2
