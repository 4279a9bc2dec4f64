"""The store's tables (peewee) and their migrations. Keys are stored only as a SHA-256 hash and a
short display prefix; spend is one row per request plus daily aggregates."""

from __future__ import annotations

from collections.abc import Callable

from sidegate.runtime.store.orm import SchemaMigrator, peewee, playhouse_migrate

__all__ = ["MIGRATIONS", "ApiKey", "ArchivedPeriod", "CacheEntry", "DailySpend", "Meta", "SpendLog", "StoredBatch",
           "StoredFile", "StoredResponse", "Team", "User", "migrate"]


class Meta(peewee.Model):
    """Key/value facts about the database itself (its schema version)."""

    key = peewee.CharField(primary_key=True)
    value = peewee.CharField()


class Team(peewee.Model):
    """A team created through the admin API (spec teams live in the plan)."""

    name = peewee.CharField(primary_key=True)
    models = peewee.TextField(default="[]")
    """JSON list of model groups the team may use (empty: all)."""
    budget = peewee.DoubleField(null=True)
    budget_period = peewee.CharField(null=True)
    rpm = peewee.IntegerField(null=True)
    tpm = peewee.IntegerField(null=True)
    parallel = peewee.IntegerField(null=True)
    created_at = peewee.DoubleField()


class User(peewee.Model):
    """A user created through the admin API, with its rate limits (spec users live in the plan)."""

    name = peewee.CharField(primary_key=True)
    rpm = peewee.IntegerField(null=True)
    tpm = peewee.IntegerField(null=True)
    parallel = peewee.IntegerField(null=True)
    created_at = peewee.DoubleField()


class ApiKey(peewee.Model):
    """A virtual key: only its hash and display prefix are kept."""

    hash = peewee.CharField(primary_key=True)
    prefix = peewee.CharField()
    name = peewee.CharField(null=True)
    team = peewee.CharField(null=True)
    user = peewee.CharField(null=True)
    models = peewee.TextField(default="[]")
    budget = peewee.DoubleField(null=True)
    budget_period = peewee.CharField(null=True)
    rpm = peewee.IntegerField(null=True)
    tpm = peewee.IntegerField(null=True)
    parallel = peewee.IntegerField(null=True)
    expires_at = peewee.DoubleField(null=True)
    revoked = peewee.BooleanField(default=False)
    created_at = peewee.DoubleField()
    updated_at = peewee.DoubleField()
    metadata = peewee.TextField(default="{}")
    """A JSON object of free-form key metadata; the `mcp` and `a2a` members carry tool and agent permissions."""
    guardrails = peewee.TextField(default="[]")
    """JSON list of the plan's guardrail names set on this key through the admin API."""


class SpendLog(peewee.Model):
    """One row per answered request. Times and costs are 8-byte floats (`DoubleField`: REAL in sqlite,
    DOUBLE PRECISION in PostgreSQL, where a plain float column would be 4 bytes)."""

    request_id = peewee.CharField(index=True)
    key_hash = peewee.CharField(null=True, index=True)
    team = peewee.CharField(null=True, index=True)
    user = peewee.CharField(null=True)
    model = peewee.CharField()
    deployment = peewee.CharField()
    prompt_tokens = peewee.IntegerField(default=0)
    completion_tokens = peewee.IntegerField(default=0)
    cached_tokens = peewee.IntegerField(default=0)
    reasoning_tokens = peewee.IntegerField(default=0)
    cost = peewee.DoubleField(default=0.0)
    estimated = peewee.BooleanField(default=False)
    latency_ms = peewee.DoubleField()
    status = peewee.IntegerField()
    created_at = peewee.DoubleField(index=True)
    cache_hit = peewee.BooleanField(default=False)
    """Answered from the response cache (nothing was paid upstream)."""
    saved_cost = peewee.DoubleField(default=0.0)
    """A cache hit: what the cached answer cost when it was paid for."""
    guardrails = peewee.CharField(null=True)
    """The guardrails' decisions, `name:outcome` comma-separated (`pii:masked,secrets:passed`); never
    the text. None: no guardrail applied."""


