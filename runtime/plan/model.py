"""The plan: the frozen, executable form of a spec, and the only seam between compiler and runtime.

The compiler targets these types; the runtime executes them. Every value is immutable (tuples,
read-only mappings), durations are seconds as floats, closed sets are enums. Secrets appear only
as references (:class:`Secret`), resolved by the runtime at start.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from sidegate.runtime.plan.archive import Archive, ArchiveFormat
from sidegate.runtime.plan.cache import Cache, CachePolicy
from sidegate.runtime.plan.gateways import (
    A2A,
    A2AAgent,
    A2APolicy,
    Mcp,
    McpAccess,
    McpOAuth,
    McpServer,
    McpStart,
    McpTransport,
)
from sidegate.runtime.plan.governance import Auth, BudgetRule, JwtRule, LimitRule, StaticKey, Team, UserRule
from sidegate.runtime.plan.guardrails import Guardrails
from sidegate.runtime.plan.observability import LogFormat, LogLevel, Logs, Metrics, Observability, OtlpProtocol, Tracing
from sidegate.runtime.plan.passthrough import PassthroughRoute
from sidegate.runtime.plan.realtime import Realtime
from sidegate.runtime.plan.storage import Files, Store
from sidegate.runtime.plan.values import Header, JSONValue, Secret, SecretPart, SecretSource

__all__ = [
    "A2A",
    "PLAN_VERSION",
    "A2AAgent",
    "A2APolicy",
    "Archive",
    "ArchiveFormat",
    "Auth",
    "AuthScheme",
    "BudgetRule",
    "Cache",
    "CachePolicy",
    "Capabilities",
    "CooldownPolicy",
    "Family",
    "Files",
    "Header",
    "HealthProbe",
    "JSONValue",
    "JwtRule",
    "LimitRule",
    "LogFormat",
    "LogLevel",
    "Logs",
    "Mcp",
    "McpAccess",
    "McpOAuth",
    "McpServer",
    "McpStart",
    "McpTransport",
    "Metrics",
    "MockBehaviour",
    "ModelGroup",
    "Observability",
    "OtlpProtocol",
    "PassthroughRoute",
    "Plan",
    "Price",
    "PriceSource",
    "Provider",
    "Realtime",
    "RetryOn",
    "RetryPolicy",
    "Secret",
    "SecretPart",
    "SecretSource",
    "Server",
    "StaticKey",
    "Store",
    "Strategy",
    "Target",
    "Team",
    "Tracing",
    "UserRule",
]

PLAN_VERSION = 12
"""Bumped whenever a plan written by an older compiler could be misread by this runtime."""

class Family(enum.Enum):
    """The adapter family that speaks to a provider's wire format."""

    OPENAI = "openai"
    AZURE = "azure"
    MOCK = "mock"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"
    VERTEX = "vertex"
    BEDROCK = "bedrock"
    COHERE = "cohere"
    VOYAGE = "voyage"

    @property
    def native(self) -> bool:
        """Whether requests are translated (not OpenAI's wire format passed through)."""
        return self not in (Family.OPENAI, Family.AZURE, Family.MOCK)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthScheme:
    """How the API key is presented upstream: `header: prefix + key`."""

    header: str
    prefix: str


