"""The Files/Batch wire pieces on their own: batch input lines checked and pointed at the
deployment, output usage summed across arbitrary chunk boundaries, the store migration re-runnable."""

from __future__ import annotations

import json

import peewee
import pytest

from sidegate.runtime.errors import BadRequest
from sidegate.runtime.store.models import MIGRATIONS, TABLES, StoredBatch, StoredFile
from sidegate.runtime.upstream.files_wire import OutputMeter, batch_endpoint, point_batch_lines


def _line(i: int, model: str = "g", url: str = "/v1/chat/completions", **kw: object) -> str:
    return json.dumps({"custom_id": f"r{i}", "method": "POST", "url": url, "body": {"model": model}, **kw})


def test_lines_are_pointed_at_the_deployment_in_its_dialect() -> None:
    data = f"{_line(0)}\n\n{_line(1, 'alias', '/chat/completions')}".encode()
    out = [json.loads(x) for x in point_batch_lines(data, ("g", "alias"), "gpt-4o-mini").splitlines()]
    assert [(x["body"]["model"], x["url"]) for x in out] == [("gpt-4o-mini", "/v1/chat/completions")] * 2
    azure = [json.loads(x) for x in point_batch_lines(data, ("g", "alias"), "dep", azure=True).splitlines()]
    assert {x["url"] for x in azure} == {"/chat/completions"}
    assert batch_endpoint("/v1/embeddings", True) == "/embeddings" and batch_endpoint("/embeddings", False) == \
        "/v1/embeddings"


@pytest.mark.parametrize(("data", "says"), [
    (_line(0, "other"), "names model 'other'"),
    (_line(0, url="/v1/images/generations"), "calls '/v1/images/generations'"),
    (f"{_line(0)}\n{_line(0)}", "repeats custom_id"),
    ('{"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}', "method POST"),
    ("[1, 2]", "needs custom_id"),
    ("{nope", "not JSON"),
    ("\n\n", "no requests"),
])
def test_bad_lines_are_a_400_naming_the_line(data: str, says: str) -> None:
    with pytest.raises(BadRequest) as refused:
        point_batch_lines(data.encode(), ("g",), "m")
    assert says in refused.value.message and refused.value.param == "file"


def test_output_usage_is_summed_across_any_chunking() -> None:
    lines = [
        {"custom_id": "a", "response": {"status_code": 200, "body": {"usage": {
            "prompt_tokens": 7, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 2}}}}},
        {"custom_id": "b", "response": {"status_code": 200, "body": {"usage": {"input_tokens": 11,
                                                                                  "output_tokens": 4}}}},
        {"custom_id": "c", "response": None, "error": {"code": "batch_expired"}},
        {"custom_id": "d", "response": {"status_code": 200, "body": {"usage": {"prompt_tokens": -1}}}},
    ]
    raw = "\n".join(json.dumps(x) for x in lines).encode() + b"\nnot json"
    for step in (1, 5, 64, len(raw)):
        meter = OutputMeter()
        for at in range(0, len(raw), step):
            meter.feed(raw[at:at + step])
        meter.finish()
        assert (meter.prompt, meter.completion, meter.cached, meter.requests) == (18, 7, 2, 2), step


def test_the_files_migration_is_idempotent() -> None:
    db = peewee.SqliteDatabase(":memory:")
    with db.bind_ctx(TABLES):
        for step in MIGRATIONS:
            step(db)
        MIGRATIONS[-1](db)  # again: the tables exist, nothing fails
        assert {StoredFile._meta.table_name, StoredBatch._meta.table_name} <= set(db.get_tables())
