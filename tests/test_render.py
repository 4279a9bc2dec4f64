"""`sidegate render kubernetes|compose|systemd`: golden files, Kubernetes schema validation (offline,
with the schemas the `kubernetes-validate` package ships), the compiled plan in the ConfigMap, and
no secret value anywhere.

`SIDEGATE_GOLDEN_UPDATE=1` rewrites `tests/golden/render/<spec>/<file>`; review the diff.
"""

from __future__ import annotations

import configparser
import copy
import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from sidegate.compiler.cli import main
from sidegate.compiler.deploy.render import TARGETS, Rendered, render_text
from sidegate.compiler.deploy.section import CONTAINER_UID
from sidegate.compiler.report import CODES
from sidegate.runtime.plan.canonical import digest, dumps, loads

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).parent / "golden" / "render"
SPECS = sorted(GOLDEN.glob("*.yaml"))
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
UPDATE = os.environ.get("SIDEGATE_GOLDEN_UPDATE") == "1"
K8S_VERSIONS = ("1.29", "1.30", "1.33")
Capture = pytest.CaptureFixture[str]


def _render(target: str, path: Path) -> Rendered:
    rendered = render_text(target, path.read_text(encoding="utf-8"), path.name, version="0.1.0")
    assert rendered.ok, rendered.diagnostics
    assert all(d.code in CODES for d in rendered.diagnostics)
    return rendered


def _yaml(text: str) -> Any:
    return YAML(typ="safe", pure=True).load(text)


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge as the API server does it for these fields: lists of named items merge by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        return {**base, **{k: _merge(base[k], v) if k in base else v for k, v in patch.items()}}
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(x, dict) and "name" in x for x in base + patch)
    ):
        merged = {x["name"]: x for x in base}
        for x in patch:
            merged[x["name"]] = _merge(merged[x["name"]], x) if x["name"] in merged else x
        return list(merged.values())
    return patch