@dataclass(frozen=True, slots=True, kw_only=True)
class MockBehaviour:
    """The deterministic built-in test double's behaviour (provider type `mock`)."""

    text: str | None
    """Canned reply; None echoes the last user message."""
    latency: float
    """Delay before the first token (seconds)."""
    latency_per_token: float
    error_rate: float
    """Share of requests (0..1) answered with `error_status`, decided by a seeded generator."""
    error_status: int
    seed: int
    embedding_dimensions: int


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthProbe:
    """Active health checks of a provider's deployments: a cheap request every `interval`."""

    interval: float
    timeout: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Provider:
    """A named upstream account or endpoint."""

    name: str
    type: str
    """The provider type as the spec names it (a catalog type such as `groq`, or `openai`...)."""
    family: Family
    base_url: str
    auth: AuthScheme | None
    api_key: Secret | None
    headers: tuple[Header, ...]
    connect_timeout: float
    stream_usage: bool
    """Whether the upstream accepts `stream_options.include_usage`."""
    api_version: str | None
    """Azure's `api-version` query parameter."""
    mock: MockBehaviour | None
    health: HealthProbe | None
    region: str | None
    """Cloud region: Vertex AI location or AWS region (Bedrock signs requests for it)."""
    project: str | None
    """Google Cloud project (Vertex AI)."""
    credentials: Secret | None
    """Vertex AI service-account key (its JSON text, usually `{file: ...}`); None means Google's
    application default credentials."""
    aws_profile: str | None
    """Bedrock: the AWS shared-config profile; None means botocore's default credential chain."""
    drop_unsupported: bool
    """Native families: drop request parameters the provider cannot take instead of answering 400."""
    first_byte_timeout: float | None = None
    """Per attempt: time allowed from sending the request to the answer's headers and first event (a
    whole answer: to its end). None: the request's remaining deadline shared among the attempts
    still planned."""
    idle_timeout: float | None = None
    """Per attempt: longest silence between two stream events. None: no bound of its own
    (`first_byte_timeout` bounds the wait for the first event, the request's deadline the rest)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """USD per token (and per media unit where the model is priced so), from the price table at
    compile time."""

    input: float
    output: float
    cached_input: float | None
    per_image: float | None = None
    """USD per image generated or edited (`/v1/images/*`)."""
    per_image_by: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    """USD per image by `quality/size` (`hd/1024x1792`) where the price depends on them (DALL-E);
    an image of another kind is charged `per_image`."""
    per_second: float | None = None
    """USD per second of audio transcribed or translated."""
    per_character: float | None = None
    """USD per character of speech input (`/v1/audio/speech`)."""
    per_search_unit: float | None = None
    """USD per rerank search unit (Cohere's `meta.billed_units.search_units`)."""


class PriceSource(enum.Enum):
    """Where a deployment's price comes from."""

    TABLE = "table"
    """The bundled price table, by the upstream model name."""
    SPEC = "spec"
    """The target's own `price`."""
    BASE_MODEL = "base_model"
    """The price table, by the target's `base_model`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """What a target's model takes, decided at compile time from the price/context table and the
    provider family; requests translated for it (Anthropic Messages, the OpenAI surface's token
    limit) follow it. `None` means the table does not say: the request is sent as it is."""

    reasoning: bool = False
    """Takes reasoning controls (`reasoning_effort`); otherwise Anthropic's `thinking` and
    `output_config.effort` are dropped for it."""
    max_completion_tokens: bool = False
    """Refuses `max_tokens`: the output limit goes as `max_completion_tokens` (OpenAI reasoning models)."""
    sampling: bool = True
    """Takes `temperature` / `top_p` (OpenAI reasoning models take only the defaults)."""
    stop: bool = True
    """Takes stop sequences."""
    top_k: bool = False
    """Takes `top_k` (native families map it; OpenAI's wire has no such field)."""
    vision: bool | None = None
    """Reads images."""
    pdf: bool | None = None
    """Reads PDF documents."""
    prompt_caching: bool = False
    """Honours Anthropic-style `cache_control` markers (Claude on Bedrock or Vertex AI)."""
    system_anywhere: bool = False
    """Takes `system` messages after the first turn (OpenAI and Azure); otherwise they are folded
    into the system prompt."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One deployment of a model group: a provider and the upstream model name."""

    id: str
    """Stable deployment id, `provider/model` (unique inside its group); used in metrics."""
    provider: str
    model: str
    """Upstream model name; `*` in a wildcard group forwards the requested suffix."""
    weight: float
    rpm: int | None
    tpm: int | None
    max_parallel: int | None
    headers: tuple[Header, ...]
    extra_body: Mapping[str, JSONValue]
    price: Price | None
    max_input_tokens: int | None
    max_output_tokens: int | None
    tier: int
    """Priority tier for the `priority` strategy (0 first)."""
    caps: Capabilities = Capabilities()
    """What the model takes (see :class:`Capabilities`)."""
    price_source: PriceSource | None = None
    """Where `price` comes from; None when the deployment has no price."""
    base_model: str | None = None
    """The price-table model the target is priced as (`base_model` in the spec)."""


class Strategy(enum.Enum):
    """How a group picks the deployment for each attempt."""

    WEIGHTED = "weighted"
    ROUND_ROBIN = "round-robin"
    LEAST_BUSY = "least-busy"
    LATENCY = "latency"
    USAGE = "usage"
    COST = "cost"
    PRIORITY = "priority"


class RetryOn(enum.Enum):
    """Failures that are retried."""

    RATE_LIMIT = "429"
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    CONNECT = "connect"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """Attempts per group (the first included), exponential backoff with jitter."""

    attempts: int
    backoff: float
    max_backoff: float
    on: tuple[RetryOn, ...]
    max_retry_after: float = 5.0
    """The longest upstream Retry-After waited out inside a request when no other deployment is free;
    a longer one is answered 429 at once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CooldownPolicy:
    """Circuit breaker per deployment: open after `failures` (429s and 5xx counted separately) in
    `window`, or when the error rate over `window` reaches `error_rate` with at least
    `min_requests`; stay open `duration`; then half-open with one probe request."""

    failures: int
    window: float
    duration: float
    error_rate: float | None
    min_requests: int
    keep_last: bool = True
    """Never open the breaker of a group's last available deployment (so a lone deployment never
    cools down); its failures reach the client with their own status."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelGroup:
    """A public model name (or `prefix/*` wildcard) and the deployments that serve it."""

    name: str
    aliases: tuple[str, ...]
    wildcard_prefix: str | None
    """For a name like `groq/*`: `groq/`; None for an exact name."""
    glob: str | None = None
    """For any other name with `*` in it (`claude-*`, `*-haiku-*`): that pattern, where `*` stands
    for any run of characters; the whole requested name is forwarded to a target whose model is `*`."""
    targets: tuple[Target, ...]
    timeout: float
    """The request's single deadline, in seconds."""
    strategy: Strategy
    retry: RetryPolicy
    cooldown: CooldownPolicy
    fallbacks: tuple[str, ...]
    """Groups tried, in order, when every attempt on this one failed (flattened, no cycles)."""
    context_window_fallbacks: tuple[str, ...]
    """Groups tried when the prompt is over this group's context windows."""
    content_policy_fallbacks: tuple[str, ...]
    """Groups tried when an upstream refuses the content."""
    hedge_after: float | None
    """Start a second attempt elsewhere when the first has sent no byte after this long."""
    reserve_output_tokens: int = 4096
    """Output tokens reserved at admission for a request without max_tokens when a deployment's
    output limit is unknown."""
    cache: CachePolicy | None = None
    """How this group's answers are cached (None: not cached)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Server:
    """Where and how the sidecar listens."""

    host: str
    port: int
    workers: int
    max_body: int
    drain_timeout: float
    max_upstream_event: int
    """Bytes an upstream stream may send without completing one event (a longer one fails the request)."""
    max_upstream_answer: int
    """Bytes one upstream answer (whole, streamed or an error body) may have."""
    body_timeout: float
    """Seconds a client may take to send a request's whole body (a slower one gets 408)."""
    keep_alive: float
    """Seconds an idle client connection is kept open."""
    max_header_size: int
    """Bytes of request line and headers accepted (more: the connection gets 431 and is closed)."""
    max_json_depth: int
    """Deepest nesting of arrays and objects accepted in a JSON request body."""
    allowed_hosts: tuple[str, ...]
    """Host names accepted (besides localhost and the listen address) when the spec has no `auth`."""
    max_connections: int
    """Client connections open at once (clamped at start to half the process's file descriptors)."""
    max_upload: int = 25 << 20
    """Bytes a multipart upload (audio, image edits) may have (more: 413)."""
    health_host: str | None = None
    health_port: int | None = None
    """A second listener that answers only the health routes (`server.health_listen`): probes can
    reach the pod IP while the API stays on loopback. None: no second listener."""
    max_file_size: int = 100 << 20
    """Bytes one `POST /v1/files` upload may have (`server.max_file_size`; more: 413)."""
    listen: Secret | None = None
    """A `listen` with references (`127.0.0.1:${PORT}`), resolved at start; `host` and `port` then
    hold its literal parts and defaults for the others."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """The whole executable plan."""

    version: int
    server: Server
    providers: tuple[Provider, ...]
    models: tuple[ModelGroup, ...]
    store: Store
    observability: Observability
    auth: Auth | None
    teams: tuple[Team, ...]
    users: tuple[UserRule, ...] = ()
    a2a: A2A | None = None
    mcp: Mcp | None = None
    cache: Cache | None = None
    """The response cache's store (None: nothing is cached)."""
    guardrails: Guardrails | None = None
    """Guardrails and who names them (None: the spec declares none)."""
    realtime: Realtime = field(default_factory=Realtime)
    """Limits of Realtime API sessions (`GET /v1/realtime`)."""
    files: Files = field(default_factory=Files)
    """Where uploads and batches go, and the batch price."""
    passthrough: tuple[PassthroughRoute, ...] = ()
    """Provider pass-through routes (`passthrough`), longest prefix first."""

    def provider(self, name: str) -> Provider:
        """The provider called `name` (the compiler guarantees every target's exists)."""
        for p in self.providers:
            if p.name == name:
                return p
        raise KeyError(name)
