"""What `sidegate render` needs to know besides the plan: the spec's `deploy` section with its
defaults, every secret reference the plan holds, where the sqlite store writes, and how to probe.

The `deploy` section never reaches the plan (the runtime does not need it): it is read here from the
validated spec data. Every value that lands in a rendered file is either pattern-checked by the
schema or quoted by the templates' filters.
"""

from __future__ import annotations

import dataclasses
import math
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidegate.compiler.diagnostics import Collector
from sidegate.compiler.resolve import parse_duration
from sidegate.runtime.plan import Plan, Secret, SecretSource

__all__ = [
    "CONTAINER_GID",
    "CONTAINER_UID",
    "PLAN_DIR",
    "PLAN_PATH",
    "WORKDIR",
    "Deploy",
    "SecretFile",
    "cpu_cores",
    "deploy_settings",
    "grace_seconds",
    "health_url",
    "is_loopback",
    "memory_bytes",
    "secret_references",
    "store_dir",
]

PLAN_DIR = "/etc/sidegate"
"""Where the compiled plan is mounted (Kubernetes, compose) or installed (systemd)."""
PLAN_PATH = PLAN_DIR + "/plan.json"
WORKDIR = "/var/lib/sidegate"
"""The sidecar's working directory (the image's WORKDIR, systemd's StateDirectory): a relative
sqlite path (`sqlite:///./sidegate.db`) lands here."""
CONTAINER_UID = 10001
"""The non-root user of the image (see the Dockerfile)."""
CONTAINER_GID = 10001

