"""The official a2a-sdk client, pointed only at sidegate's `/a2a/{agent}` address (or, for a
baseline, at an agent directly)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from a2a.client import Client, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import new_text_message
from a2a.types.a2a_pb2 import Role, SendMessageRequest

from sidegate.runtime.server import Handle

TLS = ssl.create_default_context()
"""One TLS context for every test client: httpx builds one per client otherwise (~90 ms each)."""


def agent_url(gw: Handle, agent: str) -> str:
    return f"http://127.0.0.1:{gw.port}/a2a/{agent}"


@asynccontextmanager
async def open_client(gw: Handle, agent: str, key: str, *, streaming: bool = True, polling: bool = False,
                      bindings: tuple[str, ...] = ("JSONRPC",)) -> AsyncIterator[Client]:
    """A client built the way users build one: from the card at the URL, with sidegate's key."""
    async with open_client_at(agent_url(gw, agent), key, streaming=streaming, polling=polling,
                              bindings=bindings) as client:
        yield client


@asynccontextmanager
async def open_client_at(url: str, key: str, *, streaming: bool = True, polling: bool = False,
                         bindings: tuple[str, ...] = ("JSONRPC",)) -> AsyncIterator[Client]:
    """A client built from the card at `url`, sending `key` as its bearer token."""
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=10, verify=TLS) as http:
        config = ClientConfig(httpx_client=http, streaming=streaming, polling=polling,
                              supported_protocol_bindings=list(bindings), use_client_preference=True)
        client = await ClientFactory(config).create_from_url(url)
        yield client


def user_message(text: str) -> SendMessageRequest:
    return SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
