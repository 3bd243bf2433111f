"""The API under attack: DNS rebinding, tokens that are empty or not UTF-8, control characters
and mistyped parameters. Through the real sidecar where a process can show it, else the app."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from proxy.api.context import CTX, AnsweringStore
from tests.api_seed import SeededApi, seeded_api
from tests.conftest import Sidecar

TOKEN = "t0ken-for-hardening-tests"


def raw_get(api_url: str, path: str, *headers: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 request with headers exactly as given (Host included), its status and body."""
    parts = urlsplit(api_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\n" + b"".join(h + b"\r\n" for h in headers)
                     + b"Connection: close\r\n\r\n")  # fmt: skip
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# ---- DNS rebinding, against the real tokenless API ------------------------------------------------


@pytest.mark.parametrize(
    "host", ["evil.example", "evil.example:8081", "localhost.evil.example", "127.0.0.1.nip.io"]
)
def test_a_foreign_host_is_refused_without_a_token(sidecar: Sidecar, host: str) -> None:
    status, body = raw_get(sidecar.api_url, "/api/v1/runs", b"Host: " + host.encode())
    assert status == 403
    assert b'"code":"forbidden"' in body and b"Host" in body


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "localhost:8081",
        "127.0.0.1:1",
        "[::1]:8081",
        "LOCALHOST.",
        "127.0.0.2",
        "[::ffff:127.0.0.1]",
    ],
)
def test_loopback_hosts_are_served_without_a_token(sidecar: Sidecar, host: str) -> None:
    status, body = raw_get(sidecar.api_url, "/api/v1/runs?limit=1", b"Host: " + host.encode())
    assert status == 200, body
    assert b'"runs"' in body


def test_a_rebound_page_reads_no_route_at_all(sidecar: Sidecar) -> None:
    for path in (
        "/openapi.json",
        "/api/v1/openapi.json",
        "/metrics",
        "/api/v1/events",
        "/ca.pem",
        "/healthz",
    ):
        assert raw_get(sidecar.api_url, path, b"Host: attacker.example")[0] == 403


# ---- the API with a token, in its own process -------------------------------------------------------


@pytest.fixture
def with_token(own_sidecar: Callable[..., Sidecar]) -> Sidecar:
    return own_sidecar("--api-token", TOKEN)


def test_authorization_that_is_not_utf8_is_a_401(with_token: Sidecar) -> None:
    for value in (b"Bearer \xff\xfe\xfd", b"Bearer " + TOKEN.encode() + b"\xc3", b"\xff \xff"):
        status, body = raw_get(
            with_token.api_url, "/api/v1/runs", b"Host: localhost", b"Authorization: " + value
        )
        assert status == 401, body
        assert b'"code":"unauthorized"' in body
    ok = raw_get(
        with_token.api_url, "/api/v1/runs", b"Host: localhost", f"Authorization: Bearer {TOKEN}".encode()
    )
    assert ok[0] == 200


def test_with_a_token_any_host_may_ask(with_token: Sidecar) -> None:
    """The token is what a rebound page cannot have: a compose service name works."""
    auth = f"Authorization: Bearer {TOKEN}".encode()
    assert raw_get(with_token.api_url, "/api/v1/runs", b"Host: chatdebug:8081", auth)[0] == 200
    assert raw_get(with_token.api_url, "/api/v1/runs", b"Host: chatdebug:8081")[0] == 401


def test_the_document_is_served_under_the_prefix_too(with_token: Sidecar) -> None:
    outside = httpx.get(f"{with_token.api_url}/openapi.json", timeout=5)
    inside = httpx.get(f"{with_token.api_url}/api/v1/openapi.json", timeout=5)  # no token needed
    assert outside.status_code == inside.status_code == 200
    assert inside.json() == outside.json()
    paths = inside.json()["paths"]
    assert "/api/v1/openapi.json" in paths and "/openapi.json" in paths
    assert paths["/api/v1/openapi.json"]["get"]["security"] == []


# ---- query parameters, through the real API -------------------------------------------------------


@pytest.mark.parametrize("q", ["\x00", "a\x00", "\x01", "\x1f", "\x7f", "line\nbreak"])
@pytest.mark.parametrize("route", ["/api/v1/runs", "/api/v1/conversations"])
def test_control_characters_in_q_are_a_400_never_match_all(sidecar: Sidecar, route: str, q: str) -> None:
    response = httpx.get(sidecar.api_url + route, params={"q": q}, timeout=5)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "bad_request",
        "message": "q: control characters are not allowed",
    }


@pytest.mark.parametrize(
    ("route", "params", "valid"),
    [
        ("/api/v1/runs", {"kindd": "chat_turn"}, "conversation_id, cursor, has_error, kind, limit, model,"),
        ("/api/v1/runs", {"limit": "5", "Status": "error"}, "status"),
        ("/api/v1/conversations", {"query": "hello"}, "cursor, limit, q"),
        ("/api/v1/stats", {"from": "2026-01-01T00:00:00Z"}, "since, until"),
        ("/api/v1/events", {"conversation": "c"}, "conversation_id, kind"),
    ],
)
def test_an_unknown_parameter_is_a_400_naming_it_and_the_valid_ones(
    sidecar: Sidecar, route: str, params: dict[str, str], valid: str
) -> None:
    response = httpx.get(sidecar.api_url + route, params=params, timeout=5)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    unknown = next(k for k in params if k not in ("limit",))
    assert message.startswith(f"{unknown}: unknown parameter (valid: ")
    assert valid in message


