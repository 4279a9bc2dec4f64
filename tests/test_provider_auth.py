"""Credentials beyond a static header: Vertex AI's OAuth2 token source (google-auth service-account
flow against a local fake token endpoint; caching and refresh five minutes before expiry) and
Bedrock's SigV4 signer (checked against an independent SigV4 computation; credential refresh in a
worker thread only)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import trio
from botocore.credentials import Credentials, RefreshableCredentials

from sidegate.runtime.upstream.providers.bedrock_auth import BedrockSigner
from sidegate.runtime.upstream.providers.vertex_auth import VertexTokenSource
from sidegate.runtime.upstream.transport import UpstreamRequest
from tests.support.fake_base import FakeServer, Seen, open_fake

REQUEST = UpstreamRequest("POST", "https://example.test/v1/x", (("content-type", "application/json"),
                                                                 ("authorization", "stale")), b"{}", 5.0)


class FakeCredentials:
    def __init__(self, lifetime: timedelta, now: datetime) -> None:
        self.token: str | None = None
        self.expiry: datetime | None = None
        self.lifetime = lifetime
        self.now = now
        self.calls = 0
        self.threads: set[int] = set()

    def refresh(self, request: Any) -> None:
        self.calls += 1
        self.threads.add(threading.get_ident())
        self.token = f"token-{self.calls}"
        self.expiry = (self.now + self.lifetime).replace(tzinfo=None)  # google-auth keeps naive UTC


async def test_token_cached_until_five_minutes_before_expiry_refreshed_off_loop() -> None:
    clock = [datetime(2025, 1, 1, tzinfo=UTC)]
    creds = FakeCredentials(timedelta(hours=1), clock[0])
    source = VertexTokenSource(creds, now=lambda: clock[0], http=lambda: "transport")
    assert source.token_nowait() is None
    assert await source.token() == "token-1"
    clock[0] += timedelta(minutes=54)
    assert await source.token() == "token-1", "still more than five minutes left"
    clock[0] += timedelta(minutes=1, seconds=1)
    assert source.token_nowait() is None
    creds.now = clock[0]
    assert await source.token() == "token-2"
    assert creds.calls == 2 and threading.get_ident() not in creds.threads


async def test_concurrent_callers_share_one_refresh_and_authorize_replaces_header() -> None:
    creds = FakeCredentials(timedelta(hours=1), datetime.now(UTC))
    source = VertexTokenSource(creds, http=lambda: "transport")
    results: list[str] = []

    async def get() -> None:
        results.append(await source.token())

    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(get)
    assert results == ["token-1"] * 5 and creds.calls == 1
    signed = await source.authorize(REQUEST)
    assert ("authorization", "Bearer token-1") in signed.headers
    assert ("authorization", "stale") not in signed.headers and ("content-type", "application/json") in signed.headers


class FakeTokenEndpoint(FakeServer):
    async def answer(self, seen: Seen, send: Any) -> None:
        await self.json(send, 200, {"access_token": "ya29.fake", "expires_in": 3599, "token_type": "Bearer"})


def _service_account(token_uri: str) -> dict[str, str]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    return {"type": "service_account", "project_id": "proj", "private_key_id": "k1", "private_key": pem,
            "client_email": "sidegate@proj.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri}


async def test_service_account_file_flow_against_local_token_endpoint(tmp_path: Any) -> None:
    with trio.fail_after(10):
        async with open_fake(FakeTokenEndpoint()) as endpoint:
            path = tmp_path / "sa.json"
            path.write_text(json.dumps(_service_account(f"{endpoint.root}/token")))
            source = await trio.to_thread.run_sync(VertexTokenSource.from_service_account_file, str(path))
            first = await source.token()
            second = await source.token()
    assert first == second == "ya29.fake" and len(endpoint.seen) == 1 and source.refreshes == 1
    form = parse_qs(endpoint.seen[0].raw.decode())
    assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    claims = json.loads(base64.urlsafe_b64decode(form["assertion"][0].split(".")[1] + "=="))
    assert claims["iss"] == "sidegate@proj.iam.gserviceaccount.com"
    assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"


def _sigv4(request: UpstreamRequest, secret: str, region: str) -> str:
    """An independent SigV4 computation (AWS General Reference, "Create a signed AWS API request")."""
    headers = {k.lower(): v for k, v in request.headers}
    auth = headers["authorization"]
    signed = auth.split("SignedHeaders=")[1].split(",")[0].split(";")
    amz_date = headers["x-amz-date"]
    parts = urlsplit(request.url)
    values = {**headers, "host": parts.netloc}
    # Non-S3 services sign each path segment URI-encoded twice.
    path = "/".join(seg.replace("%", "%25") for seg in parts.path.split("/"))
    canonical = "\n".join([request.method, path, parts.query,
                           "".join(f"{h}:{values[h].strip()}\n" for h in signed), ";".join(signed),
                           hashlib.sha256(request.body).hexdigest()])
    scope = f"{amz_date[:8]}/{region}/bedrock/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for item in (amz_date[:8], region, "bedrock", "aws4_request"):
        key = hmac.new(key, item.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_sigv4_signature_matches_independent_computation() -> None:
    url = "https://bedrock-runtime.us-west-2.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse"
    request = UpstreamRequest("POST", url, (("content-type", "application/json"),), b'{"messages": []}', 5.0)
    signer = BedrockSigner("us-west-2", Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "sess"))
    signed = signer.sign(request)
    headers = dict(signed.headers)
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/us-west-2/bedrock/aws4_request" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "sess" and signed.body == request.body and signed.url == url
    signature = headers["Authorization"].rsplit("Signature=", 1)[1]
    assert signature == _sigv4(signed, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-west-2")


async def test_refreshable_credentials_fetched_in_a_worker_thread_only_when_due() -> None:
    threads: list[int] = []

    def refresh() -> dict[str, str]:
        threads.append(threading.get_ident())
        expiry = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        return {"access_key": "AKIDNEW", "secret_key": "secret", "token": "t", "expiry_time": expiry}

    stale = {"access_key": "AKIDOLD", "secret_key": "s", "token": "t",
             "expiry_time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}
    creds = RefreshableCredentials.create_from_metadata(stale, refresh, "test")
    signer = BedrockSigner("us-east-1", creds)
    assert signer.needs_io()
    signed = await signer.authorize(REQUEST)
    assert "Credential=AKIDNEW/" in dict(signed.headers)["Authorization"]
    assert threads and threads[0] != threading.get_ident() and not signer.needs_io()
    await signer.authorize(REQUEST)
    assert len(threads) == 1, "fresh credentials are used on the loop without a refresh"


def test_default_chain_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(LookupError):
        BedrockSigner.from_default_chain("us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    signed = BedrockSigner.from_default_chain("eu-west-1").sign(REQUEST)
    assert "Credential=AKIDENV/" in dict(signed.headers)["Authorization"]


async def test_failed_refreshes_are_upstream_auth_errors() -> None:
    from google.auth.exceptions import RefreshError

    from sidegate.runtime.errors import UpstreamError

    class Broken(FakeCredentials):
        def refresh(self, request: Any) -> None:
            raise RefreshError("invalid_grant: account disabled")

    source = VertexTokenSource(Broken(timedelta(hours=1), datetime.now(UTC)), http=lambda: "transport")
    with pytest.raises(UpstreamError) as info:
        await source.authorize(REQUEST)
    assert info.value.code == "upstream_auth_error" and "invalid_grant" in info.value.message

    from botocore.exceptions import NoCredentialsError

    def refresh() -> dict[str, str]:
        raise NoCredentialsError()

    stale = {"access_key": "A", "secret_key": "s", "token": "t",
             "expiry_time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat()}
    signer = BedrockSigner("us-east-1", RefreshableCredentials.create_from_metadata(stale, refresh, "test"))
    with pytest.raises(UpstreamError) as info:
        await signer.authorize(REQUEST)
    assert info.value.code == "upstream_auth_error"
