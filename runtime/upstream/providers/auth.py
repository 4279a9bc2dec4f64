"""The request authorizer of a provider whose credentials are more than a static header: Vertex AI
(an OAuth2 token from a service-account key or application default credentials) and Bedrock
without an API key (SigV4 from botocore's credential chain).

Built once per plan at start or reload, in a worker thread: reading key files and walking the AWS
credential chain block. google-auth and botocore's session are imported only when a plan needs them.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from sidegate.runtime.plan import Family, Provider, Secret
from sidegate.runtime.plan.secrets import SecretError
from sidegate.runtime.upstream.providers.common import RequestAuthorizer

__all__ = ["CredentialsError", "authorizer_for"]


class CredentialsError(SecretError):
    """A provider's credentials cannot be loaded (stops a start, fails a reload like a missing secret).
    The message names the provider and the reference, never a secret."""


def authorizer_for(provider: Provider, resolve: Callable[[Secret], str]) -> RequestAuthorizer | None:
    """The authorizer `provider` needs, or None when its static headers carry its key.

    Blocking (call off the event loop). Raises CredentialsError when the credentials are unusable,
    and whatever `resolve` raises for a missing secret.
    """
    if provider.family is Family.VERTEX:
        return _vertex(provider, resolve)
    if provider.family is Family.BEDROCK and provider.api_key is None:
        return _bedrock(provider)
    return None


def _vertex(provider: Provider, resolve: Callable[[Secret], str]) -> RequestAuthorizer:
    from sidegate.runtime.upstream.providers.vertex_auth import VertexTokenSource

    if provider.credentials is None:
        try:
            return VertexTokenSource.from_default()
        except Exception as exc:  # google.auth.exceptions.DefaultCredentialsError and friends
            raise CredentialsError(
                f"provider '{provider.name}': no Google application default credentials ({type(exc).__name__}); "
                "set credentials: {file: /path/to/service-account.json} or GOOGLE_APPLICATION_CREDENTIALS"
            ) from None
    text = resolve(provider.credentials)
    try:
        info = orjson.loads(text)
        if not isinstance(info, dict):
            raise ValueError("not a JSON object")
        return VertexTokenSource.from_service_account_info(info)
    except Exception as exc:  # invalid JSON, missing fields, an unreadable private key
        raise CredentialsError(
            f"provider '{provider.name}': credentials {provider.credentials.describe()} are not a service-account "
            f"key ({type(exc).__name__})"
        ) from None


def _bedrock(provider: Provider) -> RequestAuthorizer:
    from sidegate.runtime.upstream.providers.bedrock_auth import BedrockSigner

    assert provider.region is not None, "the compiler requires a region for bedrock"
    try:
        return BedrockSigner.from_default_chain(provider.region, provider.aws_profile)
    except Exception as exc:  # LookupError (nothing found), ProfileNotFound, a broken config file
        raise CredentialsError(f"provider '{provider.name}': {exc}") from None