def test_a_repeated_parameter_is_a_400(sidecar: Sidecar) -> None:
    response = httpx.get(f"{sidecar.api_url}/api/v1/runs?kind=chat_turn&kind=compaction", timeout=5)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("kind: given 2 times")


def test_an_unknown_parameter_on_delete_deletes_nothing(sidecar: Sidecar) -> None:
    response = httpx.delete(
        f"{sidecar.api_url}/api/v1/runs?conversation=conv_x&started_befor=2030-01-01T00:00:00Z"
    )
    assert response.status_code == 400
    assert "conversation, started_befor: unknown parameter" in response.json()["error"]["message"]


# ---- the context's own knobs, on the app -------------------------------------------------------------


@pytest.fixture
async def seeded(tmp_path: Path, database_url: str) -> AsyncIterator[SeededApi]:
    api = await seeded_api(tmp_path, n=3, database=database_url)
    yield api
    await api.close()


def _as_peer(app: web.Application) -> None:
    """The peer address a test names in `X-Test-Peer`: tests may only listen on loopback."""

    @web.middleware
    async def peer(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> Any:
        if address := request.headers.get("X-Test-Peer"):
            request = request.clone(remote=address)
        return await handler(request)

    app.middlewares.insert(0, peer)


async def test_an_empty_token_is_no_token(seeded: SeededApi, aiohttp_client: Callable[..., Any]) -> None:
    seeded.app[CTX].token = ""
    client: TestClient = await aiohttp_client(seeded.app)
    assert (await client.get("/api/v1/runs")).status == 200  # nothing to match: not a 401
    assert (await client.get("/api/v1/runs", headers={"Authorization": "Bearer "})).status == 200
    assert (await client.get("/api/v1/runs", headers={"Host": "evil.example"})).status == 403


@pytest.mark.parametrize("token", [None, ""])
async def test_without_a_token_only_loopback_peers_are_served(
    seeded: SeededApi, aiohttp_client: Callable[..., Any], token: str | None
) -> None:
    seeded.app[CTX].token = token
    _as_peer(seeded.app)
    client: TestClient = await aiohttp_client(seeded.app)
    refused = await client.get("/api/v1/runs", headers={"X-Test-Peer": "192.0.2.7"})
    assert refused.status == 403
    assert (await refused.json())["error"]["code"] == "forbidden"
    assert (await client.get("/healthz", headers={"X-Test-Peer": "2001:db8::1"})).status == 403
    assert (await client.get("/api/v1/runs", headers={"X-Test-Peer": "::1"})).status == 200
    assert (await client.get("/api/v1/runs", headers={"X-Test-Peer": "::ffff:127.0.0.1"})).status == 200
    assert (await client.get("/api/v1/runs", headers={"X-Test-Peer": "::ffff:192.0.2.7"})).status == 403


async def test_allowed_hosts_and_anonymous_beyond_loopback(
    seeded: SeededApi, aiohttp_client: Callable[..., Any]
) -> None:
    ctx = seeded.app[CTX]
    ctx.allowed_hosts = ["Dash.Internal"]
    _as_peer(seeded.app)
    client: TestClient = await aiohttp_client(seeded.app)
    assert (await client.get("/api/v1/runs", headers={"Host": "dash.internal:8081"})).status == 200
    assert (await client.get("/api/v1/runs", headers={"Host": "other.internal:8081"})).status == 403
    far = {"X-Test-Peer": "192.0.2.7", "Host": "192.0.2.1:8081"}
    assert (await client.get("/api/v1/runs", headers=far)).status == 403  # not allowed yet
    ctx.allow_anonymous = True  # --api-allow-anonymous: served beyond loopback, still no foreign name
    assert (await client.get("/api/v1/runs", headers=far)).status == 200
    assert (await client.get("/api/v1/runs", headers={**far, "Host": "evil.example"})).status == 403


async def test_a_silent_database_is_a_prompt_503_not_a_held_request(
    seeded: SeededApi, aiohttp_client: Callable[..., Any]
) -> None:
    """The sidecar's API reads through `AnsweringStore`: refused at once while the writer knows
    the database silent, and given up after its bound when the database keeps still unannounced."""
    silent: list[str] = []
    seeded.app[CTX].store = AnsweringStore.of(seeded.store, lambda: silent[0] if silent else None, 0.3)
    client: TestClient = await aiohttp_client(seeded.app)
    assert (await client.get("/api/v1/runs")).status == 200
    silent.append("the database did not answer a write within 10 s")
    started = time.monotonic()
    refused = await client.get("/api/v1/runs")
    assert time.monotonic() - started < 0.2
    assert refused.status == 503
    assert "did not answer a write within 10 s" in (await refused.json())["error"]["message"]
    silent.clear()
    listed, still = seeded.store.list_runs, asyncio.Event()

    async def keeping_still(*args: Any) -> Any:
        await still.wait()
        return await listed(*args)

    seeded.store.list_runs = keeping_still  # type: ignore[method-assign]
    started = time.monotonic()
    given_up = await client.get("/api/v1/runs")
    assert 0.3 <= time.monotonic() - started < 3
    assert given_up.status == 503
    assert "did not answer a read within 0.3 s" in (await given_up.json())["error"]["message"]
    seeded.store.list_runs = listed  # type: ignore[method-assign]
    still.set()
    assert (await client.get("/api/v1/runs")).status == 200
