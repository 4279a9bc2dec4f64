"""peewee (and playhouse's migrator), imported without psycopg2: every runtime module gets them here.

peewee imports psycopg2 at its own import when it is installed, and playhouse's migrator does too
(through its CockroachDB and PostgreSQL extensions): libpq and its TLS stack, ~5 MB of every sidecar
worker and ~15 ms of its start, yet only a PostgreSQL store uses it. They are imported here with
psycopg2 hidden, and :func:`with_psycopg2` hands psycopg2 to peewee the way peewee's own import does
(the module, its extensions, the UUID adapter, `Json`, and the transaction-status constants its
psycopg2 adapter class sets when psycopg2 is there) before a PostgreSQL database is made. peewee
imported elsewhere first (with psycopg2) is used as it is.
"""

from __future__ import annotations

import sys
from typing import Any

_hide = "peewee" not in sys.modules and "psycopg2" not in sys.modules
if _hide:
    sys.modules["psycopg2"] = None  # type: ignore[assignment]  # their `import psycopg2` fails
try:
    import peewee
    from playhouse.migrate import SchemaMigrator
    from playhouse.migrate import migrate as playhouse_migrate
finally:
    if _hide:
        del sys.modules["psycopg2"]

__all__ = ["SchemaMigrator", "peewee", "playhouse_migrate", "with_psycopg2"]


def with_psycopg2() -> None:
    """Give peewee psycopg2 (once; blocking: it loads libpq), as its import would have. Without
    psycopg2 installed peewee keeps none and says so when a PostgreSQL database connects."""
    module: Any = peewee
    if module.psycopg2 is not None:
        return
    try:
        import psycopg2
        from psycopg2 import extensions
        from psycopg2.extras import Json, register_uuid
    except ImportError:
        return
    register_uuid()  # type: ignore[no-untyped-call]
    module.psycopg2, module.pg_extensions, module.Json_pg2 = psycopg2, extensions, Json
    adapter = module.Psycopg2Adapter
    adapter.txn_idle = extensions.TRANSACTION_STATUS_IDLE
    adapter.txn_inerror = extensions.TRANSACTION_STATUS_INERROR
    adapter.txn_unknown = extensions.TRANSACTION_STATUS_UNKNOWN
