"""A HAR export opens in Chromium's network panel: the DevTools frontend's own HAR importer (what
the Network panel's "Import HAR file" runs) reads it back, driven headless over the DevTools
protocol. Needs Debian's chromium (`apt-get install -y chromium`); skipped without it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import wire
from tests.conftest import Sidecar, unique
from tests.test_e2e_record import openai_client
from tests.upstream import Reply, Upstream

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed")

IMPORT = """(async (har) => {
  const HAR = await import('./models/har/har.js');
  const requests = HAR.Importer.Importer.requestsFromHARLog(new HAR.HARFormat.HARRoot(har).log);
  const out = [];
  for (const r of requests) {
    const content = await r.requestContentData();
    out.push({url: r.url(), method: r.requestMethod, status: r.statusCode, mimeType: r.mimeType,
              requestHeaders: r.requestHeaders().map(h => [h.name, h.value]),
              responseHeaders: r.responseHeaders.map(h => [h.name, h.value]),
              postData: await r.requestFormData(), body: content.text ?? null,
              start: r.startTime, end: r.endTime});
  }
  return out;
})(%s)"""


class DevTools:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return dict(message["result"])

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")


@contextlib.asynccontextmanager
async def devtools_frontend() -> AsyncIterator[DevTools]:
    """Headless Chromium on loopback with its bundled DevTools frontend open in a tab."""
    profile = tempfile.mkdtemp(prefix="chromium-har-")
    process = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
        f"--user-data-dir={profile}", "about:blank",
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            assert time.monotonic() < deadline and process.returncode is None, "chromium did not start"
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/json/new?devtools://devtools/bundled/devtools_app.html"
            async with session.put(url) as response:
                target = await response.json(content_type=None)
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                tools = DevTools(ws)
                while await tools.evaluate("document.readyState") != "complete":
                    assert time.monotonic() < deadline, "the DevTools frontend did not load"
                    await asyncio.sleep(0.1)
                yield tools
    finally:
        process.kill()
        await process.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def test_chromium_imports_the_har_export(sidecar: Sidecar, upstream: Upstream) -> None:
    marker = unique("chromium")
    upstream.push(
        Reply.json(wire.openai_error("Rate limit reached", "requests"), 429, **{"retry-after-ms": "20"}),
        Reply.json(wire.openai_completion(f"imported {marker}", usage=wire.openai_usage(9, 3))),
    )
    client = openai_client(sidecar, upstream, max_retries=2)
    await asyncio.to_thread(
        client.chat.completions.create, model="gpt-4.1", messages=[{"role": "user", "content": marker}]
    )
    (run,) = await asyncio.to_thread(sidecar.wait_runs, q=marker)
    har = await asyncio.to_thread(sidecar.get, f"/api/v1/runs/{run['id']}/export", format="har")

    async with devtools_frontend() as tools:
        imported = await tools.evaluate(IMPORT % json.dumps(har))

    entries = har["log"]["entries"]
    assert len(imported) == len(entries) == 2
    for request, entry in zip(imported, entries, strict=True):
        assert request["url"] == entry["request"]["url"]
        assert request["method"] == "POST"
        assert request["status"] == entry["response"]["status"]
        assert request["requestHeaders"] == [[h["name"], h["value"]] for h in entry["request"]["headers"]]
        assert request["responseHeaders"] == [[h["name"], h["value"]] for h in entry["response"]["headers"]]
        assert request["postData"] == entry["request"]["postData"]["text"]
        assert request["body"] == entry["response"]["content"]["text"]
        assert request["mimeType"] == "application/json"
        assert (request["end"] - request["start"]) * 1000 == pytest.approx(entry["time"], abs=1)
    assert [r["status"] for r in imported] == [429, 200]
    assert marker in json.loads(imported[1]["postData"])["messages"][0]["content"]
