"""A fake OAuth 2.0 authorization server's token endpoint (client credentials grant, RFC 6749 §4.4):
checks HTTP Basic client authentication and the form body, issues `tok-1`, `tok-2`, ..."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from tests.support.fake_base import FakeServer, Seen


@dataclass
class FakeTokenServer(FakeServer):
    client_id: str = "gateway"
    client_secret: str = "s3cret"
    expires_in: int = 3600
    issued: int = 0

    async def answer(self, seen: Seen, send: Any) -> None:
        expected = "Basic " + base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        form = parse_qs(seen.raw.decode())
        if seen.path != "/oauth/token" or seen.method != "POST":
            await self.json(send, 404, {"error": "not_found"})
        elif seen.headers.get("authorization") != expected:
            await self.json(send, 401, {"error": "invalid_client"})
        elif form.get("grant_type") != ["client_credentials"]:
            await self.json(send, 400, {"error": "unsupported_grant_type"})
        else:
            self.issued += 1
            await self.json(send, 200, {"access_token": f"tok-{self.issued}", "token_type": "Bearer",
                                        "expires_in": self.expires_in})
