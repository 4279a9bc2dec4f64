"""The wheel's top-level names, and `import sidegate` refusing (clearly) when another `runtime` or
`compiler` package shadows its internal ones (docs/library.md#package-names)."""

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


def test_the_wheel_holds_sidegate_and_its_two_internal_packages(wheel: Path, tmp_path: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == \
        {"sidegate", "runtime", "compiler"}
    assert "sidegate/py.typed" in names and "compiler/schema/gateway.schema.json" in names
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    done = _python("import sidegate, runtime, compiler; print(runtime.__file__); print(compiler.__file__);"
                   "print(sidegate.Gateway.__module__)", unpacked)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == [str(unpacked / "runtime" / "__init__.py"),
                                            str(unpacked / "compiler" / "__init__.py")]


@pytest.mark.parametrize("name", ["runtime", "compiler"])
def test_a_foreign_package_earlier_on_the_path_is_refused_by_name(tmp_path: Path, name: str) -> None:
    foreign = _foreign(tmp_path, name)
    done = _python("import sidegate", foreign)
    assert done.returncode != 0
    assert f"sidegate's internal package '{name}' is shadowed" in done.stderr
    assert str(foreign / name / "__init__.py") in done.stderr


def test_a_foreign_package_imported_first_is_refused(tmp_path: Path) -> None:
    foreign = _foreign(tmp_path, "runtime")
    code = f"import sys; sys.path.insert(0, {str(foreign)!r}); import runtime; sys.path.pop(0); import sidegate"
    done = _python(code)
    assert done.returncode != 0 and "'runtime' is shadowed" in done.stderr


def test_sidegate_imports_in_a_clean_interpreter_without_the_compiler() -> None:
    done = _python("import sys, sidegate; print(sorted(m for m in sys.modules if m.startswith('compiler.')))")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"  # compiled on demand: Gateway.from_plan never loads it


def test_from_plan_serves_a_compiled_plan_without_loading_the_compiler(tmp_path: Path) -> None:
    from runtime.plan.canonical import dumps
    from sidegate.gateway import compile_spec

    plan = tmp_path / "plan.json"
    plan.write_text(dumps(compile_spec("version: 1\nproviders:\n  f: {type: mock}\n"
                                       "models:\n  m: {targets: [{provider: f, model: x}]}\n")))
    code = (f"import sys, sidegate\nwith sidegate.Gateway.from_plan({str(plan)!r}) as gw:\n"
            "    print(gw.completion('m', [sidegate.user_message('hi')]).choices[0].message.content)\n"
            "print(sorted(m for m in sys.modules if m.startswith('compiler.')))")
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["hi", "[]"]  # the mock echoes; no compiler module loaded