class StoredResponse(peewee.Model):
    """A Responses API answer kept for `GET /v1/responses/{id}` and `previous_response_id`, visible
    only to the key that made it (`owner`: its hash; empty without auth)."""

    id = peewee.CharField(primary_key=True, max_length=80)
    owner = peewee.CharField(index=True)
    created_at = peewee.DoubleField(index=True)
    model = peewee.CharField()
    provider = peewee.CharField()
    """The provider that served it; an OpenAI or Azure one holds it upstream too (`passthrough`)."""
    passthrough = peewee.BooleanField(default=False)
    previous_id = peewee.CharField(null=True, max_length=80)
    input = peewee.TextField()
    """JSON: this request's own input items (the earlier turns are the `previous_id` chain's)."""
    response = peewee.TextField()
    """JSON: the response object as the client received it."""


class CacheEntry(peewee.Model):
    """A response cache entry (the `store` backend): the answer under its hashed key, until it expires."""

    key = peewee.CharField(primary_key=True, max_length=120)
    group = peewee.CharField(index=True, max_length=64)
    """A hash of the model group's name (what a purge by group deletes)."""
    value = peewee.BlobField()
    expires_at = peewee.DoubleField(index=True)


class StoredFile(peewee.Model):
    """A file held upstream for `/v1/files` (an upload, or a batch's output or error file), visible
    only to the key that owns it (`owner`: its hash; empty without auth). `id` is the upstream's."""

    id = peewee.CharField(primary_key=True, max_length=200)
    owner = peewee.CharField(index=True)
    team = peewee.CharField(null=True)
    group = peewee.CharField(max_length=200)
    """The model group whose deployment holds it."""
    deployment = peewee.CharField(max_length=400)
    """That deployment's target id."""
    purpose = peewee.CharField(max_length=40)
    batch_id = peewee.CharField(null=True, max_length=200)
    """A batch's output or error file: the batch (its content is metered when fetched)."""
    created_at = peewee.DoubleField(index=True)
    status = peewee.CharField(max_length=40, default="uploaded")
    object = peewee.TextField()
    """JSON: the file object as the upstream last described it."""


class StoredBatch(peewee.Model):
    """A batch created through `/v1/batches`, visible only to its owner; metered once (`metered_at`)."""

    id = peewee.CharField(primary_key=True, max_length=200)
    owner = peewee.CharField(index=True)
    team = peewee.CharField(null=True)
    group = peewee.CharField(max_length=200)
    deployment = peewee.CharField(max_length=400)
    input_file_id = peewee.CharField(max_length=200)
    created_at = peewee.DoubleField(index=True)
    status = peewee.CharField(max_length=40)
    object = peewee.TextField()
    """JSON: the batch object as the upstream last described it."""
    metered_at = peewee.DoubleField(null=True)
    """When its results were metered (set once, by whoever claims it first)."""
    cost = peewee.DoubleField(default=0.0)


class DailySpend(peewee.Model):
    """Spend per day, key, team and model, kept up to date as logs are written."""

    day = peewee.CharField()
    key_hash = peewee.CharField(default="")
    team = peewee.CharField(default="")
    model = peewee.CharField()
    requests = peewee.IntegerField(default=0)
    prompt_tokens = peewee.IntegerField(default=0)
    completion_tokens = peewee.IntegerField(default=0)
    cost = peewee.DoubleField(default=0.0)

    class Meta:
        indexes = ((("day", "key_hash", "team", "model"), True),)


class ArchivedPeriod(peewee.Model):
    """One period of spend rows claimed or written by the spend archive (`runtime.store.archive`).
    The unique period start is the claim: of several sidecars sharing the store, the one whose
    insert succeeds archives the period; a claim left by a crash is taken over once it is stale."""

    period_start = peewee.BigIntegerField(unique=True)
    """Epoch seconds (UTC) of the period's start."""
    seconds = peewee.IntegerField()
    """The period's length."""
    object_key = peewee.CharField(max_length=1024)
    owner = peewee.CharField(max_length=64)
    """The archiver (a random id per process) that holds or held the claim."""
    claimed_at = peewee.DoubleField()
    done = peewee.BooleanField(default=False)
    """The object is written (its row count and digest below)."""
    rows = peewee.IntegerField(default=0)
    sha256 = peewee.CharField(max_length=64, default="")
    archived_at = peewee.DoubleField(null=True)
    pruned_at = peewee.DoubleField(null=True)
    """When its rows were deleted from the spend log (`keep_days` after the period)."""


