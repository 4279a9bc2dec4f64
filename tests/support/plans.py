"""Plans built directly from the plan types, for runtime tests that must not depend on the compiler."""

from __future__ import annotations

import types
from typing import Any

from sidegate.runtime.plan import (
    PLAN_VERSION,
    Auth,
    AuthScheme,
    CooldownPolicy,
    Family,
    LogFormat,
    LogLevel,
    Logs,
    Metrics,
    MockBehaviour,
    ModelGroup,
    Observability,
    Plan,
    Provider,
    RetryOn,
    RetryPolicy,
    Secret,
    SecretPart,
    SecretSource,
    Server,
    Store,
    Strategy,
    Target,
    Team,
)


def text(value: str) -> Secret:
    return Secret(parts=(SecretPart(source=SecretSource.TEXT, value=value),))


def env(name: str) -> Secret:
    return Secret(parts=(SecretPart(source=SecretSource.ENV, value=name),))


_NOT_NATIVE: dict[str, Any] = dict(region=None, project=None, credentials=None, aws_profile=None,
                                   drop_unsupported=False)


def mock_provider(name: str = "fake", **behaviour: Any) -> Provider:
    b = dict(text="Hello from sidegate.", latency=0.0, latency_per_token=0.0, error_rate=0.0,
             error_status=500, seed=0, embedding_dimensions=8)
    b.update(behaviour)
    return Provider(name=name, type="mock", family=Family.MOCK, base_url="mock://local", auth=None,
                    api_key=None, headers=(), connect_timeout=5.0, stream_usage=True, api_version=None,
                    mock=MockBehaviour(**b), health=None, **_NOT_NATIVE)


def openai_provider(name: str, base_url: str, key_env: str | None = None, *, family: Family = Family.OPENAI,
                    api_version: str | None = None, stream_usage: bool = True) -> Provider:
    auth = AuthScheme(header="api-key", prefix="") if family is Family.AZURE else AuthScheme(
        header="Authorization", prefix="Bearer ")
    return Provider(name=name, type="azure" if family is Family.AZURE else "openai-compatible", family=family,
                    base_url=base_url, auth=auth, api_key=env(key_env) if key_env else None, headers=(),
                    connect_timeout=5.0, stream_usage=stream_usage, api_version=api_version, mock=None,
                    health=None, **_NOT_NATIVE)


_AUTH = {
    Family.ANTHROPIC: AuthScheme(header="x-api-key", prefix=""),
    Family.GEMINI: AuthScheme(header="x-goog-api-key", prefix=""),
    Family.COHERE: AuthScheme(header="Authorization", prefix="Bearer "),
    Family.BEDROCK: AuthScheme(header="Authorization", prefix="Bearer "),
    Family.VERTEX: None,
}


def native_provider(name: str, family: Family, base_url: str, key_env: str | None = None, *,
                    region: str | None = None, project: str | None = None, credentials: Secret | None = None,
                    aws_profile: str | None = None, drop_unsupported: bool = False) -> Provider:
    """A provider of a native family (its catalog auth scheme; no usage option on streams)."""
    return Provider(name=name, type=family.value, family=family, base_url=base_url, auth=_AUTH[family],
                    api_key=env(key_env) if key_env else None, headers=(), connect_timeout=5.0,
                    stream_usage=False, api_version=None, mock=None, health=None, region=region,
                    project=project, credentials=credentials, aws_profile=aws_profile,
                    drop_unsupported=drop_unsupported)


def target(provider: str, model: str, **kw: Any) -> Target:
    values: dict[str, Any] = dict(id=f"{provider}/{model}", provider=provider, model=model, weight=1.0, rpm=None,
                                  tpm=None, max_parallel=None, headers=(), extra_body=types.MappingProxyType({}),
                                  price=None, max_input_tokens=None, max_output_tokens=None, tier=0)
    values.update(kw)
    return Target(**values)


NO_RETRY = RetryPolicy(attempts=1, backoff=0.0, max_backoff=0.0, on=tuple(RetryOn))
COOLDOWN = CooldownPolicy(failures=3, window=60.0, duration=30.0, error_rate=None, min_requests=10)


def group(name: str, *targets: Target, timeout: float = 30.0, aliases: tuple[str, ...] = (),
          **kw: Any) -> ModelGroup:
    prefix = name[:-1] if name.endswith("/*") and "*" not in name[:-1] else None
    kw.setdefault("glob", name if prefix is None and "*" in name else None)
    values: dict[str, Any] = dict(strategy=Strategy.WEIGHTED, retry=NO_RETRY, cooldown=COOLDOWN, fallbacks=(),
                                  context_window_fallbacks=(), content_policy_fallbacks=(), hedge_after=None)
    values.update(kw)
    return ModelGroup(name=name, aliases=aliases, wildcard_prefix=prefix, targets=targets, timeout=timeout,
                      **values)


def plan(providers: list[Provider], models: list[ModelGroup], *, port: int = 0, max_body: int = 1 << 20,
         drain: float = 5.0, bodies: bool = False, auth: Auth | None = None,
         teams: tuple[Team, ...] = (), max_event: int = 1 << 20, max_answer: int = 64 << 20,
         body_timeout: float = 30.0, allowed_hosts: tuple[str, ...] = (), max_connections: int = 1024) -> Plan:
    return Plan(
        version=PLAN_VERSION,
        server=Server(host="127.0.0.1", port=port, workers=1, max_body=max_body, drain_timeout=drain,
                      max_upstream_event=max_event, max_upstream_answer=max_answer, body_timeout=body_timeout,
                      keep_alive=75.0, max_header_size=16384, max_json_depth=64, allowed_hosts=allowed_hosts,
                      max_connections=max_connections),
        providers=tuple(sorted(providers, key=lambda p: p.name)),
        models=tuple(sorted(models, key=lambda g: g.name)),
        store=Store(database=text("sqlite://:memory:")),
        observability=Observability(
            metrics=Metrics(enabled=True, path="/metrics"),
            logs=Logs(format=LogFormat.JSON, level=LogLevel.INFO, bodies=bodies),
        ),
        auth=auth,
        teams=teams,
    )


def quick() -> Plan:
    """A mock-only plan: `demo` (canned text, alias `default`), `echo` (echoes), `slow` (paced)."""
    return plan(
        [mock_provider("fake"), mock_provider("echo", text=None), mock_provider("slow", latency_per_token=0.01)],
        [
            group("demo", target("fake", "demo"), aliases=("default",)),
            group("echo", target("echo", "echo")),
            group("slow", target("slow", "slow")),
        ],
    )
