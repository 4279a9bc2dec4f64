"""Agent cards: validation, the interfaces sidegate can relay, and the rewrite that points every
interface URL at sidegate's own `/a2a/{agent}` address.

Both card shapes are read and rewritten: A2A 1.0 lists `supportedInterfaces` (`url`,
`protocolBinding`, `protocolVersion`); 0.3 has a top-level `url` with `preferredTransport` and
`additionalInterfaces` (`url`, `transport`). Cards served by the 1.x SDK carry both. Each distinct
upstream URL of a relayable binding gets one mount under the agent's path: the first JSON-RPC URL
is the agent path itself, the first HTTP+JSON URL is `{agent}/rest`, further ones `-2`, `-3`...
Bindings sidegate cannot relay (gRPC, custom ones) are dropped from the served card, so clients
never learn an address that bypasses the gateway.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["JSONRPC", "REST", "Card", "CardError", "Mount", "parse_card", "rewrite_card"]

JSONRPC = "JSONRPC"
REST = "HTTP+JSON"
_RELAYED = {JSONRPC: "", REST: "/rest"}
_SKILL_FIELDS = ("id", "name", "description", "tags")


class CardError(ValueError):
    """A card that is not an A2A agent card sidegate can front."""


@dataclass(frozen=True, slots=True)
class Mount:
    """One relayed upstream interface: its path under `/a2a/{agent}` and where it goes."""

    suffix: str
    binding: str
    upstream: str


@dataclass(frozen=True, slots=True)
class Card:
    """A validated upstream card and its mounts."""

    data: dict[str, Any]
    mounts: tuple[Mount, ...]
    skills: tuple[dict[str, Any], ...]
    by_upstream: dict[tuple[str, str], str]
    """(binding, upstream URL) -> mount suffix."""

    def mount(self, tail: str) -> Mount | None:
        """The mount serving request path `tail` (what follows `/a2a/{agent}`), if any."""
        for m in self.mounts:
            if m.binding == JSONRPC and tail in (m.suffix, m.suffix + "/"):
                return m
        for m in self.mounts:
            if m.binding == REST and (tail == m.suffix or tail.startswith(m.suffix + "/")):
                return m
        return None

    def rewritten(self, public: str) -> bytes:
        """The card as served to clients, with every interface at `public` (+ mount suffix)."""
        return orjson.dumps(rewrite_card(self, public))

    def summary(self) -> dict[str, Any]:
        """Name, description, version and skills, for `GET /a2a/agents`."""
        d = self.data
        return {"name": d.get("name"), "description": d.get("description"), "version": d.get("version"),
                "skills": list(self.skills)}


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise CardError(f"{where} must be a non-empty string")
    return value


def _url(value: Any, where: str) -> str:
    url = _str(value, where)
    if not url.startswith(("http://", "https://")):
        raise CardError(f"{where} must be an http(s) URL")
    return url


def _address(binding: str, value: Any, where: str) -> str:
    """An interface's URL: an http(s) URL for the bindings sidegate relays; for the others (gRPC,
    custom), whatever the agent wrote (the reference SUTs list gRPC as `host:port`): they are
    dropped from the served card, so their address is never checked nor used."""
    if binding in _RELAYED:
        return _url(value, where)
    return value if isinstance(value, str) else ""


def _interfaces(d: dict[str, Any]) -> list[tuple[str, str]]:
    """(binding, url) of every interface the card names, 1.0 list first, then the 0.3 fields."""
    out: list[tuple[str, str]] = []
    listed = d.get("supportedInterfaces")
    if listed is not None:
        if not isinstance(listed, list):
            raise CardError("supportedInterfaces must be a list")
        for i, iface in enumerate(listed):
            if not isinstance(iface, dict):
                raise CardError(f"supportedInterfaces[{i}] must be an object")
            where = f"supportedInterfaces[{i}]"
            binding = _str(iface.get("protocolBinding"), where + ".protocolBinding")
            out.append((binding, _address(binding, iface.get("url"), where + ".url")))
    if "url" in d:
        binding = _str(d.get("preferredTransport", JSONRPC), "preferredTransport")
        out.append((binding, _address(binding, d["url"], "url")))
        extra = d.get("additionalInterfaces") or []
        if not isinstance(extra, list):
            raise CardError("additionalInterfaces must be a list")
        for i, iface in enumerate(extra):
            if not isinstance(iface, dict):
                raise CardError(f"additionalInterfaces[{i}] must be an object")
            where = f"additionalInterfaces[{i}]"
            binding = _str(iface.get("transport"), where + ".transport")
            out.append((binding, _address(binding, iface.get("url"), where + ".url")))
    return out


def parse_card(raw: bytes) -> Card:
    """Validate an upstream card (JSON bytes); raises CardError saying what is wrong."""
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise CardError("the card is not JSON") from None
    if not isinstance(d, dict):
        raise CardError("the card must be a JSON object")
    _str(d.get("name"), "name")
    interfaces = _interfaces(d)
    if not interfaces:
        raise CardError("the card names no interface (supportedInterfaces or url)")
    mounts: list[Mount] = []
    by_upstream: dict[tuple[str, str], str] = {}
    counts = dict.fromkeys(_RELAYED, 0)
    for binding, url in interfaces:
        if binding not in _RELAYED or (binding, url) in by_upstream:
            continue
        counts[binding] += 1
        n = counts[binding]
        base = _RELAYED[binding] or "/jsonrpc"
        suffix = _RELAYED[binding] if n == 1 else f"{base}-{n}"
        mounts.append(Mount(suffix, binding, url))
        by_upstream[(binding, url)] = suffix
    if not mounts:
        raise CardError("the card offers no JSON-RPC or HTTP+JSON interface (the bindings sidegate relays)")
    skills = d.get("skills", [])
    if not isinstance(skills, list) or not all(isinstance(s, dict) for s in skills):
        raise CardError("skills must be a list of objects")
    summary = tuple({k: s[k] for k in _SKILL_FIELDS if k in s} for s in skills)
    return Card(data=d, mounts=tuple(mounts), skills=summary, by_upstream=by_upstream)


def rewrite_card(card: Card, public: str) -> dict[str, Any]:
    """A copy of the card pointing at `public`; unrelayable interfaces and signatures removed
    (a signature cannot cover the rewritten URLs)."""
    d = copy.deepcopy(card.data)
    d.pop("signatures", None)

    def at(binding: Any, url: Any) -> str | None:
        if not (isinstance(binding, str) and isinstance(url, str)):
            return None  # an unrelayed interface's address, as the agent wrote it
        suffix = card.by_upstream.get((binding, url))
        return None if suffix is None else public + suffix

    if isinstance(d.get("supportedInterfaces"), list):
        kept = []
        for iface in d["supportedInterfaces"]:
            new = at(iface["protocolBinding"], iface.get("url"))
            if new is not None:
                kept.append({**iface, "url": new})
        d["supportedInterfaces"] = kept
    if "url" in d:
        main = (d.get("preferredTransport", JSONRPC), d["url"], None)
        extra = [(i["transport"], i.get("url"), i) for i in d.get("additionalInterfaces") or []]
        relayed = [(b, u, i) for b, u, i in (main, *extra) if at(b, u) is not None]
        first = card.mounts[0]
        binding, url = (relayed[0][0], relayed[0][1]) if relayed else (first.binding, first.upstream)
        d["url"] = at(binding, url)
        if "preferredTransport" in d or binding != JSONRPC:
            d["preferredTransport"] = binding
        if "additionalInterfaces" in d:
            d["additionalInterfaces"] = [{**i, "url": at(b, u)} for b, u, i in relayed if i is not None]
    return d


def etag_of(body: bytes) -> str:
    """A strong ETag for a served card."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