def _application(name: str) -> dict[str, Any]:
    """The application's own Deployment that the patch is applied to."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [{"name": "app", "image": "example/app:1", "env": [{"name": "X", "value": "1"}]}]
                },
            },
        },
    }


def _patched(rendered: Rendered) -> dict[str, Any]:
    patch = _yaml(rendered.files["deployment-patch.yaml"])
    result: dict[str, Any] = _merge(_application(patch["metadata"]["name"]), patch)
    return result


def _stable(text: str) -> str:
    """The file without what changes with every change of the plan's format (its digest and, in the
    ConfigMap, its JSON: `test_the_configmap_holds_the_compiled_plan` checks those)."""
    text = re.sub(r"sha256:[0-9a-f]{64}", "sha256:<digest>", text)
    head, marker, _ = text.partition("  plan.json: |\n")
    return head + marker + "    <the compiled plan>\n" if marker else text


@pytest.mark.parametrize("spec", SPECS, ids=[p.stem for p in SPECS])
@pytest.mark.parametrize("target", TARGETS)
def test_golden_files(spec: Path, target: str) -> None:
    for name, full in _render(target, spec).files.items():
        text = _stable(full)
        expected = GOLDEN / spec.stem / name
        if UPDATE:
            expected.parent.mkdir(exist_ok=True)
            expected.write_text(text, encoding="utf-8")
            continue
        assert expected.exists(), f"{expected} is missing; run with SIDEGATE_GOLDEN_UPDATE=1 and review it"
        assert text == expected.read_text(encoding="utf-8")


@pytest.mark.parametrize("spec", SPECS + EXAMPLES, ids=[p.stem for p in SPECS + EXAMPLES])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_against_the_kubernetes_schemas(spec: Path, version: str) -> None:
    rendered = _render("kubernetes", spec)
    configmap = _yaml(rendered.files["configmap.yaml"])
    kubernetes_validate.validate(configmap, version, strict=True)
    kubernetes_validate.validate(_patched(rendered), version, strict=True)


def test_the_validator_is_not_a_rubber_stamp() -> None:
    deployment = _patched(_render("kubernetes", GOLDEN / "checkout.yaml"))
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][1]["livenessProbe"]["periodSecond"] = 3
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)
    broken = copy.deepcopy(deployment)
    broken["spec"]["template"]["spec"]["containers"][1]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("spec", SPECS + EXAMPLES, ids=[p.stem for p in SPECS + EXAMPLES])
def test_the_configmap_holds_the_compiled_plan_and_the_pods_carry_its_digest(spec: Path) -> None:
    rendered = _render("kubernetes", spec)
    assert rendered.plan is not None
    configmap = _yaml(rendered.files["configmap.yaml"])
    assert configmap["data"]["plan.json"] == dumps(rendered.plan)
    assert loads(configmap["data"]["plan.json"]) == rendered.plan
    pod = _yaml(rendered.files["deployment-patch.yaml"])["spec"]["template"]
    assert pod["metadata"]["annotations"]["sidegate.dev/plan-digest"] == digest(rendered.plan)
    assert configmap["metadata"]["annotations"]["sidegate.dev/plan-digest"] == digest(rendered.plan)


def test_the_sidecar_container() -> None:
    rendered = _render("kubernetes", GOLDEN / "checkout.yaml")
    assert rendered.plan is not None
    pod = _patched(rendered)["spec"]["template"]["spec"]
    app, sidecar = pod["containers"]
    assert app["name"] == "app" and sidecar["name"] == "sidegate"
    assert sidecar["args"] == ["serve", "--plan", "/etc/sidegate/plan.json"]
    assert sidecar["ports"][0]["containerPort"] == 8080
    assert sidecar["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert sidecar["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    security = sidecar["securityContext"]
    assert security["runAsNonRoot"] and security["readOnlyRootFilesystem"] and security["runAsUser"] == CONTAINER_UID
    assert sidecar["resources"] == {"requests": {"cpu": "500m", "memory": "256Mi"}, "limits": {"memory": "256Mi"}}
    assert sidecar["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "10"]
    assert pod["terminationGracePeriodSeconds"] > 10 + rendered.plan.server.drain_timeout
    mounts = {m["mountPath"]: m for m in sidecar["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/var/lib/sidegate/data"]["name"]]  # the sqlite directory is writable
    assert volumes[mounts["/etc/sidegate"]["name"]]["configMap"]["name"] == "checkout-sidegate"
    assert pod["serviceAccountName"] == "checkout"


def test_a_loopback_listener_is_probed_on_a_health_listener_and_a_native_sidecar_starts_first() -> None:
    """The API stays on loopback; the kubelet's httpGet probes reach a health-only listener on the
    pod IP (SIDEGATE_HEALTH_LISTEN), not a Python process started every few seconds."""
    rendered = _render("kubernetes", GOLDEN / "sidecar-native.yaml")
    pod = _patched(rendered)["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert env["SIDEGATE_LISTEN"] == "127.0.0.1:4000" and env["SIDEGATE_HEALTH_LISTEN"] == "0.0.0.0:4001"
    assert {p["name"]: p["containerPort"] for p in sidecar["ports"]} == {"sidegate": 4000, "health": 4001}
    for probe, path in (("readinessProbe", "/health/ready"), ("livenessProbe", "/health/live"),
                        ("startupProbe", "/health/ready")):
        assert sidecar[probe]["httpGet"] == {"path": path, "port": "health"}
    assert "startupProbe" in sidecar and "lifecycle" not in sidecar
    assert {m["mountPath"] for m in sidecar["volumeMounts"]} >= {"/var/lib/sidegate", "/etc/sidegate", "/tmp"}


def test_every_secret_reference_is_backed_by_the_secret_and_no_value_is_rendered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    sentinels = {name: f"SENTINEL-{name}-value" for name in ("OPENAI_API_KEY", "OPENAI_ORG_ID", "ANTHROPIC_API_KEY")}
    for name, value in sentinels.items():
        monkeypatch.setenv(name, value)
    for spec in (GOLDEN / "checkout.yaml", ROOT / "examples" / "fallback-openai-anthropic.yaml"):
        for target in TARGETS:
            out = tmp_path / target / spec.stem
            assert main(["render", target, str(spec), "-o", str(out)]) == 0
            assert main(["render", target, str(spec)]) == 0
            written = capsys.readouterr().out + "".join(p.read_text() for p in out.iterdir())
            for value in sentinels.values():
                assert value not in written
    rendered = _render("kubernetes", GOLDEN / "checkout.yaml")
    sidecar = _patched(rendered)["spec"]["template"]["spec"]["containers"][1]
    assert sidecar["env"][0] == {"name": "SIDEGATE_LISTEN", "value": "0.0.0.0:8080"}, "the spec's address, set explicitly"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in sidecar["env"][1:]}
    assert refs == {n: {"name": "checkout-sidegate", "key": n} for n in ("OPENAI_API_KEY", "OPENAI_ORG_ID")}
    files = {m["mountPath"]: m["subPath"] for m in sidecar["volumeMounts"] if m["name"] == "sidegate-secret-files"}
    assert files == {"/run/secrets/azure/key": "key", "/var/run/secrets/groq/key": "key-2"}


def test_compose_service() -> None:
    compose = _yaml(_render("compose", GOLDEN / "checkout.yaml").files["compose.yaml"])
    service = compose["services"]["sidegate"]
    assert service["image"] == "ghcr.io/example/sidegate:0.1.0"
    # the spec's address over the image's 0.0.0.0, then secrets by name only: their values pass through
    assert service["environment"] == ["SIDEGATE_LISTEN=0.0.0.0:8080", "OPENAI_API_KEY", "OPENAI_ORG_ID"]
    assert service["ports"] == ["127.0.0.1:8080:8080"]
    assert service["read_only"] is True and service["user"] == f"{CONTAINER_UID}:{CONTAINER_UID}"
    assert service["stop_grace_period"] == "35s"
    assert service["cpus"] == 0.5 and service["mem_limit"] == 256 * 1024 * 1024
    assert {s["target"] for s in service["secrets"]} == {"/run/secrets/azure/key", "/var/run/secrets/groq/key"}
    assert compose["secrets"]["key"] == {"file": "./secrets/key"}
    assert set(compose) == {"services", "volumes", "secrets"}  # no Redis or PostgreSQL: the spec uses none
    loopback = _yaml(_render("compose", GOLDEN / "sidecar-native.yaml").files["compose.yaml"])["services"]["sidegate"]
    assert "ports" not in loopback  # reachable with network_mode: "service:sidegate"
    assert "network_mode" in _render("compose", GOLDEN / "sidecar-native.yaml").files["compose.yaml"]


def test_systemd_unit() -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(_render("systemd", GOLDEN / "checkout.yaml").files["sidegate.service"])
    service = unit["Service"]
    assert service["ExecStart"] == "/opt/sidegate/bin/sidegate serve --plan /etc/sidegate/plan.json"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["StateDirectory"] == "sidegate sidegate/data"
    assert service["TimeoutStopSec"] == "35" and service["DynamicUser"] == "yes"
    assert service["CPUQuota"] == "50%" and service["MemoryMax"] == str(256 * 1024 * 1024)
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_render_cli(tmp_path: Path, capsys: Capture) -> None:
    spec = GOLDEN / "checkout.yaml"
    assert main(["render", "kubernetes", str(spec)]) == 0
    documents = list(YAML(typ="safe", pure=True).load_all(capsys.readouterr().out))
    assert [d["kind"] for d in documents] == ["ConfigMap", "Deployment"]
    assert main(["render", "compose", str(spec), "-o", str(tmp_path / "c")]) == 0
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == ["compose.yaml", "plan.json"]
    assert loads((tmp_path / "c" / "plan.json").read_text()).server.port == 8080
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nmodels: {}\ndeploy: {image: 'Not An Image'}\n")
    assert main(["render", "systemd", str(bad)]) == 1
    assert "error[schema.pattern] /deploy/image" in capsys.readouterr().err
    assert main(["render", "helm", str(spec)]) == 64


def test_native_sidecar_is_the_default_and_a_missing_image_is_reported(tmp_path: Path) -> None:
    spec = tmp_path / "app.yaml"
    spec.write_text("version: 1\nproviders: {fake: {type: mock}}\nmodels: {demo: {targets: [{provider: fake, model: demo}]}}\n"
                    "deploy: {kubernetes: {app: app}}\n")
    rendered = render_text("kubernetes", spec.read_text(), spec.name, version="0.1.0")
    assert rendered.ok and [d.code for d in rendered.diagnostics] == ["render.default-image"]
    pod = _yaml(rendered.files["deployment-patch.yaml"])["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always" and sidecar["image"] == "sidegate:0.1.0"
    assert sidecar["env"] == [{"name": "SIDEGATE_LISTEN", "value": "127.0.0.1:4000"},
                              {"name": "SIDEGATE_HEALTH_LISTEN", "value": "0.0.0.0:4001"}], "the API on loopback"
    chosen = render_text("kubernetes", spec.read_text(), spec.name, version="0.1.0", image="registry.example/sg:1")
    assert chosen.ok and chosen.diagnostics == ()
    assert "registry.example/sg:1" in chosen.files["deployment-patch.yaml"]


def test_a_referenced_listen_cannot_be_rendered(tmp_path: Path) -> None:
    text = ('version: 1\nserver: {listen: "127.0.0.1:${PORT}"}\nproviders: {fake: {type: mock}}\n'
            "models: {demo: {targets: [{provider: fake, model: demo}]}}\ndeploy: {image: x, kubernetes: {app: a}}\n")
    for target in ("kubernetes", "compose"):
        rendered = render_text(target, text, "a.yaml", version="0.1.0")
        assert not rendered.ok and "render.listen-reference" in [d.code for d in rendered.diagnostics]
    assert render_text("systemd", text, "a.yaml", version="0.1.0").ok
