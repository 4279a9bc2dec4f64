"""The plan: the frozen, executable form of a spec, and the only seam between compiler and runtime.

Lives here: the plan's types (`model`), values shared by every part of it (`values`: frozen JSON,
secret references, headers), the tool gateways' types (`gateways`), canonical JSON with its digest
(`canonical`), governance types (`governance`: keys, teams, users, budgets, JWT), the spend
archive (`archive`) and the resolution of secret references at start (`secrets`).
May import: nothing else of the runtime (every other room imports the plan).
"""

from sidegate.runtime.plan.model import *  # noqa: F403  (the plan's types are the package's surface)
from sidegate.runtime.plan.model import __all__ as __all__
