"""SigV4 signing of Bedrock requests with botocore's signer and its default credential chain
(environment, shared config/credentials profile, web identity, SSO, container and instance roles).

Signing needs the final URL, headers and body, so it runs after translation, just before sending.
It is CPU-only once credentials are in hand; fetching or refreshing them may do I/O, and only then
does `authorize` leave the event loop.
"""

from __future__ import annotations

import dataclasses

import trio
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials
from botocore.credentials import RefreshableCredentials as BotoRefreshable
from botocore.exceptions import BotoCoreError, ClientError
from botocore.session import Session

from sidegate.runtime.errors import UpstreamError
from sidegate.runtime.upstream.transport import UpstreamRequest

__all__ = ["SIGNING_NAME", "BedrockSigner"]

SIGNING_NAME = "bedrock"
"""bedrock-runtime signs as service `bedrock` (its service model's `signingName`)."""


class BedrockSigner:
    """Adds SigV4 headers (`Authorization`, `X-Amz-Date`, `X-Amz-Security-Token`) for one region."""

    def __init__(self, region: str, credentials: Credentials) -> None:
        self.region = region
        self._credentials = credentials

    @classmethod
    def from_default_chain(cls, region: str, profile: str | None = None) -> BedrockSigner:
        """Credentials from botocore's default chain (blocking: call in a worker thread at start).

        Raises LookupError when the chain finds nothing.
        """
        credentials = Session(profile=profile).get_credentials()
        if credentials is None:
            raise LookupError("no AWS credentials found (environment, profile, web identity or instance role)")
        return cls(region, credentials)

    def needs_io(self) -> bool:
        """Whether getting the credentials now may fetch them over the network."""
        return isinstance(self._credentials, BotoRefreshable) and self._credentials.refresh_needed()

    def sign(self, request: UpstreamRequest, frozen: ReadOnlyCredentials | None = None) -> UpstreamRequest:
        """`request` with SigV4 headers for exactly its method, URL, headers and body.

        Without `frozen` credentials this may block to refresh them (see `needs_io`).
        """
        creds = frozen or self._credentials.get_frozen_credentials()
        aws = AWSRequest(method=request.method, url=request.url, data=request.body, headers=dict(request.headers))
        SigV4Auth(creds, SIGNING_NAME, self.region).add_auth(aws)
        return dataclasses.replace(request, headers=tuple((str(k), str(v)) for k, v in aws.headers.items()))

    async def authorize(self, request: UpstreamRequest) -> UpstreamRequest:
        """Sign `request`, fetching credentials in a worker thread only when they need refreshing.

        Credentials that cannot be refreshed raise UpstreamError `upstream_auth_error`.
        """
        try:
            if self.needs_io():
                frozen = await trio.to_thread.run_sync(self._credentials.get_frozen_credentials)
            else:
                frozen = self._credentials.get_frozen_credentials()
        except (BotoCoreError, ClientError) as exc:
            raise UpstreamError(f"could not get AWS credentials: {exc}", code="upstream_auth_error") from None
        return self.sign(request, frozen)
