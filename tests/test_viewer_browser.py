"""The viewer in a real browser (Debian's chromium, driven by Playwright) against a sidecar that
recorded real SDK traffic. Each page is also written as a screenshot under tests/artifacts/."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests import wire
from tests.conftest import Certs, Sidecar, start_sidecar, unique
from tests.recorded import Recorded, record
from tests.test_e2e_record import openai_client
from tests.upstream import Reply, Upstream

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).parent / "artifacts"
TOKEN = "viewer-t0ken-for-tests"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip

if not CHROMIUM.exists():
    pytest.skip(
        "BROWSER TESTS SKIPPED: /usr/bin/chromium is missing (apt-get install -y chromium)",
        allow_module_level=True,
    )
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="BROWSER TESTS SKIPPED: playwright is not installed"
)


@pytest.fixture(scope="module")
def recorded_sidecar(
    tmp_path_factory: pytest.TempPathFactory, _upstream: Upstream, certs: Certs
) -> Iterator[tuple[Sidecar, Recorded]]:
    sidecar = start_sidecar(tmp_path_factory.mktemp("viewer"), _upstream, certs, "--api-token", TOKEN)
    _upstream.reset()
    try:
        yield sidecar, record(_Authed(sidecar), _upstream)
    finally:
        sidecar.stop()


class _Authed:
    """The sidecar's API helpers with the token: `record` reads runs through them."""

    def __init__(self, sidecar: Sidecar) -> None:
        self._sidecar = sidecar

    def __getattr__(self, name: str) -> object:
        return getattr(self._sidecar, name)

    def get(self, path: str, **params: object) -> object:
        response = httpx.get(
            self._sidecar.api_url + path,
            params=params,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def runs(self, **params: object) -> list[dict]:
        return self.get("/api/v1/runs", **params)["runs"]  # type: ignore[index]

    def wait_runs(self, *args: object, **kwargs: object) -> list[dict]:
        return Sidecar.wait_runs(self, *args, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser: object, recorded_sidecar: tuple[Sidecar, Recorded]) -> Iterator[object]:
    """A page that has signed in once with the token."""
    sidecar, _ = recorded_sidecar
    context = browser.new_context(base_url=sidecar.api_url, viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto("/")
    page.fill("input[name=token]", TOKEN)
    page.click("button")
    page.wait_for_url(re.compile(r"/$"))
    yield page
    context.close()


def shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_the_token_prompt_asks_once_and_keeps_it_in_a_strict_http_only_cookie(
    browser: object, recorded_sidecar: tuple[Sidecar, Recorded]
) -> None:
    sidecar, recorded = recorded_sidecar
    context = browser.new_context(base_url=sidecar.api_url)  # type: ignore[attr-defined]
    page = context.new_page()
    page.goto(f"/runs/{recorded.tool_loop['id']}")
    assert "/login" in page.url
    shot(page, "login")
    page.fill("input[name=token]", "not-the-token")
    page.click("button")
    assert page.locator(".err").inner_text() == "That is not the token."
    page.fill("input[name=token]", TOKEN)
    page.click("button")
    page.wait_for_url(f"**/runs/{recorded.tool_loop['id']}")
    (cookie,) = context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it
    # the API calls the page makes carry it too
    assert page.evaluate("fetch('/api/v1/runs?limit=1').then(r => r.status)") == 200
    assert httpx.get(f"{sidecar.api_url}/api/v1/runs", timeout=10).status_code == 401
    context.close()


def test_conversations_list_the_recorded_conversation(
    page: object, recorded_sidecar: tuple[Sidecar, Recorded]
) -> None:
    _, recorded = recorded_sidecar
    page.goto("/")  # type: ignore[attr-defined]
    row = page.locator("tr.nav-row", has_text=recorded.marker)  # type: ignore[attr-defined]
    assert row.count() == 1
    text = row.inner_text()
    assert "4" in text.split()  # run count
    for kind in ("chat turn", "compaction", "title"):
        assert kind in text
    assert page.locator("a.json").get_attribute("href") == "/api/v1/conversations"  # type: ignore[attr-defined]
    shot(page, "conversations")


def test_runs_list_filters_and_a_new_call_appears_without_reload(
    page: object, recorded_sidecar: tuple[Sidecar, Recorded], _upstream: Upstream
) -> None:
    sidecar, recorded = recorded_sidecar
    page.goto("/runs")  # type: ignore[attr-defined]
    for run in recorded.runs:
        assert page.locator(f"tr[data-href='/runs/{run['id']}']").count() == 1  # type: ignore[attr-defined]
    page.wait_for_selector("#live.on")  # type: ignore[attr-defined]
    page.evaluate("window.__notReloaded = true")  # type: ignore[attr-defined]

    marker = unique("live")
    _upstream.push(Reply.json(wire.openai_completion("live!", usage=wire.openai_usage(4, 2))))
    client = openai_client(sidecar, _upstream, default_headers={"Authorization": f"Bearer {TOKEN}"})
    client.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": marker}])
    page.locator("tr.nav-row", has_text=marker).wait_for(timeout=15_000)  # type: ignore[attr-defined]
    assert page.evaluate("window.__notReloaded") is True  # type: ignore[attr-defined]
    shot(page, "runs")

    page.goto("/runs?kind=title_generation")  # type: ignore[attr-defined]
    rows = page.locator("tbody#rows tr.nav-row")  # type: ignore[attr-defined]
    assert rows.count() >= 1
    assert all("title generation" in rows.nth(i).inner_text() for i in range(rows.count()))
    assert page.locator("a.json").get_attribute("href") == "/api/v1/runs?kind=title_generation"  # type: ignore[attr-defined]


def test_a_conversation_shows_its_runs_in_order_with_side_calls_marked(
    page: object, recorded_sidecar: tuple[Sidecar, Recorded]
) -> None:
    _, recorded = recorded_sidecar
    page.goto(f"/conversations/{recorded.conversation_id}")  # type: ignore[attr-defined]
    items = page.locator("ol.story > li")  # type: ignore[attr-defined]
    assert [items.nth(i).get_attribute("data-href") for i in range(items.count())] == [
        f"/runs/{r['id']}" for r in recorded.runs
    ]
    assert page.locator("li.compaction .marker").count() == 1  # type: ignore[attr-defined]
    assert page.locator("li.title_generation .marker").count() == 1  # type: ignore[attr-defined]
    assert recorded.tool_loop["prompt"] in items.nth(0).inner_text()
    shot(page, "conversation")
    page.keyboard.press("j")  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    page.wait_for_url(f"**/runs/{recorded.tool_loop['id']}")  # type: ignore[attr-defined]
    page.keyboard.press("Escape")  # type: ignore[attr-defined]
    page.wait_for_url(f"**/conversations/{recorded.conversation_id}")  # type: ignore[attr-defined]


def test_a_run_shows_steps_attempts_the_diff_and_raw_bodies(
    page: object, recorded_sidecar: tuple[Sidecar, Recorded]
) -> None:
    _, recorded = recorded_sidecar
    page.goto(f"/runs/{recorded.tool_loop['id']}")  # type: ignore[attr-defined]
    assert page.locator("section.step").count() == 3  # type: ignore[attr-defined]
    assert page.locator(".timeline .lane").count() == 3  # type: ignore[attr-defined]
    step2 = page.locator("#step-2")  # type: ignore[attr-defined]
    note = step2.locator(".diff-note").inner_text()
    assert "1 message carried over from step 1, 2 new" in note
    added = step2.locator(".chat.diff .bubble")
    assert [added.nth(i).locator(".role").inner_text().lower() for i in range(added.count())] == [
        "assistant",
        "tool",
    ]
    assert "get_weather" in added.nth(0).inner_text()
    assert page.locator("#step-3 .chat.response").inner_text().count("Sunny twice") == 1  # type: ignore[attr-defined]
    usage = page.locator("table.usage").first.inner_text()  # type: ignore[attr-defined]
    for label in ("input", "cache read", "cache write", "output", "reasoning"):
        assert label in usage

    raw = step2.locator("details.raw").first
    raw.locator("summary").click()
    raw.locator("pre.curl").wait_for()
    curl = raw.locator("pre.curl").inner_text()
    assert curl.startswith("curl -sS -X POST") and "[REDACTED]" in curl
    assert "sk-test" not in curl
    assert "get_weather" in raw.locator(".raw-pair").inner_text()
    transcript = step2.locator("details.transcript")
    transcript.locator("summary").click()
    transcript.locator("details.tools").wait_for()
    assert "1 tool: get_weather" in transcript.locator("details.tools summary").inner_text()
    shot(page, "run-tool-loop")

    page.goto(f"/runs/{recorded.retried['id']}")  # type: ignore[attr-defined]
    attempts = page.locator("table.attempts tr.attempt")  # type: ignore[attr-defined]
    assert attempts.count() == 2
    first, second = attempts.nth(0).inner_text(), attempts.nth(1).inner_text()
    assert "failed" in first and "429" in first and "rate_limited" in first
    assert "completed" in second and "200" in second and "x-stainless-retry-count=1" in second
    assert page.locator(".timeline .bar").count() == 2  # type: ignore[attr-defined]
    export = page.locator("a", has_text="export")  # type: ignore[attr-defined]
    assert export.get_attribute("href") == f"/api/v1/runs/{recorded.retried['id']}/export"
    shot(page, "run-retried")

    page.goto(f"/runs/{recorded.compaction['id']}")  # type: ignore[attr-defined]
    shot(page, "run-compaction")