TABLES: list[type[peewee.Model]] = [Meta, Team, User, ApiKey, SpendLog, DailySpend, StoredResponse, CacheEntry,
                                    ArchivedPeriod,
                                    StoredFile, StoredBatch]


def _v1(db: peewee.Database) -> None:
    db.create_tables([Meta])


def _v2(db: peewee.Database) -> None:
    db.create_tables([Team, ApiKey, SpendLog, DailySpend])


def _v3(db: peewee.Database) -> None:
    # _v2 creates tables from today's models, so a fresh database already has the column.
    table = ApiKey._meta.table_name
    if "metadata" not in {c.name for c in db.get_columns(table)}:
        migrator = SchemaMigrator.from_database(db)
        playhouse_migrate(migrator.add_column(table, "metadata", peewee.TextField(default="{}")))


_MIGRATION_LOCK = 0x5169_6567_6174
"""The PostgreSQL advisory lock id held while migrating (any fixed 64-bit number)."""

def _v4(db: peewee.Database) -> None:
    db.create_tables([User])


def _v5(db: peewee.Database) -> None:
    db.create_tables([StoredResponse])


def _v6(db: peewee.Database) -> None:
    # the response cache: its table, and the spend log's cache_hit and saved_cost
    db.create_tables([CacheEntry])
    table = SpendLog._meta.table_name
    if table not in db.get_tables():
        return
    have = {c.name for c in db.get_columns(table)}
    migrator = SchemaMigrator.from_database(db)
    steps = [migrator.add_column(table, name, column) for name, column in
             (("cache_hit", peewee.BooleanField(default=False)), ("saved_cost", peewee.DoubleField(default=0.0)))
             if name not in have]
    if steps:
        playhouse_migrate(*steps)


def _v7(db: peewee.Database) -> None:
    # the spend archive's claims and markers (create_tables skips a table that exists)
    db.create_tables([ArchivedPeriod])


def _v8(db: peewee.Database) -> None:
    # /v1/files and /v1/batches: who owns which upstream file and batch (create_tables skips existing ones)
    db.create_tables([StoredFile, StoredBatch])


def _v9(db: peewee.Database) -> None:
    # guardrails: the spend log's decisions, and a key's own guardrails (set through the admin API)
    migrator = SchemaMigrator.from_database(db)
    tables = db.get_tables()
    for model, column in ((SpendLog, peewee.CharField(null=True)), (ApiKey, peewee.TextField(default="[]"))):
        table = model._meta.table_name
        if table in tables and "guardrails" not in {c.name for c in db.get_columns(table)}:
            playhouse_migrate(migrator.add_column(table, "guardrails", column))


MIGRATIONS: list[Callable[[peewee.Database], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9]
"""Migration n brings the schema from version n to n+1 (later ones may use playhouse.migrate)."""


def migrate(db: peewee.Database) -> int:
    """Apply every migration the database has not seen; returns the schema version (blocking).

    On PostgreSQL a session advisory lock makes sidecars sharing one database migrate one at a time."""
    postgres = isinstance(db, peewee.PostgresqlDatabase)
    if postgres:
        db.execute_sql("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))  # type: ignore[no-untyped-call]
    try:
        with db.bind_ctx(TABLES):
            db.create_tables([Meta])
            row = Meta.get_or_none(Meta.key == "schema_version")
            version = int(row.value) if row else 0
            for step in MIGRATIONS[version:]:
                with db.atomic():
                    step(db)
                    version += 1
                    Meta.insert(key="schema_version", value=str(version)).on_conflict(
                        conflict_target=[Meta.key], update={Meta.value: str(version)}).execute()
    finally:
        if postgres:
            db.execute_sql("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))  # type: ignore[no-untyped-call]
    return version
