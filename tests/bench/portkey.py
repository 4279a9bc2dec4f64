"""`--vs portkey`: the Portkey AI gateway (Node) from npm in `.bench/portkey`, routed to the same mock
upstream with the `x-portkey-provider` and `x-portkey-custom-host` headers, so the identical
scenarios run against it.

`python -m tests.bench.portkey setup` (`just bench-portkey-setup`) installs `@portkey-ai/gateway`
1.15.x with `@hono/node-server` pinned to 1.13.5 through package.json `overrides` (newer ones answer
500 to every stream: Portkey-AI/gateway#1389), then applies the one-line fix Portkey's own repository
carries as `patches/@hono+node-server+1.13.5.patch` (an `await` on `responseViaResponseObject`, so a
response that fails while streaming is caught) to the installed dist files, as its postinstall would.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DIR = ROOT / ".bench" / "portkey"
GATEWAY = "~1.15.2"
NODE_SERVER = "1.13.5"
_SERVER_JS = DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
_HONO_DIST = DIR / "node_modules" / "@hono" / "node-server" / "dist"
_UNPATCHED = re.compile(r"(?<!await )return responseViaResponseObject\(res, outgoing, options\);")
_PATCHED = "return await responseViaResponseObject(res, outgoing, options);"


def package_json() -> str:
    return json.dumps({
        "name": "sidegate-bench-portkey", "private": True,
        "dependencies": {"@portkey-ai/gateway": GATEWAY, "@hono/node-server": NODE_SERVER},
        "overrides": {"@hono/node-server": NODE_SERVER},
    }, indent=2) + "\n"


def patch_text(text: str) -> tuple[str, int]:
    """`text` with the fix applied; (new text, lines changed). Applying it twice changes nothing."""
    return _UNPATCHED.subn(_PATCHED, text)


def patch(dist: Path = _HONO_DIST) -> int:
    """Apply the fix to every dist file of @hono/node-server that has the line; how many were patched."""
    changed = 0
    for f in sorted(dist.glob("*.*js")):
        text, n = patch_text(f.read_text())
        if n:
            f.write_text(text)
            changed += 1
    if not any(_PATCHED in f.read_text() for f in dist.glob("*.*js")):
        raise RuntimeError(f"no `responseViaResponseObject` return found in {dist}: not @hono/node-server 1.13.5?")
    return changed


def setup() -> None:
    DIR.mkdir(parents=True, exist_ok=True)
    (DIR / "package.json").write_text(package_json())
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
                   cwd=DIR, check=True)
    version = json.loads((_HONO_DIST.parent / "package.json").read_text())["version"]
    if version != NODE_SERVER:
        raise RuntimeError(f"@hono/node-server resolved to {version}, not {NODE_SERVER}")
    n = patch()
    gw = json.loads((_SERVER_JS.parents[1] / "package.json").read_text())["version"]
    print(f"Portkey gateway {gw} in {DIR} (@hono/node-server {version}, {n} dist files patched)")


def installed() -> bool:
    return _SERVER_JS.exists()


def headers(mock: int) -> dict[str, str]:
    """The headers that route a request through Portkey to the mock on port `mock`."""
    return {"x-portkey-provider": "openai", "x-portkey-custom-host": f"http://127.0.0.1:{mock}/v1"}


def start(port: int, prefix: list[str]) -> subprocess.Popen[bytes]:
    """Start one headless gateway process (ready when GET / answers 200)."""
    if not installed():
        raise RuntimeError(f"no Portkey gateway in {DIR}: run `just bench-portkey-setup` first")
    return subprocess.Popen([*prefix, "node", str(_SERVER_JS), "--headless", f"--port={port}"],
                            cwd=DIR, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


if __name__ == "__main__":
    if sys.argv[1:] != ["setup"]:
        sys.exit("usage: python -m tests.bench.portkey setup")
    setup()
