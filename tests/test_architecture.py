"""The rooms hold: every import between sidegate's subpackages is one ARCHITECTURE.md allows, every
subpackage says what it holds, and modules stay short. The rules are read from ARCHITECTURE.md."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("runtime", "compiler", "sidegate")
INTERNAL = ("runtime", "compiler")
"""Imported as `sidegate.runtime` and `sidegate.compiler` (the folders are linked into `sidegate/`);
the rules and this test name them by their folders."""
MAX_LINES = 450


def read_rules(text: str) -> dict[str, tuple[str, ...]]:
    """room -> what it may import, from the table between the import-rules markers."""
    block = text.split("<!-- import-rules -->", 1)[1].split("<!-- /import-rules -->", 1)[0]
    rules: dict[str, tuple[str, ...]] = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 2 or not cells[0].startswith("`"):
            continue
        rules[cells[0].strip("`")] = tuple(re.findall(r"`([\w.]+)`", cells[1]))
    return rules


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(root: Path, path: Path) -> set[str]:
    """Every module of ours that `path` imports, at any depth (lazy and TYPE_CHECKING imports too)."""
    name = module_name(root, path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    found = {_folder_name(m) for m in found}
    modules = {module_name(root, p) for top in OURS for p in (root / top).rglob("*.py")}
    return {m for m in found if m in modules}


def _folder_name(module: str) -> str:
    """`sidegate.runtime.x` -> `runtime.x`; anything else unchanged."""
    for top in INTERNAL:
        if module == f"sidegate.{top}" or module.startswith(f"sidegate.{top}."):
            return module[len("sidegate."):]
    return module


def bare_imports(root: Path) -> list[str]:
    """Absolute imports of `runtime` or `compiler` as top-level packages: in an installed wheel they
    do not exist (or are another distribution's)."""
    out: list[str] = []
    for top in (*OURS, "tests"):
        for path in sorted((root / top).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                out.extend(f"{path.relative_to(root)}: {n}" for n in names if n.split(".")[0] in INTERNAL)
    return out


def room_of(module: str, rules: dict[str, tuple[str, ...]]) -> str | None:
    best = None
    for room in rules:
        if (module == room or module.startswith(room + ".")) and (best is None or len(room) > len(best)):
            best = room
    return best


def allowed(target: str, room: str, rules: dict[str, tuple[str, ...]]) -> bool:
    target_room = room_of(target, rules)
    if target_room == room:
        return True
    for entry in rules[room]:
        if entry in rules:
            if target_room == entry:
                return True
        elif target == entry or target.startswith(entry + "."):
            return True
    return False


def violations(root: Path, rules: dict[str, tuple[str, ...]]) -> list[str]:
    """`module -> import` for each import the rules forbid, and each module in no room."""
    out: list[str] = []
    for top in OURS:
        for path in sorted((root / top).rglob("*.py")):
            name = module_name(root, path)
            room = room_of(name, rules)
            if room is None:
                out.append(f"{name}: in no room of ARCHITECTURE.md")
                continue
            out.extend(f"{name} -> {t}" for t in sorted(imports_of(root, path)) if not allowed(t, room, rules))
    return out


RULES = read_rules((ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8"))


def test_every_import_is_one_the_architecture_allows() -> None:
    assert len(RULES) > 10
    assert violations(ROOT, RULES) == []


def test_the_internal_packages_are_imported_only_inside_sidegate() -> None:
    assert bare_imports(ROOT) == []
    assert (ROOT / "sidegate" / "runtime").resolve() == ROOT / "runtime"
    assert (ROOT / "sidegate" / "compiler").resolve() == ROOT / "compiler"


def test_a_bare_import_of_an_internal_package_is_caught(tmp_path: Path) -> None:
    (tmp_path / "runtime").mkdir()
    (tmp_path / "runtime" / "x.py").write_text("from runtime.plan import Plan\nimport compiler.cli\n")
    assert bare_imports(tmp_path) == ["runtime/x.py: runtime.plan", "runtime/x.py: compiler.cli"]


def test_the_plan_imports_nothing_else_of_the_runtime_and_routing_never_imports_http() -> None:
    """The arrows the design names, spelled out so that loosening the table cannot drop them."""
    assert RULES["runtime.plan"] == ()
    assert not any(e.startswith("runtime.http") for e in RULES["runtime.routing"])
    assert not any(e.startswith("runtime.governance") for e in RULES["runtime.upstream"])
    assert all(not e.startswith("compiler") for room, entries in RULES.items() if room.startswith("runtime")
               for e in entries)


def test_cli_command_modules_import_only_the_shared_core() -> None:
    cli = ROOT / "compiler" / "cli"
    for command in ("spec", "deploy", "keys"):
        mine = {m for m in imports_of(ROOT, cli / f"{command}.py") if m.startswith("compiler.cli")}
        assert mine <= {"compiler.cli", "compiler.cli.common", "compiler.cli.explain", "compiler.cli.diff"}, command


def test_every_subpackage_says_what_lives_there_and_what_it_may_import() -> None:
    for top in OURS:
        for init in (ROOT / top).rglob("__init__.py"):
            if init.parent == ROOT / top:
                continue
            doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
            assert "May import" in doc, init.relative_to(ROOT)


def test_modules_stay_short() -> None:
    long = {str(p.relative_to(ROOT)): n for top in OURS for p in (ROOT / top).rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    (tmp_path / "compiler").mkdir(exist_ok=True)
    return tmp_path


@pytest.mark.parametrize("source", [
    "from runtime.http.app import App\n",
    "import runtime.http.app\n",
    "def f():\n    from runtime.http import app\n",
    "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from runtime.http.app import App\n",
    "from ..http.app import App\n",
])
def test_the_check_fails_when_routing_imports_http(tmp_path: Path, source: str) -> None:
    """The test of the test: a forbidden arrow in any spelling is reported; the same tree without it is clean."""
    base = {"runtime/__init__.py": "", "runtime/http/__init__.py": "", "runtime/http/app.py": "App = 1\n",
            "runtime/routing/__init__.py": "", "runtime/plan/__init__.py": ""}
    rules = {"runtime": (), "runtime.plan": (), "runtime.routing": ("runtime.plan",),
             "runtime.http": ("runtime.routing", "runtime.plan")}
    clean = _tree(tmp_path / "clean", {**base, "runtime/routing/proxy.py": "from runtime.plan import x\n"})
    assert violations(clean, rules) == []
    bad = _tree(tmp_path / "bad", {**base, "runtime/routing/proxy.py": source})
    assert violations(bad, rules) == ["runtime.routing.proxy -> runtime.http.app"] or \
        violations(bad, rules) == ["runtime.routing.proxy -> runtime.http", "runtime.routing.proxy -> runtime.http.app"]


def test_the_check_fails_for_a_subpackage_in_no_room(tmp_path: Path) -> None:
    tree = _tree(tmp_path, {"runtime/__init__.py": "", "runtime/cache/__init__.py": "", "runtime/cache/lru.py": ""})
    rules = {"runtime.plan": ()}
    assert "runtime.cache.lru: in no room of ARCHITECTURE.md" in violations(tree, rules)


def test_the_rules_table_is_read_as_written() -> None:
    text = "x\n<!-- import-rules -->\n| room | may import |\n|---|---|\n| `a` | |\n| `a.b` | `a`, `c.d` |\n<!-- /import-rules -->\n"
    assert read_rules(text) == {"a": (), "a.b": ("a", "c.d")}
