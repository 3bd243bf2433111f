"""The viewer's pages over a seeded store (1,000 runs, a 200-step run), its token cookie, and
the presentation helpers it shares with the terminal commands."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from proxy.api.viewer import present
from storage.records import AttemptRow, RunRow, StepRow, timestamp
from tests.api_seed import BASE, SeededApi, seeded_api

TOKEN = "pages-t0ken"


def long_run(steps: int) -> list[RunRow | StepRow | AttemptRow]:
    """A tool loop of `steps` model calls; each request carries the whole history so far."""
    run_id = f"run_long_{steps}"
    run = RunRow(
        id=run_id, conversation_id="conv_long", kind="chat_turn", classification_source="default",
        classification_reason="a conversational call", status="completed", provider="openai",
        api="openai.chat_completions", model="gpt-4.1", endpoint="api.openai.com/v1/chat/completions",
        first_message="loop", started_at=timestamp(BASE), updated_at=timestamp(BASE + steps),
        finished_at=timestamp(BASE + steps), step_count=steps, attempt_count=steps,
    )  # fmt: skip
    rows: list[RunRow | StepRow | AttemptRow] = [run]
    history = [{"role": "user", "parts": [{"type": "text", "text": "loop"}]}]
    for n in range(1, steps + 1):
        call = {"type": "tool_call", "id": f"call_{n}", "name": "step", "arguments": {"n": n}}
        step = StepRow(
            id=f"stp_long_{n}", run_id=run_id, number=n, started_at=timestamp(BASE + n - 1),
            finished_at=timestamp(BASE + n - 0.5), status="completed",
            request={"api": "openai.chat_completions", "model": "gpt-4.1", "messages": list(history)},
            response={"content": [call], "finish_reason": "tool_calls"},
        )  # fmt: skip
        rows.append(step)
        attempt = AttemptRow(
            id=f"att_long_{n}", step_id=step.id, run_id=run_id, number=1, status="completed",
            url="https://api.openai.com/v1/chat/completions", http_status=200,
            started_at=step.started_at, finished_at=step.finished_at, ttfb_ms=100.0, duration_ms=500.0,
        )  # fmt: skip
        rows.append(attempt)
        history += [
            {"role": "assistant", "parts": [call]},
            {"role": "tool", "parts": [{"type": "tool_result", "id": f"call_{n}", "result": "ok"}]},
        ]
    return rows


@pytest.fixture
async def seeded(tmp_path: Path) -> SeededApi:
    api = await seeded_api(tmp_path, n=1000)
    await api.add(long_run(200))  # type: ignore[arg-type]
    yield api  # type: ignore[misc]
    await api.close()


@pytest.fixture
async def client(seeded: SeededApi, aiohttp_client) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(seeded.app)


async def timed(client: TestClient, path: str) -> tuple[str, float]:
    start = time.perf_counter()
    response = await client.get(path)
    body = await response.text()
    assert response.status == 200, body[:500]
    assert response.content_type == "text/html"
    return body, time.perf_counter() - start


async def test_a_page_of_500_runs_and_a_200_step_run_render(client: TestClient) -> None:
    runs, runs_s = await timed(client, "/runs?limit=500")
    assert runs.count('class="nav-row') == 500
    assert 'href="/runs?limit=500&amp;cursor=' in runs  # keyset paging to the next page
    long, long_s = await timed(client, "/runs/run_long_200")
    assert long.count('<section class="step"') == 200
    # each step shows only what it added: the page grows with the steps, not with their square
    assert long.count('class="bubble ') < 3 * 200 + 10
    assert "397 messages carried over from step 199, 2 new" in long
    transcript, _ = await timed(client, "/runs/run_long_200/steps/200")
    assert transcript.count('class="bubble ') == 399
    conversations, conv_s = await timed(client, "/")
    assert conversations.count('class="nav-row"') == 5
    print(
        f"/runs?limit=500 {runs_s * 1000:.0f} ms, 200-step run {long_s * 1000:.0f} ms, / {conv_s * 1000:.0f} ms"
    )


async def test_a_very_long_history_shows_its_newest_messages_and_all_on_request(
    tmp_path: Path, aiohttp_client
) -> None:  # type: ignore[no-untyped-def]
    """A step that sends 3,001 messages at once (a resumed session, a long agent history): its
    run page shows the newest it added, its transcript the newest 2,000 and all when asked."""
    rows = long_run(1)
    step = next(r for r in rows if isinstance(r, StepRow))
    messages = [{"role": "user", "parts": [{"type": "text", "text": f"message {i}"}]} for i in range(3001)]
    step.request = {**(step.request or {}), "messages": messages}
    api = await seeded_api(tmp_path, n=1)
    await api.add(rows)  # type: ignore[arg-type]
    try:
        client = await aiohttp_client(api.app)
        page, _ = await timed(client, "/runs/run_long_1")
        shown = present.ADDED_MESSAGES
        assert f"the last {shown} shown; {3001 - shown} earlier messages: open the full transcript" in page
        assert (
            page.count('class="bubble user"') == shown
            and "message 3000<" in page
            and "message 2900<" not in page
        )
        transcript, _ = await timed(client, "/runs/run_long_1/steps/1")
        assert transcript.count('class="bubble user"') == present.TRANSCRIPT_MESSAGES
        assert "1001 earlier" in transcript and 'href="/runs/run_long_1/steps/1?all"' in transcript
        everything, _ = await timed(client, "/runs/run_long_1/steps/1?all")
        assert everything.count('class="bubble user"') == 3001 and "earlier" not in everything
    finally:
        await api.close()


async def test_filters_and_fragments(client: TestClient) -> None:
    page, _ = await timed(client, "/runs?kind=compaction&status=interrupted&limit=500")
    rows = re.findall(r'<tr class="nav-row[^"]*" data-href="/runs/([^"]+)"', page)
    assert rows and all(r.startswith("run_") for r in rows)
    assert page.count("compaction</span>") == len(rows)
    assert '<a class="json" href="/api/v1/runs?kind=compaction&amp;status=interrupted&amp;limit=500">' in page
    fragment, _ = await timed(client, "/runs?kind=compaction&partial=1")
    assert "<html" not in fragment and fragment.count('class="nav-row') == min(len(rows), 50)
    blank, _ = await timed(client, "/runs?kind=&status=&conversation_id=&q=&limit=500")  # a form left blank
    assert blank.count('class="nav-row') == 500
    bad = await client.get("/runs?kind=nonsense")
    assert bad.status == 400


@pytest.fixture
async def locked(tmp_path: Path, aiohttp_client) -> TestClient:  # type: ignore[no-untyped-def]
    api = await seeded_api(tmp_path, n=3, token=TOKEN)
    yield await aiohttp_client(api.app)  # type: ignore[misc]
    await api.close()


async def test_with_a_token_pages_ask_once_and_the_cookie_opens_the_api(locked: TestClient) -> None:
    first = await locked.get("/runs?kind=chat_turn", allow_redirects=False)
    location = urlsplit(first.headers["Location"])
    assert (first.status, location.path, parse_qs(location.query)) == (
        303,
        "/login",
        {"next": ["/runs?kind=chat_turn"]},
    )
    assert (await locked.get("/static/htmx.min.js")).status == 200  # the form's assets are open
    assert (await locked.get("/api/v1/runs")).status == 401  # the API stays JSON and closed
    wrong = await locked.post("/login", data={"token": "nope", "next": "/runs"}, allow_redirects=False)
    assert wrong.status == 401
    sneaky = await locked.post(
        "/login", data={"token": TOKEN, "next": "//evil.example/"}, allow_redirects=False
    )
    assert sneaky.headers["Location"] == "/"  # never an open redirect
    cookie = sneaky.cookies["chatdebug_token"]
    assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/"
    assert (await locked.get("/runs")).status == 200
    assert (await locked.get("/api/v1/runs")).status == 200
    await locked.post("/logout", allow_redirects=False)
    assert (await locked.get("/api/v1/runs")).status == 401


def test_step_diff_shows_growth_and_rewrites() -> None:
    user = {"role": "user", "parts": [{"type": "text", "text": "hi"}]}
    answer = {"role": "assistant", "parts": [{"type": "text", "text": "hello"}]}
    summary = {"role": "user", "parts": [{"type": "text", "text": "summary"}]}
    first = {"system": "s", "messages": [user]}
    grown = present.step_diff(first, {"system": "s", "messages": [user, answer]})
    assert (grown.kept, grown.added, grown.rewritten, grown.system_changed) == (1, [answer], False, False)
    rewritten = present.step_diff(first, {"system": "t", "messages": [summary]})
    assert (rewritten.kept, rewritten.added, rewritten.rewritten, rewritten.system_changed) == (
        0,
        [summary],
        True,
        True,
    )
    assert present.step_diff(None, first).added == [user]


def test_curl_keeps_redactions_and_quotes_the_body() -> None:
    attempt = {
        "method": "POST",
        "url": "https://api.openai.com/v1/chat/completions",
        "request_headers": {"authorization": "[REDACTED]", "content-type": "application/json", "host": "x"},
        "request_body": '{"messages": [{"content": "it\'s $HOME"}]}',
    }
    command = present.curl(attempt)
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:5] == ["curl", "-sS", "-X", "POST", "https://api.openai.com/v1/chat/completions"]
    assert words[5:9] == ["-H", "authorization: [REDACTED]", "-H", "content-type: application/json"]
    assert words[9:] == ["--data-raw", attempt["request_body"]]  # host is curl's own to set
