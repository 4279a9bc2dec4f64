"""`sidegate render kubernetes|compose|systemd`: deployment files from a spec, via Jinja2 templates.

The templates ship inside the package (``compiler/deploy/templates``). Jinja runs with ``StrictUndefined``
(a misspelt variable is an error, not an empty string) and without autoescaping (the output is YAML
or a unit file, not HTML); instead every value goes through a filter that quotes it for its format:
``q`` writes a YAML double-quoted scalar (JSON's string syntax, with the few characters YAML reads
differently escaped) or a flow collection, ``block`` a literal block scalar, ``unit`` a systemd
word, ``comment`` a one-line comment. The plan goes into the ConfigMap as its canonical JSON file.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2

from sidegate.compiler.deploy.section import (
    CONTAINER_GID,
    CONTAINER_UID,
    PLAN_DIR,
    PLAN_PATH,
    WORKDIR,
    Deploy,
    cpu_cores,
    deploy_settings,
    grace_seconds,
    health_url,
    is_loopback,
    memory_bytes,
    secret_references,
    store_dir,
)
from sidegate.compiler.diagnostics import Collector, Diagnostic, sort_key
from sidegate.compiler.parse import parse
from sidegate.compiler.pipeline import compile_text
from sidegate.runtime.plan import Plan
from sidegate.runtime.plan.canonical import digest, dumps

__all__ = ["CONFIGMAP_LIMIT", "TARGETS", "Rendered", "render_text", "yaml_block", "yaml_quote"]

TARGETS = ("kubernetes", "compose", "systemd")
"""What `sidegate render` can produce."""
CONFIGMAP_LIMIT = 1024 * 1024
"""Kubernetes refuses a ConfigMap larger than 1 MiB."""

_FILES: Mapping[str, tuple[tuple[str, str], ...]] = {
    "kubernetes": (("configmap.yaml", "configmap.yaml.j2"), ("deployment-patch.yaml", "deployment-patch.yaml.j2")),
    "compose": (("compose.yaml", "compose.yaml.j2"),),
    "systemd": (("sidegate.service", "sidegate.service.j2"),),
}
# Characters that a YAML parser reads differently from JSON inside a double-quoted scalar (C1
# controls and NEL, line/paragraph separators, BOM, surrogates, non-characters) or refuses outright.
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]")
_BLOCK_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\ufeff\ud800-\udfff\ufffe\uffff]")
_UNIT_SPECIAL = re.compile(r'[\s"\'\\]')


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def yaml_quote(value: object) -> str:
    """``value`` as a YAML scalar or flow collection that every YAML 1.1/1.2 parser reads back as is."""
    if value is None or isinstance(value, (bool, int, float)):
        return json.dumps(value)
    if isinstance(value, str):
        return _YAML_UNSAFE.sub(_escape, json.dumps(value, ensure_ascii=False))
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{yaml_quote(str(k))}: {yaml_quote(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(yaml_quote(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} into YAML")


def yaml_block(text: str, indent: int) -> str:
    """``text`` as a literal block scalar indented by ``indent`` (a quoted scalar when a block cannot
    carry it exactly: control characters, a leading space, no text)."""
    if not text or text[0] in " \n" or text.endswith("\n\n") or _BLOCK_UNSAFE.search(text):
        return yaml_quote(text)
    chomp, body = ("", text[:-1]) if text.endswith("\n") else ("-", text)
    pad = " " * indent
    return f"|{chomp}\n" + "\n".join(pad + line if line else "" for line in body.split("\n"))


def _unit_word(value: object) -> str:
    """A systemd unit-file word: ``%`` specifiers and ``$`` expansion disarmed, quoted when needed."""
    text = str(value).replace("%", "%%").replace("$", "$$")
    if _UNIT_SPECIAL.search(text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def _comment(value: object) -> str:
    """Text safe inside a one-line comment (no line breaks)."""
    return " ".join(str(value).split())


@functools.cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("sidegate.compiler.deploy", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(q=yaml_quote, block=yaml_block, unit=_unit_word, comment=_comment)
    return env


def _probe_code(plan: Plan) -> Any:
    def code(path: str) -> str:
        url = health_url(plan, path)
        return f"import urllib.request; urllib.request.urlopen({url!r}, timeout=2)"

    return code


def _under(path: str, directory: str) -> bool:
    return (path + "/").startswith(directory + "/")


def _seconds(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _secret_command(deploy: Deploy, envs: Sequence[str], keys: Sequence[str]) -> str:
    literal = "".join(f" --from-literal={e}=..." for e in envs)
    files = "".join(f" --from-file={k}=..." for k in keys)
    namespace = f" -n {deploy.namespace}" if deploy.namespace else ""
    return f"kubectl create secret generic {deploy.secret}{namespace}{literal}{files}"


def _context(plan: Plan, deploy: Deploy, source: str, target: str, out: Collector) -> dict[str, Any]:
    envs, files = secret_references(plan)
    data_dir = store_dir(plan, out)
    sub = data_dir is not None and data_dir != WORKDIR and _under(data_dir, WORKDIR)
    if target == "compose" and data_dir is not None and data_dir != WORKDIR:
        out.warning(
            "render.store-dir",
            "/store/database",
            f"compose mounts a new volume at {data_dir}, which Docker creates owned by root: the image's user "
            f"writes only {WORKDIR} (put the database there, e.g. sqlite:///{WORKDIR.lstrip('/')}/sidegate.db)",
        )
    host, port = plan.server.host, plan.server.port
    # Probes reach the pod IP: a loopback API gets a health listener of its own (httpGet, not a
    # Python process every few seconds), the spec's health_listen when it has one.
    health_port, health_env = plan.server.health_port, None
    if health_port is None and is_loopback(host):
        health_port = 4001 if port != 4001 else 4002
        health_env = f"0.0.0.0:{health_port}"
    return {
        "d": deploy,
        "source": source,
        "digest": digest(plan),
        "plan_json": dumps(plan),
        "plan_path": PLAN_PATH,
        "plan_dir": PLAN_DIR,
        "workdir": WORKDIR,
        "uid": CONTAINER_UID,
        "gid": CONTAINER_GID,
        "user": f"{CONTAINER_UID}:{CONTAINER_GID}",
        "envs": envs,
        "files": files,
        "secret_command": _secret_command(deploy, envs, [f.key for f in files]),
        "data_dir": data_dir,
        "extra_rw_dir": None if data_dir is None or _under(data_dir, WORKDIR) else data_dir,
        "state_dirs": f"sidegate sidegate/{data_dir[len(WORKDIR) + 1 :]}" if data_dir and sub else "sidegate",
        "port": port,
        "listen": f"[{host}]:{port}" if ":" in host else f"{host}:{port}",
        "exposed": not is_loopback(host),
        "health_port": health_port,
        "health_env": health_env,
        "probe_port_name": "health" if health_port is not None else "sidegate",
        "probe_code": _probe_code(plan),
        "pre_stop": None if deploy.native_sidecar or deploy.pre_stop_delay <= 0 else _seconds(deploy.pre_stop_delay),
        "grace": grace_seconds(plan, deploy, pre_stop=target == "kubernetes"),
        "cpus": None if deploy.cpu is None else f"{cpu_cores(deploy.cpu):g}",
        "cpu_percent": None if deploy.cpu is None else f"{cpu_cores(deploy.cpu) * 100:g}",
        "memory_bytes": None if deploy.memory is None else memory_bytes(deploy.memory),
    }


@dataclass(frozen=True, slots=True)
class Rendered:
    """What a render produced: files by name (in output order; empty on errors) and diagnostics."""

    files: Mapping[str, str]
    diagnostics: tuple[Diagnostic, ...]
    plan: Plan | None = None

    @property
    def ok(self) -> bool:
        """Whether there was no error."""
        return not any(d.is_error for d in self.diagnostics)


def render_text(target: str, text: str, filename: str, *, version: str, image: str | None = None) -> Rendered:
    """Compile the spec ``text`` and render the ``target``'s files; ``version`` names the default image,
    ``image`` (`--image`) overrides the spec's."""
    if target not in _FILES:
        raise ValueError(f"unknown render target {target!r}; choose one of {', '.join(TARGETS)}")
    result = compile_text(text, filename)
    if result.plan is None:
        return Rendered({}, result.diagnostics)
    parsed = parse(text, filename)
    out = Collector(filename, parsed.source_map.locate)
    # the Deployment's name matters only to Kubernetes: only there is its default worth a warning
    deploy = deploy_settings(parsed.data, filename, version, out, image, target=target)
    if result.plan.server.listen is not None and target != "systemd":
        out.error("render.listen-reference", "/server/listen",
                  "the rendered files set the listen address (SIDEGATE_LISTEN over the image's 0.0.0.0:4000): give "
                  "server.listen a literal host:port to render it")
    source = filename.replace("\\", "/").rsplit("/", 1)[-1]
    context = _context(result.plan, deploy, source, target, out)
    if target == "kubernetes" and len(context["plan_json"].encode()) > CONFIGMAP_LIMIT:
        out.error(
            "render.plan-too-large",
            "",
            f"the compiled plan is {len(context['plan_json'].encode()):,} bytes; a ConfigMap holds at most 1 MiB",
        )
    files = {name: _environment().get_template(template).render(context) for name, template in _FILES[target]}
    diagnostics = tuple(sorted((*result.diagnostics, *out.diagnostics), key=sort_key))
    if any(d.is_error for d in diagnostics):
        return Rendered({}, diagnostics, result.plan)
    return Rendered(files, diagnostics, result.plan)