_NAME_CHARS = re.compile(r"[^a-z0-9-]+")
_KEY_CHARS = re.compile(r"[^-._a-zA-Z0-9]+")
_CPU = re.compile(r"([0-9]+)m|([0-9]+(?:\.[0-9]+)?)")
_MEMORY = re.compile(r"([0-9]+)(Ki|Mi|Gi|Ti|k|M|G|T)?")
_MEMORY_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4}
_MEMORY_UNITS.update({"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4})


@dataclass(frozen=True, slots=True, kw_only=True)
class Deploy:
    """The `deploy` section with every default filled in."""

    image: str
    cpu: str | None
    memory: str | None
    app: str
    namespace: str | None
    secret: str
    service_account: str | None
    native_sidecar: bool
    pre_stop_delay: float
    """Seconds (0 renders no preStop hook)."""
    executable: str

    @property
    def config_map(self) -> str:
        """The ConfigMap that holds the plan."""
        return f"{self.app}-sidegate"


@dataclass(frozen=True, slots=True, kw_only=True)
class SecretFile:
    """A `{file: ...}` reference: the path the plan reads, and the Secret key that backs it."""

    path: str
    key: str


def _default_app(filename: str) -> str:
    stem = posixpath.basename(filename.replace("\\", "/")).rsplit(".", 1)[0].lower()
    name = _NAME_CHARS.sub("-", stem).strip("-")[:63].strip("-")
    return name or "sidegate"


def deploy_settings(data: Mapping[str, Any], filename: str, version: str, out: Collector | None,
                    image: str | None = None, *, target: str = "kubernetes") -> Deploy:
    """The `deploy` section of the validated spec ``data`` (``image``: `render --image`, over the
    spec's); what the ``target`` needs and the spec leaves to defaults (the app name, the image) is
    reported to ``out`` (when given)."""
    raw: Mapping[str, Any] = data.get("deploy", {})
    if image is None and "image" not in raw and out is not None and target in ("kubernetes", "compose"):
        out.warning(
            "render.default-image",
            "/deploy" if "deploy" in data else "",
            f"no image is set (deploy.image or --image); the files name sidegate:{version}, which no registry "
            f"serves: build it from the Dockerfile and push it (docker build -t REGISTRY/sidegate:{version} .)",
        )
    kube: Mapping[str, Any] = raw.get("kubernetes", {})
    resources: Mapping[str, Any] = raw.get("resources", {})
    app = kube.get("app") or _default_app(filename)
    if "app" not in kube and out is not None and target == "kubernetes":
        out.warning(
            "render.default-name",
            "/deploy/kubernetes" if "kubernetes" in raw else "/deploy" if "deploy" in data else "",
            f"deploy.kubernetes.app is not set; the Deployment to patch is assumed to be '{app}' "
            "(the spec file's name)",
        )
    return Deploy(
        image=image or raw.get("image", f"sidegate:{version}"),
        cpu=resources.get("cpu"),
        memory=resources.get("memory"),
        app=app,
        namespace=kube.get("namespace"),
        secret=kube.get("secret", f"{app}-sidegate"),
        service_account=kube.get("service_account"),
        native_sidecar=kube.get("native_sidecar", True),
        pre_stop_delay=parse_duration(kube.get("pre_stop_delay", "5s")),
        executable=raw.get("systemd", {}).get("executable", "/usr/local/bin/sidegate"),
    )


def _secrets(value: object) -> list[Secret]:
    """Every :class:`Secret` inside a plan value (walked generically, so new plan sections count too)."""
    if isinstance(value, Secret):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [s for f in dataclasses.fields(value) for s in _secrets(getattr(value, f.name))]
    if isinstance(value, tuple):
        return [s for item in value for s in _secrets(item)]
    if isinstance(value, Mapping):
        return [s for item in value.values() for s in _secrets(item)]
    return []


def secret_references(plan: Plan) -> tuple[tuple[str, ...], tuple[SecretFile, ...]]:
    """(environment variable names, files) that the plan's secrets read, sorted, each once.

    A file's Secret key is its base name (characters Kubernetes does not allow become ``-``); two
    files with the same base name get ``-2``, ``-3``... so each keeps its own key.
    """
    envs: set[str] = set()
    paths: set[str] = set()
    for secret in _secrets(plan):
        for part in secret.parts:
            if part.source is SecretSource.ENV:
                envs.add(part.value)
            elif part.source is SecretSource.FILE:
                paths.add(part.value)
    files: list[SecretFile] = []
    taken: set[str] = set()
    for path in sorted(paths):
        base = _KEY_CHARS.sub("-", posixpath.basename(path.rstrip("/"))).strip("-") or "secret"
        key, n = base, 1
        while key in taken:
            n += 1
            key = f"{base}-{n}"
        taken.add(key)
        files.append(SecretFile(path=path, key=key))
    return tuple(sorted(envs)), tuple(files)


def store_dir(plan: Plan, out: Collector) -> str | None:
    """The directory the sqlite store writes (the database, its WAL and shared-memory files).

    None for an in-memory database or a PostgreSQL server. A path built from secret references
    cannot be known before the start: it is reported, and the working directory is assumed.
    """
    parts = plan.store.database.parts
    if parts and parts[0].source is SecretSource.TEXT and parts[0].value.startswith("postgres"):
        return None  # a PostgreSQL server: nothing on the pod's disk
    if any(p.source is not SecretSource.TEXT for p in parts):
        out.warning(
            "render.store-path-unknown",
            "/store/database",
            f"the database path is read from the environment or a file, so render cannot tell which "
            f"directory to make writable; it assumes {WORKDIR}",
        )
        return WORKDIR
    url = "".join(p.value for p in parts)
    rest = url[len("sqlite://") :] if url.startswith("sqlite://") else url
    if rest == ":memory:":
        return None
    path = posixpath.normpath(posixpath.join(WORKDIR, rest[1:] if rest.startswith("/./") else rest))
    return posixpath.dirname(path) or "/"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable only from inside the pod (or machine)."""
    return host == "localhost" or host == "::1" or host.startswith("127.")


def health_url(plan: Plan, path: str) -> str:
    """The URL of a health endpoint as seen from inside the sidecar's own network namespace."""
    host = plan.server.host
    if host == "0.0.0.0" or not host:
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{plan.server.port}{path}"


def cpu_cores(cpu: str) -> float:
    """A Kubernetes CPU quantity (``500m``, ``1``, ``0.5``) in cores."""
    match = _CPU.fullmatch(cpu)
    if match is None:
        raise ValueError(f"{cpu!r} is not a CPU quantity")
    return int(match.group(1)) / 1000 if match.group(1) else float(match.group(2))


def memory_bytes(memory: str) -> int:
    """A Kubernetes memory quantity (``256Mi``, ``1G``, ``1000000``) in bytes."""
    match = _MEMORY.fullmatch(memory)
    if match is None:
        raise ValueError(f"{memory!r} is not a memory quantity")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""]


def grace_seconds(plan: Plan, deploy: Deploy, *, pre_stop: bool) -> int:
    """Seconds to allow for a stop: the preStop delay (Kubernetes, when ``pre_stop``), then the
    drain, plus a margin of 5 s."""
    delay = deploy.pre_stop_delay if pre_stop and not deploy.native_sidecar else 0.0
    return math.ceil(delay + plan.server.drain_timeout) + 5
