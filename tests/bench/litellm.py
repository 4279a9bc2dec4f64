"""`--vs litellm`: the LiteLLM proxy from its own venv (`just bench-litellm-setup` makes it from PyPI),
configured with the same mock upstream, so the identical scenarios run against it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".bench" / "litellm"

_MODEL = """  - model_name: {name}
    litellm_params:
      model: openai/{upstream}
      api_base: http://127.0.0.1:{mock}/v1
      api_key: sk-bench
"""
# The mock picks a stream's variant by model name: `paced` and `one-chunk` ones (see mock_upstream).
_MODELS = {"bench": "bench-model", "bench-paced": "paced", "bench-one-chunk": "one-chunk"}
_CONFIG = """model_list:
{models}litellm_settings:
  drop_params: true
general_settings:
  master_key: sk-bench-client
"""


def executable() -> Path | None:
    """The venv's `litellm` command, when it has been set up."""
    exe = VENV / "bin" / "litellm"
    return exe if exe.exists() else None


def start(port: int, mock: int, tmpdir: Path, prefix: list[str]) -> subprocess.Popen[bytes]:
    """Start the proxy (one worker, no database, the bench client key as master key, logging quiet)."""
    exe = executable()
    if exe is None:
        raise RuntimeError(f"no LiteLLM proxy at {VENV}: run `just bench-litellm-setup` first")
    config = tmpdir / "litellm.yaml"
    models = "".join(_MODEL.format(name=n, upstream=u, mock=mock) for n, u in _MODELS.items())
    config.write_text(_CONFIG.format(models=models))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "LITELLM_MASTER_KEY")}
    env.update({"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"})
    return subprocess.Popen(
        [*prefix, str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
         "--num_workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmpdir)
