"""The wheel's one top-level name: sidegate's internal packages are `sidegate.runtime` and
`sidegate.compiler`, so an application's own `runtime` or `compiler` neither shadows them nor is
shadowed (docs/library.md#package-names)."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _python(code: str, *path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in path)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd="/")


def _foreign(tmp_path: Path, name: str) -> Path:
    where = tmp_path / "foreign"
    (where / name).mkdir(parents=True)
    (where / name / "__init__.py").write_text("FOREIGN = True\n")
    return where


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(out)],
                   check=True, capture_output=True, timeout=170)
    (built,) = out.glob("sidegate-*.whl")
    return built


def test_the_wheel_installs_the_single_top_level_name_sidegate(wheel: Path) -> None:
    archive = zipfile.ZipFile(wheel)
    names = archive.namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"sidegate"}
    for inside in ("sidegate/py.typed", "sidegate/compiler/schema/gateway.schema.json",
                   "sidegate/compiler/data/prices.json", "sidegate/runtime/data/o200k_base.tiktoken.gz",
                   "sidegate/compiler/deploy/templates/deployment-patch.yaml.j2", "sidegate/runtime/server.py"):
        assert inside in names, inside
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    assert "sidegate = sidegate.compiler.cli:main" in archive.read(entry_points).decode()


def test_foreign_runtime_and_compiler_packages_first_on_the_path_change_nothing(wheel: Path, tmp_path: Path) -> None:
    """An application with its own `runtime` and `compiler` packages, earlier on sys.path and imported
    first: sidegate's internals are `sidegate.runtime` and `sidegate.compiler`, so the wheel compiles
    a spec (schema and price table from its own package data), serves a call, and runs its CLI."""
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    foreign = _foreign(_foreign(tmp_path, "runtime").parent, "compiler")
    code = ("import runtime, compiler, sidegate\n"
            "spec = 'version: 1\\nproviders:\\n  f: {type: mock}\\nmodels:\\n  m: {targets: [{provider: f, model: x}]}\\n'\n"
            "with sidegate.Gateway.from_spec(spec) as gw:\n"
            "    print(gw.completion('m', [sidegate.user_message('hi')]).choices[0].message.content)\n"
            "import sidegate.runtime.server, sidegate.compiler.cli\n"
            "print(runtime.FOREIGN, compiler.FOREIGN)\n"
            "print(sidegate.runtime.server.__file__)\n"
            )
    done = _python(code, foreign, unpacked)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["hi", "True True", str(unpacked / "sidegate" / "runtime" / "server.py")]
    lint = subprocess.run([sys.executable, "-m", "sidegate.compiler.cli", "lint", str(ROOT / "examples" / "quickstart.yaml")],
                          env={**os.environ, "PYTHONPATH": f"{foreign}{os.pathsep}{unpacked}"}, capture_output=True,
                          text=True, timeout=60, cwd="/")
    assert lint.returncode == 0, lint.stderr


def test_sidegate_imports_in_a_clean_interpreter_without_the_compiler() -> None:
    done = _python("import sys, sidegate; print(sorted(m for m in sys.modules if m.startswith(('compiler', 'sidegate.compiler'))))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # compiled on demand: Gateway.from_plan never loads it


def test_from_plan_serves_a_compiled_plan_without_loading_the_compiler(tmp_path: Path) -> None:
    from sidegate.gateway import compile_spec
    from sidegate.runtime.plan.canonical import dumps

    plan = tmp_path / "plan.json"
    plan.write_text(dumps(compile_spec("version: 1\nproviders:\n  f: {type: mock}\n"
                                       "models:\n  m: {targets: [{provider: f, model: x}]}\n")))
    code = (f"import sys, sidegate\nwith sidegate.Gateway.from_plan({str(plan)!r}) as gw:\n"
            "    print(gw.completion('m', [sidegate.user_message('hi')]).choices[0].message.content)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('compiler', 'sidegate.compiler'))))")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["hi", "[]"]  # the mock echoes; no compiler module loaded
