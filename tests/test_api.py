"""The query API over a real SQLite file: filters, pagination, deletes, retention, events, auth."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from storage import queries
from storage.records import RunRow, StepRow, timestamp
from storage.retention import expire_once
from storage.sqlite import SqliteStore
from tests.api_seed import BASE, SeededApi, make_run, seeded_api


@pytest.fixture
async def api(tmp_path: Path, database_url: str) -> AsyncIterator[SeededApi]:
    """Every API test runs on each backend."""
    seeded = await seeded_api(tmp_path, database=database_url)
    yield seeded
    await seeded.close()


@pytest.fixture
async def client(api: SeededApi, aiohttp_client: Callable[..., Any]) -> TestClient:
    return await aiohttp_client(api.app)


async def get(client: TestClient, path: str, expect: int = 200, **params: Any) -> Any:
    response = await client.get(path, params={k: str(v) for k, v in params.items()})
    assert response.status == expect, (await response.text())[:500]
    return await response.json()


def expected(runs: list[RunRow], **where: Any) -> list[str]:
    """The oracle: the same filters applied in Python, newest first."""
    out = []
    for r in runs:
        if any(getattr(r, k) != v for k, v in where.items() if k not in ("has_error", "q", "since", "until")):
            continue
        if "has_error" in where and (r.error_class is not None) != where["has_error"]:
            continue
        if "q" in where and where["q"].lower() not in (r.first_message or "").lower():
            continue
        if "since" in where and r.started_at < where["since"]:
            continue
        if "until" in where and r.started_at >= where["until"]:
            continue
        out.append(r)
    return [r.id for r in sorted(out, key=lambda r: (r.started_at, r.id), reverse=True)]


FILTERS: list[dict[str, Any]] = [
    {},
    {"kind": "chat_turn"},
    {"status": "error"},
    {"conversation_id": "conv_1"},
    {"provider": "anthropic"},
    {"model": "gemini-2.5-flash"},
    {"has_error": True},
    {"has_error": False},
    {"q": "kyoto"},
    {"q": "nowhere to be found"},
    {"q": "NUMBER 1"},  # case-insensitive, spaces and all: the text index and LIKE agree
    {"q": "1"},  # too short for the trigram index: the plain scan
    {"since": timestamp(BASE + 10), "until": timestamp(BASE + 25)},
    {"kind": "chat_turn", "provider": "openai"},
    {"status": "completed", "conversation_id": "conv_2", "q": "paris"},
    {"kind": "title_generation", "has_error": False, "since": timestamp(BASE + 5)},
]


@pytest.mark.parametrize("where", FILTERS, ids=lambda w: ",".join(w) or "none")
async def test_each_filter_and_combinations(
    api: SeededApi, client: TestClient, where: dict[str, Any]
) -> None:
    params = {k: str(v).lower() if isinstance(v, bool) else v for k, v in where.items()}
    body = await get(client, "/api/v1/runs", limit=500, **params)
    assert [r["id"] for r in body["runs"]] == expected(api.runs, **where)
    assert body["next_cursor"] is None


async def test_run_shape_and_detail(api: SeededApi, client: TestClient) -> None:
    run = (await get(client, "/api/v1/runs", limit=1, status="error"))["runs"][0]
    assert run["classification"] == {"source": "default", "reason": "a conversational call"}
    assert run["usage"]["input_tokens"] >= 100
    assert run["error"] == {"class": "rate_limited", "message": "slow down", "type": None, "code": None}
    detail = await get(client, f"/api/v1/runs/{run['id']}")
    (step,) = detail["steps"]
    assert [a["number"] for a in step["attempts"]] == [1, 2]
    attempt = await get(client, f"/api/v1/attempts/{step['attempts'][0]['id']}")
    assert attempt["request_body"] == '{"api_key": "[REDACTED]"}'
    assert attempt["error"]["class"] == "rate_limited"


async def test_pagination_is_stable_while_rows_arrive(api: SeededApi, client: TestClient) -> None:
    before = expected(api.runs)
    seen: list[str] = []
    cursor = None
    for page in itertools.count():
        params: dict[str, Any] = {"limit": 7} | ({"cursor": cursor} if cursor else {})
        body = await get(client, "/api/v1/runs", **params)
        seen += [r["id"] for r in body["runs"]]
        # newer runs (and one in the same millisecond as the page's last row) arrive between pages
        await api.add(make_run(1000 + page, started=BASE + 10_000 + page))
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == before  # no duplicates, no gaps, nothing newer slipped in


async def test_conversations(api: SeededApi, client: TestClient) -> None:
    body = await get(client, "/api/v1/conversations")
    convs = {c["id"]: c for c in body["conversations"]}
    assert set(convs) == {"conv_0", "conv_1", "conv_2", "conv_3"}
    assert convs["conv_1"]["run_count"] == 10
    assert convs["conv_1"]["first_message"] == "question number 1 about kyoto"
    order = [c["last_activity_at"] for c in body["conversations"]]
    assert order == sorted(order, reverse=True)
    page = await get(client, "/api/v1/conversations", limit=3)
    rest = await get(client, "/api/v1/conversations", limit=3, cursor=page["next_cursor"])
    assert [c["id"] for c in page["conversations"] + rest["conversations"]] == [
        c["id"] for c in body["conversations"]
    ]


async def test_stats(api: SeededApi, client: TestClient) -> None:
    stats = await get(client, "/api/v1/stats")
    assert stats["runs"]["total"] == 40
    assert stats["runs"]["by_kind"] == {
        "chat_turn": 16,
        "title_generation": 8,
        "compaction": 8,
        "quickgen": 8,
    }
    assert stats["runs"]["by_status"]["error"] == 8
    assert stats["runs"]["error_rate"] == pytest.approx(8 / 40)
    assert stats["usage"]["input_tokens"] == sum(100 + i for i in range(40))
    assert stats["attempts"]["total"] == 48
    assert stats["attempts"]["by_error_class"] == {"rate_limited": 16}
    durations = sorted(100.0 + 10 * i for i in range(40) for _ in range(2 if i % 5 == 2 else 1))
    assert stats["attempts"]["duration_ms"]["p50"] == durations[int(0.5 * 48)]
    assert stats["attempts"]["duration_ms"]["p99"] == durations[-1]
    window = await get(client, "/api/v1/stats", since=timestamp(BASE + 30), until=timestamp(BASE + 35))
    assert window["runs"]["total"] == 5


async def test_deletes_vanish_everywhere(api: SeededApi, client: TestClient) -> None:
    victim = expected(api.runs)[0]
    attempt_id = f"att_{victim}_1"
    assert (await client.delete(f"/api/v1/runs/{victim}")).status == 204
    await get(client, f"/api/v1/runs/{victim}", 404)
    await get(client, f"/api/v1/attempts/{attempt_id}", 404)
    assert (await client.delete(f"/api/v1/runs/{victim}")).status == 404
    assert victim not in [r["id"] for r in (await get(client, "/api/v1/runs", limit=500))["runs"]]
    assert (await get(client, "/api/v1/stats"))["runs"]["total"] == 39

    response = await client.delete("/api/v1/runs", params={"conversation_id": "conv_2"})
    assert (await response.json()) == {"deleted": 10}
    assert (await get(client, "/api/v1/runs", conversation_id="conv_2"))["runs"] == []
    assert "conv_2" not in [c["id"] for c in (await get(client, "/api/v1/conversations"))["conversations"]]
    response = await client.delete("/api/v1/runs", params={"started_before": timestamp(BASE + 10)})
    assert (await response.json())["deleted"] == len([i for i in range(10) if i % 4 != 2 and i != 39])
    assert (await client.delete("/api/v1/runs")).status == 400


async def test_retention_deletes_idle_runs_in_batches(api: SeededApi, client: TestClient) -> None:
    old = [make_run(500 + i, started=BASE - 40 * 86_400 + i) for i in range(25)]
    await api.add([row for rows in old for row in rows])
    deleted = await expire_once(api.writer, api.delete_runs, days=30, batch=10)
    assert deleted == 25
    assert (await get(client, "/api/v1/stats", since=timestamp(BASE - 50 * 86_400)))["runs"]["total"] == 40


async def read_events(
    client: TestClient, count: int, headers: dict[str, str] | None = None, **params: Any
) -> list[tuple[str, str, str]]:
    """(id, event, data) of the next `count` events."""
    response = await client.get("/api/v1/events", params=params, headers=headers or {})
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events: list[tuple[str, str, str]] = []
    current: dict[str, str] = {}
    async with asyncio.timeout(10):
        while len(events) < count:
            line = (await response.content.readline()).decode().rstrip("\r\n")
            if not line:
                if "data" in current:
                    events.append((current.get("id", ""), current.get("event", ""), current["data"]))
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(": ")
                current[name] = value
    response.close()
    return events


async def test_events_deliver_and_replay_after_reconnect(api: SeededApi, client: TestClient) -> None:
    listener = asyncio.create_task(read_events(client, 3, conversation_id="conv_live"))
    await asyncio.sleep(0.1)
    await api.add(make_run(2000, conversation="conv_live", started=BASE + 20_000)[:3])  # run, step, attempt
    received = await listener
    assert [e[1] for e in received] == ["run", "step", "attempt"]
    last_id = received[-1][0]

    await api.add(make_run(2001, conversation="conv_live", started=BASE + 20_001)[:1])  # while disconnected
    await api.add(make_run(2002, conversation="other", started=BASE + 20_002)[:1])  # filtered out
    await api.delete_runs(["run_02000_" + received[0][2].split("run_02000_")[1].split('"')[0]])
    replayed = await read_events(client, 2, headers={"Last-Event-ID": last_id}, conversation_id="conv_live")
    assert [e[1] for e in replayed] == ["run", "delete"]
    assert "run_02001_" in replayed[0][2]
    assert all(int(e[0]) > int(last_id) for e in replayed)
    # a fresh client replays the buffer: the deleted run's own events are gone from it
    fresh = await read_events(client, 1, headers={"Last-Event-ID": "0"}, conversation_id="conv_live")
    assert "run_02001_" in fresh[0][2]


async def test_events_filter_by_kind(api: SeededApi, client: TestClient) -> None:
    listener = asyncio.create_task(read_events(client, 1, kind="compaction"))
    await asyncio.sleep(0.1)
    await api.add(make_run(3000, started=BASE + 30_000)[:1])  # chat_turn: filtered out
    await api.add(make_run(3003, started=BASE + 30_003)[:1])  # compaction
    (event,) = await listener
    assert '"kind":"compaction"' in event[2]


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "501"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"kind": "bogus"}, "kind"),
        ({"status": "done"}, "status"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-01-01T00:00:00"}, "until"),
        ({"has_error": "maybe"}, "has_error"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"q": "x" * 501}, "q"),
    ],
)
async def test_bad_parameters_are_400s_naming_them(
    client: TestClient, params: dict[str, str], name: str
) -> None:
    body = await get(client, "/api/v1/runs", 400, **params)
    assert body["error"]["code"] == "bad_request"
    assert body["error"]["message"].startswith(f"{name}: ")


async def test_unknown_ids_are_404s(client: TestClient) -> None:
    for path in ("/api/v1/runs/nope", "/api/v1/attempts/nope", "/api/v1/runs/nope/export"):
        body = await get(client, path, 404)
        assert body["error"]["code"] == "not_found"


async def test_export_is_self_contained(api: SeededApi, client: TestClient) -> None:
    run_id = expected(api.runs, status="error")[0]
    doc = await get(client, f"/api/v1/runs/{run_id}/export")
    assert doc["version"] == 1
    assert doc["run"]["id"] == run_id
    attempts = doc["run"]["steps"][0]["attempts"]
    assert [a["request_body"] for a in attempts] == ['{"api_key": "[REDACTED]"}'] * 2


async def test_metrics(client: TestClient) -> None:
    response = await client.get("/metrics")
    text = await response.text()
    assert response.status == 200
    assert 'chatdebug_attempts_total{error_class="rate_limited",status="failed"} 16.0' in text
    assert "chatdebug_attempt_duration_seconds_count 40.0" in text
    assert "chatdebug_writer_queue_depth 0.0" in text
    assert "chatdebug_database_bytes" in text


async def test_token_required_except_open_paths(tmp_path: Path, aiohttp_client: Callable[..., Any]) -> None:
    seeded = await seeded_api(tmp_path, 3, token="s3cret-token", cors=["https://dash.example.com"])
    try:
        client = await aiohttp_client(seeded.app)
        assert (await client.get("/api/v1/runs")).status == 401
        assert (await client.get("/api/v1/runs", headers={"Authorization": "Bearer wrong"})).status == 401
        ok = await client.get("/api/v1/runs", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status == 200
        assert (await client.get("/healthz")).status == 200
        assert (await client.get("/readyz")).status == 200
        assert (await client.get("/metrics")).status == 401
        preflight = await client.options(
            "/api/v1/runs",
            headers={"Origin": "https://dash.example.com", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
        cross = await client.get(
            "/api/v1/runs", headers={"Origin": "https://evil.example", "Authorization": "Bearer s3cret-token"}
        )
        assert "Access-Control-Allow-Origin" not in cross.headers
    finally:
        await seeded.close()


async def test_timestamps_at_the_ends_of_the_calendar(client: TestClient) -> None:
    """Found by schemathesis: year 1 with a positive offset is before the UTC calendar starts."""
    body = await get(client, "/api/v1/runs", since="2000-01-01T09:18:14Z", until="0001-01-01T01:19:45+03:04")
    assert body["runs"] == []
    assert (
        len((await get(client, "/api/v1/runs", limit=500, until="9999-12-31T23:59:59-05:00"))["runs"]) == 40
    )
    assert (await get(client, "/api/v1/stats", since="0001-01-01T00:00:00+01:00"))["runs"]["total"] == 40


async def test_a_read_of_large_payloads_is_shaped_beside_the_loop_or_passed_on_as_stored(
    tmp_path: Path,
) -> None:
    """Decoding a run's payloads costs ~20 ms a MiB: past `LARGE_READ` of stored text a read
    shapes its rows where the store's `beside` says (the process's reading thread), a small one
    on the loop; the JSON API takes the payloads as stored and decodes nothing."""
    store = SqliteStore(str(tmp_path / "reads.sqlite"))
    await store.open()
    asked: list[int] = []

    async def beside(work: Callable[[], Any]) -> Any:
        asked.append(1)
        return await asyncio.to_thread(work)

    store.beside = beside
    small, large = make_run(1), make_run(2)
    history = {
        "messages": [{"role": "user", "parts": [{"type": "text", "text": f"m {i}"}]} for i in range(3000)]
    }
    large = [dataclasses.replace(r, request=history) if isinstance(r, StepRow) else r for r in large]
    await store.write(small + large)
    try:
        assert len(orjson.dumps(history)) > queries.LARGE_READ
        assert (await store.get_run(small[0].id)) is not None and asked == []
        run = await store.get_run(large[0].id)
        assert run is not None and run["steps"][0]["request"] == history and asked == [1]
        stored = await store.get_run(large[0].id, as_stored=True)
        assert stored is not None and asked == [1]
        elsewhere: list[int] = []

        async def reading(work: Callable[[], Any]) -> Any:  # a reader names its own place
            elsewhere.append(1)
            return await asyncio.to_thread(work)

        assert (await store.get_run(large[0].id, beside=reading)) == run
        assert asked == [1] and elsewhere == [1]
        assert isinstance(stored["steps"][0]["request"], orjson.Fragment)
        assert orjson.loads(orjson.dumps(stored))["steps"][0]["request"] == history
    finally:
        await store.close()
