"""Every README and docs/ promise that can be checked mechanically still holds:

- every relative link resolves to a file of the repository, and every `#anchor` (in the same page
  or another one) to a heading there, by GitHub's anchor rules;
- every `sidegate <command> ...` line of a `sh` block names a real subcommand with options its
  parser knows (parsed by the CLI's own argparse parser, so `--help` and the docs cannot drift);
- every YAML block marked `<!-- spec -->` (a whole spec) lints clean under `--strict`;
- the README's "Try it" Python snippet runs against a served quickstart and prints what it promises.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pytest

from sidegate.compiler.cli import main
from sidegate.compiler.cli.main import _parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _prose(text: str) -> str:
    """The page without its fenced code blocks (links and headings inside them do not count)."""
    return FENCE.sub("", text)


def github_anchor(heading: str) -> str:
    """GitHub's slug for a heading: inline markup dropped, lower case, punctuation removed (but
    `-` and `_`), each space a `-`."""
    parts = re.split(r"(`[^`]*`)", heading)  # HTML tags count outside code spans only
    text = "".join(p[1:-1] if p.startswith("`") else re.sub(r"<[^>]+>", "", p) for p in parts)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text).strip().lower()  # a link keeps its text
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out: set[str] = set()
    for line in _prose(page.read_text()).splitlines():
        m = re.match(r"^(#{1,6})\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        slug = github_anchor(m.group(2))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        out.add(slug if n == 0 else f"{slug}-{n}")  # GitHub numbers repeated headings
    return out


def test_github_anchor_rules() -> None:
    assert github_anchor("The store: sqlite or PostgreSQL") == "the-store-sqlite-or-postgresql"
    assert github_anchor("The `mock` provider (a test double)") == "the-mock-provider-a-test-double"
    assert github_anchor("Per-attempt deadlines (`providers.<name>.timeouts`)") == "per-attempt-deadlines-providersnametimeouts"
    assert github_anchor("Spec, plan, runtime") == "spec-plan-runtime"


def _links() -> list[tuple[Path, str]]:
    found: list[tuple[Path, str]] = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _prose(page.read_text())):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: are not checked
                found.append((page, target))
    return found


LINKS = _links()


def test_there_are_links_to_check() -> None:
    assert len(LINKS) > 50
    readme_targets = {t.split("#")[0] for p, t in LINKS if p.name == "README.md"}
    missing = [_rel(p) for p in PAGES[1:] if f"docs/{p.name}" not in readme_targets]
    assert missing == [], "the README links to every docs page"


@pytest.mark.parametrize(("page", "target"), LINKS, ids=[f"{_rel(p)}->{t}" for p, t in LINKS])
def test_every_relative_link_and_anchor_resolves(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    dest = (page.parent / unquote(path)).resolve() if path else page
    assert dest.exists(), f"{_rel(page)}: {target}: no such file"
    assert ROOT in dest.parents or dest == ROOT, f"{_rel(page)}: {target}: outside the repository"
    if anchor:
        assert dest.suffix == ".md", f"{_rel(page)}: {target}: an anchor into a non-Markdown file"
        assert anchor in anchors(dest), f"{_rel(page)}: {target}: no heading '#{anchor}' in {_rel(dest)}"


def _blocks(lang: str) -> list[tuple[Path, str, str]]:
    """(page, block text, the line before the block) for every fenced block of ``lang``."""
    out = []
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == lang:
                before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
                out.append((page, m.group(2), before))
    return out


def _sidegate_commands() -> list[tuple[Path, list[str]]]:
    """Every `sidegate ...` invocation in a sh block: its arguments after the program name."""
    found = []
    for page, block, _ in _blocks("sh"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if not line or line.startswith("#"):
                continue
            for part in re.split(r"\s*(?:&&|\|\||;|\|)\s*", line):
                try:
                    words = shlex.split(part)
                except ValueError:
                    words = part.split()
                while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # VAR=value prefixes
                    words = words[1:]
                if words and (words[0] == "sidegate" or words[0].endswith("/sidegate")):
                    found.append((page, words[1:]))
    return found


COMMANDS = _sidegate_commands()


def test_the_docs_show_commands() -> None:
    named = {args[0] for _, args in COMMANDS if args}
    assert {"serve", "lint", "explain", "compile", "render", "import", "providers"} <= named


@pytest.mark.parametrize(("page", "args"), COMMANDS, ids=[f"{_rel(p)}: sidegate {' '.join(a)}" for p, a in COMMANDS])
def test_every_documented_command_parses(page: Path, args: list[str]) -> None:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            _parser().parse_args(args)
        except SystemExit as exc:
            assert exc.code in (0, None), f"{_rel(page)}: sidegate {' '.join(args)}: {err.getvalue().strip()}"


SPECS = [(p, b) for p, b, before in _blocks("yaml") if before.strip() == "<!-- spec -->"]


def test_whole_specs_are_marked() -> None:
    assert {_rel(p) for p, _ in SPECS} >= {"README.md", "docs/spec.md"}


@pytest.mark.parametrize(("page", "block"), SPECS, ids=[f"{_rel(p)}#{i}" for i, (p, _) in enumerate(SPECS)])
def test_every_marked_spec_lints_clean(page: Path, block: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(block)
    assert main(["lint", "--strict", str(spec)]) == 0, f"{_rel(page)}:\n{capsys.readouterr().out}"


def test_the_try_it_snippet_runs_against_the_quickstart(tmp_path: Path) -> None:
    from tests.test_serve_cli import _spec, serving

    readme = (ROOT / "README.md").read_text()
    (snippet,) = re.findall(r"<!-- try-it -->\n```python\n(.*?)```", readme, re.S)
    spec, port = _spec(tmp_path)  # the quickstart on a free port, its store in tmp_path
    with serving(str(spec)):
        code = snippet.replace("http://127.0.0.1:4000/v1", f"http://127.0.0.1:{port}/v1")
        assert code != snippet
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "Hello from sidegate.",
        "say this back",  # the stream ends with its own newline
        "8",
        "['default', 'demo', 'echo', 'embed']",
    ]
