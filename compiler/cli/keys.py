"""`sidegate keys create|revoke|list SPEC`: manage virtual keys in the spec's store directly (a
running sidecar picks changes up within `auth.refresh`). Uses the same admin handlers as the API."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from sidegate.runtime.plan import Plan

__all__ = ["add_keys_commands"]

_Parser = TypeVar("_Parser", bound=argparse.ArgumentParser)


def _database(args: argparse.Namespace) -> tuple[str, Plan] | None:
    if args.plan:
        from sidegate.runtime.plan.canonical import PlanFormatError, loads

        try:
            with open(args.plan, "rb") as f:
                plan = loads(f.read())
        except (OSError, PlanFormatError) as exc:
            print(f"sidegate keys: {args.plan}: {exc}", file=sys.stderr)
            return None
    else:
        from sidegate.compiler.cli.common import compile_file
        from sidegate.compiler.report import text

        if not args.spec:
            print("sidegate keys: give a SPEC or --plan", file=sys.stderr)
            return None
        result = compile_file(args.spec)
        if result.plan is None:
            sys.stderr.write(text(result.diagnostics))
            return None
        plan = result.plan
    from sidegate.runtime.plan.secrets import SecretError, resolve

    try:
        return resolve(plan.store.database), plan
    except SecretError as exc:
        print(f"sidegate keys: {exc}", file=sys.stderr)
        return None


def _admin_call(url: str, plan: Plan, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> Any:
    import trio

    from sidegate.runtime.governance.keys import KeyCache
    from sidegate.runtime.http.admin import Admin
    from sidegate.runtime.store.database import Store

    async def call() -> Any:
        store = await Store.open(url, wait=0.0)  # a CLI reports an unreachable store at once
        try:
            known = (frozenset(g.name for g in plan.models), frozenset(t.name for t in plan.teams))
            return await Admin(store, KeyCache(), known=lambda: known).handle(method, path, query, body)
        finally:
            await store.aclose()

    return trio.run(call)


def _run(args: argparse.Namespace) -> int:
    from sidegate.runtime.errors import GatewayError
    from sidegate.runtime.store.database import StoreUnavailable

    found = _database(args)
    if found is None:
        return 1
    url, plan = found
    if url.endswith(":memory:"):
        print("sidegate keys: the spec's store is in memory; set store.database to a file", file=sys.stderr)
        return 1
    if getattr(args, "metadata", None):
        try:
            json.loads(args.metadata)
        except ValueError:
            print("sidegate keys: --metadata must be a JSON object", file=sys.stderr)
            return 64
    try:
        if args.action == "create":
            body: dict[str, Any] = {"key_alias": args.name, "team_id": args.team, "user_id": args.user,
                                    "models": [m for m in (args.models or "").split(",") if m],
                                    "max_budget": args.budget, "budget_duration": args.budget_period,
                                    "rpm_limit": args.rpm, "tpm_limit": args.tpm,
                                    "max_parallel_requests": args.parallel, "duration": args.expires,
                                    "metadata": json.loads(args.metadata) if args.metadata else None}
            made = _admin_call(url, plan, "POST", "/key/generate", {},
                               {k: v for k, v in body.items() if v is not None})
            print(made["key"])
            print(f"created key {made['key_prefix']}... (token {made['token']})", file=sys.stderr)
        elif args.action == "revoke":
            done = _admin_call(url, plan, "POST", "/key/delete", {}, {"keys": [args.key]})
            token = done["deleted_keys"][0]
            state = "was already revoked" if done["already_revoked"] else "revoked"
            print(f"key {token} {state}")
        else:
            from sidegate.runtime.store.database import Store
            from sidegate.runtime.store.models import ApiKey

            async def read() -> list[dict[str, Any]]:
                store = await Store.open(url, wait=0.0)
                try:
                    return await store.run(lambda: [
                        {"token": k.hash, "prefix": k.prefix, "name": k.name, "team": k.team, "revoked": k.revoked}
                        for k in ApiKey.select()])
                finally:
                    await store.aclose()

            import trio

            keys = trio.run(read)
            print(json.dumps(keys, indent=2))
            print(f"{len(keys)} key(s)", file=sys.stderr)
    except GatewayError as exc:
        print(f"sidegate keys: {exc.message}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"sidegate keys: {exc}", file=sys.stderr)
        return 1
    return 0


def add_keys_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    """Add `keys create|revoke|list`."""
    keys = commands.add_parser("keys", help="create, revoke or list virtual keys in the spec's store")
    actions = keys.add_subparsers(dest="action", metavar="ACTION", parser_class=type(keys))
    actions.required = True
    for name, helptext in (("create", "create a key (printed once)"), ("revoke", "revoke a key"),
                           ("list", "list keys (hashes and prefixes only)")):
        sub = actions.add_parser(name, help=helptext)
        sub.add_argument("spec", nargs="?", metavar="SPEC", help="the spec whose store to use")
        sub.add_argument("--plan", metavar="PLAN", help="a compiled plan instead of a spec")
        sub.set_defaults(run=_run)
        if name == "create":
            sub.add_argument("--name")
            sub.add_argument("--team")
            sub.add_argument("--user")
            sub.add_argument("--models", help="comma-separated model groups (default: all)")
            sub.add_argument("--budget", type=float, help="USD per budget period")
            sub.add_argument("--budget-period", default=None, help="1d, 7d, 30d (default) or month")
            sub.add_argument("--rpm", type=int)
            sub.add_argument("--tpm", type=int)
            sub.add_argument("--parallel", type=int)
            sub.add_argument("--expires", help="lifetime such as 12h or 30d")
            sub.add_argument("--metadata", help='a JSON object, e.g. \'{"mcp": {"allow": ["files__*"]}}\'')
        if name == "revoke":
            sub.add_argument("key", metavar="KEY", help="the key or its token")
