"""The seam holds: the runtime never imports the compiler (or its parsers), and the CLI loads them lazily."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = ("sidegate.compiler", "ruamel", "jsonschema")
HEAVY = ["ruamel", "ruamel.yaml", "jsonschema", "sidegate.compiler.pipeline", "sidegate.compiler.parse", "sidegate.compiler.validate"]


def _imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_runtime_imports_nothing_from_the_compiler_side() -> None:
    files = sorted((ROOT / "runtime").rglob("*.py"))
    assert files
    offenders = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in _imported_modules(path)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN)
    }
    assert offenders == set()


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


def test_importing_the_cli_loads_no_parser_or_validator() -> None:
    assert _loaded_after("import sidegate.compiler.cli") == []


def test_serve_plan_loads_no_parser_or_validator(tmp_path: Path) -> None:
    spec = ROOT / "examples" / "quickstart.yaml"
    plan = tmp_path / "plan.json"
    subprocess.run([sys.executable, "-m", "sidegate.compiler.cli", "compile", str(spec), "-o", str(plan)], cwd=ROOT, check=True)
    # a stand-in runtime.server records the call; the real one would start serving
    code = (
        "import sys, types\n"
        "fake = types.ModuleType('sidegate.runtime.server')\n"
        "fake.run = lambda plan, **kw: 0 if plan.models[0].name == 'demo' else 1\n"
        "sys.modules['sidegate.runtime.server'] = fake\n"
        "from sidegate.compiler.cli import main\n"
        f"assert main(['serve', '--plan', {str(plan)!r}]) == 0\n"
    )
    assert _loaded_after(code) == []


def test_serve_spec_compiles_in_a_child_process(tmp_path: Path) -> None:
    """`serve SPEC` compiles in a child (a fork at start, a new process on a reload, when the
    runtime's threads run), so the serving process never holds the compiler; both give the plan."""
    spec = ROOT / "examples" / "quickstart.yaml"
    code = (
        "import sys, threading, types\n"
        "def run(plan, load_plan, **kw):\n"
        "    again = []\n"
        "    t = threading.Thread(target=lambda: again.append(load_plan()))\n"
        "    t.start(); t.join()\n"
        "    return 0 if plan.models[0].name == 'demo' and again == [plan] == [load_plan()] else 1\n"
        "fake = types.ModuleType('sidegate.runtime.server')\n"
        "fake.run = run\n"
        "sys.modules['sidegate.runtime.server'] = fake\n"
        "from sidegate.compiler.cli import main\n"
        f"assert main(['serve', {str(spec)!r}]) == 0\n"
    )
    assert _loaded_after(code) == []
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nmodels: {m: {targets: [{provider: nope, model: x}]}}\nbogus: 1\n")
    out = subprocess.run([sys.executable, "-m", "sidegate.compiler.cli", "serve", str(broken)], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.startswith("sidegate serve: ") and "error[schema.unknown-field]" in out.stderr


def test_the_runtime_loads_provider_and_store_clients_only_when_a_plan_needs_them() -> None:
    """botocore (Bedrock), redis (store.redis), pyjwt (auth.jwt), tiktoken's encoding (and the regex module) stay out of a
    sidecar that does not use them: they are most of its memory otherwise."""
    probe = ("import json, sys\nimport sidegate.runtime.server, sidegate.runtime.http.app\nfrom sidegate.runtime.upstream import tokens\n"
             "print(json.dumps([[m for m in ('botocore', 'redis', 'jwt', 'regex') if m in sys.modules], tokens.is_loaded()]))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [[], False]


def test_a_serving_sidecar_without_redis_jwt_or_tracing_never_imports_them() -> None:
    """Started and answering a request (its background tasks running), not just imported: a task
    that imported redis as it started cost ~115 ms of the event loop and ~6 MB in every sidecar
    (hypercorn's server and its HTTP/2 stack, ~4 MB, load only with SIDEGATE_FRONT=hypercorn)."""
    probe = (
        "import json, sys, httpx, trio\n"
        "from tests.support.gateway import base_url, open_gateway\n"
        "from tests.support.plans import group, mock_provider, plan, target\n"
        "p = plan([mock_provider('fake')], [group('demo', target('fake', 'demo'))])\n"
        "async def main():\n"
        "    async with open_gateway(p) as gw, httpx.AsyncClient() as c:\n"
        "        r = await c.post(base_url(gw) + '/chat/completions',\n"
        "                         json={'model': 'demo', 'messages': [{'role': 'user', 'content': 'hi'}]})\n"
        "        assert r.status_code == 200, r.text\n"
        "        return [m for m in ('botocore', 'redis', 'jwt', 'tiktoken', 'opentelemetry', 'hypercorn.trio',\n"
        "                             'psycopg2')\n"
        "                if m in sys.modules]\n"
        "print(json.dumps(trio.run(main)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
