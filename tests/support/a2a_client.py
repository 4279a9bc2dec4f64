"""The official a2a-sdk client, pointed only at sidegate's `/a2a/{agent}` address."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from a2a.client import Client, ClientConfig, ClientFactory
from a2a.helpers.proto_helpers import new_text_message
from a2a.types.a2a_pb2 import Role, SendMessageRequest

from runtime.server import Handle


def agent_url(gw: Handle, agent: str) -> str:
    return f"http://127.0.0.1:{gw.port}/a2a/{agent}"


@asynccontextmanager
async def open_client(gw: Handle, agent: str, key: str, *, streaming: bool = True, polling: bool = False,
                      bindings: tuple[str, ...] = ("JSONRPC",)) -> AsyncIterator[Client]:
    """A client built the way users build one: from the card at the URL, with sidegate's key."""
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}, timeout=10) as http:
        config = ClientConfig(httpx_client=http, streaming=streaming, polling=polling,
                              supported_protocol_bindings=list(bindings), use_client_preference=True)
        client = await ClientFactory(config).create_from_url(agent_url(gw, agent))
        yield client


def user_message(text: str) -> SendMessageRequest:
    return SendMessageRequest(message=new_text_message(text, role=Role.ROLE_USER))
