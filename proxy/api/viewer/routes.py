"""The viewer's pages. Each reads the store the way its JSON twin in `/api/v1` does and renders
HTML on the server; the browser only swaps fragments when `/api/v1/events` says something changed."""

from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web
from pydantic import BaseModel

from addons import offloop
from proxy.api import models as m
from proxy.api.context import CTX
from proxy.api.errors import ApiError
from proxy.api.openapi import Handler
from proxy.api.params import decode_cursor, encode_cursor, params
from proxy.api.viewer import COOKIE, STATIC, present
from storage.base import RunFilter

if TYPE_CHECKING:
    import jinja2

TEMPLATES = Path(__file__).parent / "templates"
PAGE_PATHS = ("/", "/runs", "/conversations/", "/runs/", "/attempts/", "/steps/")
ACTIVE_SECONDS = 300  # a conversation with activity this recent is shown as active


@functools.cache
def templates() -> jinja2.Environment:
    """The templates, loaded with the first page asked for: its import is 1.8 MB of a sidecar that
    may never serve one."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=jinja2.select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        duration=present.duration,
        tokens=present.tokens,
        money=present.money,
        short_time=present.short_time,
        json_text=present.json_text,
    )
    env.globals.update(
        usage_parts=present.USAGE_PARTS, span_ms=present.span_ms, added_messages=present.ADDED_MESSAGES
    )
    return env


async def rendered(build: Callable[[], tuple[str, dict[str, Any]]], status: int = 200) -> web.Response:
    """The page `build` names (a template and its context), built and rendered beside the loop
    (`offloop.reading`): the proxy's traffic shares the loop, and a run of 90,000 messages took
    2 s to render."""

    def page() -> str:
        template, context = build()
        return templates().get_template(template).render(**context)

    return web.Response(text=await offloop.reading(page), status=status, content_type="text/html")


async def render(template: str, status: int = 200, **context: Any) -> web.Response:
    return await rendered(lambda: (template, context), status)


def dump(model: BaseModel) -> dict[str, Any]:
    """The API's JSON shape (aliases such as `error.class` included), as dicts for templates."""
    return model.model_dump(mode="json", by_alias=True)


# A page's payloads (requests, responses: `models.Payload`) are decoded JSON already, and a dump
# copies them (0.25 s for 90,000 messages, holding the GIL throughout): they are left out of it
# and the decoded ones put in their place.
_ATTEMPT_PAYLOADS: dict[str, Any] = {"response": True}
_STEP_PAYLOADS: dict[str, Any] = {
    "request": True,
    "response": True,
    "attempts": {"__all__": _ATTEMPT_PAYLOADS},
}


def dump_run(found: dict[str, Any]) -> dict[str, Any]:
    run = m.RunDetail.model_validate(found).model_dump(
        mode="json", by_alias=True, exclude={"steps": {"__all__": _STEP_PAYLOADS}}
    )
    for shown, step in zip(run["steps"], found.get("steps") or [], strict=True):
        _put_payloads(shown, step)
    return run


def dump_step(found: dict[str, Any]) -> dict[str, Any]:
    step = m.Step.model_validate(found).model_dump(mode="json", by_alias=True, exclude=_STEP_PAYLOADS)
    _put_payloads(step, found)
    return step


def _put_payloads(shown: dict[str, Any], step: dict[str, Any]) -> None:
    shown["request"], shown["response"] = step.get("request"), step.get("response")
    for attempt, source in zip(shown["attempts"], step.get("attempts") or [], strict=True):
        attempt["response"] = source.get("response")


def cleaned(request: web.Request) -> web.Request:
    """The request as the API would take it: without the fragment flag, and without the empty
    fields a filter form sends for filters left blank."""
    query = {k: v for k, v in request.query.items() if v != "" and k != "partial"}
    return request.clone(rel_url=request.rel_url.with_query(query))


def query_string(query: dict[str, Any], **changes: Any) -> str:
    merged = {k: v for k, v in {**query, **changes}.items() if v not in (None, "")}
    return urlencode(merged)


# ---- pages --------------------------------------------------------------------------------------


async def conversations(request: web.Request) -> web.Response:
    q = params(cleaned(request), m.ConversationsQuery)
    rows = await request.app[CTX].store.list_conversations(q.limit + 1, decode_cursor(q.cursor), q.q or None)
    query = dict(cleaned(request).query)
    partial = "partial" in request.query

    def build() -> tuple[str, dict[str, Any]]:
        page = [dump(m.Conversation.model_validate(r)) for r in rows[: q.limit]]
        last = page[-1] if len(rows) > q.limit else None
        now = time.time()
        for c in page:
            c["active"] = now - (present.parse_time(c["last_activity_at"]) or 0) < ACTIVE_SECONDS
        return "conversations_rows.html" if partial else "conversations.html", {
            "conversations": page,
            "next_cursor": encode_cursor(last["last_activity_at"], last["id"]) if last else None,
            "query": query,
            "qs": lambda **c: query_string(query, **c),
            "json_url": "/api/v1/conversations" + (f"?{query_string(query)}" if query else ""),
        }

    return await rendered(build)


async def runs(request: web.Request) -> web.Response:
    q = params(cleaned(request), m.RunsQuery)
    rows = await request.app[CTX].store.list_runs(q.where(), q.limit + 1, decode_cursor(q.cursor))
    query = dict(cleaned(request).query)
    partial = "partial" in request.query

    def build() -> tuple[str, dict[str, Any]]:
        page = [dump(m.Run.model_validate(r)) for r in rows[: q.limit]]
        return "runs_rows.html" if partial else "runs.html", {
            "runs": page,
            "next_cursor": encode_cursor(page[-1]["started_at"], page[-1]["id"])
            if len(rows) > q.limit
            else None,
            "query": query,
            "kinds": m.Kind.__args__,
            "statuses": m.Status.__args__,
            "qs": lambda **c: query_string(query, **c),
            "json_url": "/api/v1/runs" + (f"?{query_string(query)}" if query else ""),
        }

    return await rendered(build)


async def conversation(request: web.Request) -> web.Response:
    conversation_id = request.match_info["id"]
    store = request.app[CTX].store
    rows = await store.list_runs(RunFilter(conversation_id=conversation_id), m.MAX_LIMIT, None)
    if not rows:
        raise ApiError(404, "not_found", f"no conversation {conversation_id!r}")
    partial = "partial" in request.query

    def build() -> tuple[str, dict[str, Any]]:
        ordered = [dump(m.Run.model_validate(r)) for r in reversed(rows)]  # oldest first: the story in order
        return "conversation_rows.html" if partial else "conversation.html", {
            "conversation_id": conversation_id,
            "runs": ordered,
            "json_url": "/api/v1/runs?"
            + urlencode({"conversation_id": conversation_id, "limit": m.MAX_LIMIT}),
        }

    return await rendered(build)


async def _run(request: web.Request) -> dict[str, Any]:
    run_id = request.match_info["id"]
    found = await request.app[CTX].store.get_run(run_id, beside=offloop.reading)
    if found is None:
        raise ApiError(404, "not_found", f"no run {run_id!r}")
    return found


async def run(request: web.Request) -> web.Response:
    found = await _run(request)
    partial = "partial" in request.query

    def build() -> tuple[str, dict[str, Any]]:
        detail = dump_run(found)
        previous: dict[str, Any] | None = None
        for step in detail["steps"]:
            step["diff"] = present.step_diff(previous, step["request"])
            previous = step["request"]
        return "run_body.html" if partial else "run.html", {
            "run": detail,
            "bars": present.timeline(detail),
            "json_url": f"/api/v1/runs/{detail['id']}",
        }

    return await rendered(build)


async def step_transcript(request: web.Request) -> web.Response:
    """One step's whole request, loaded when its transcript is opened (a 200-step run stays light).
    A very long one shows its last messages unless all are asked for (`?all`)."""
    found = await _run(request)
    number = int(request.match_info["number"])
    every = "all" in request.query

    def build() -> tuple[str, dict[str, Any]]:
        step = next((s for s in found["steps"] if s["number"] == number), None)
        if step is None:
            raise ApiError(404, "not_found", f"no step {number} in run {found['id']!r}")
        shown = dump_step(step)
        messages = (shown["request"] or {}).get("messages") or []
        hidden = 0 if every else max(0, len(messages) - present.TRANSCRIPT_MESSAGES)
        return "transcript.html", {
            "step": shown,
            "messages": messages[hidden:],
            "hidden": hidden,
            "all_url": f"/runs/{found['id']}/steps/{number}?all",
        }

    return await rendered(build)


async def attempt(request: web.Request) -> web.Response:
    """An attempt's raw (redacted) bodies and its curl command, loaded when opened."""
    attempt_id = request.match_info["id"]
    found = await request.app[CTX].store.get_attempt(attempt_id, beside=offloop.reading)
    if found is None:
        raise ApiError(404, "not_found", f"no attempt {attempt_id!r}")

    def build() -> tuple[str, dict[str, Any]]:
        detail = dump(m.AttemptDetail.model_validate(found))
        return "attempt.html", {
            "attempt": detail,
            "request_body": present.pretty_body(detail["request_body"]),
            "response_body": present.pretty_body(detail["response_body"]),
            "curl": present.curl(detail),
            "json_url": f"/api/v1/attempts/{attempt_id}",
        }

    return await rendered(build)


# ---- the token, once ---------------------------------------------------------------------------


def _next(raw: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    return raw if raw and raw.startswith("/") and not raw.startswith("//") else "/"


async def login_form(request: web.Request) -> web.Response:
    return await render("login.html", next=_next(request.query.get("next")), failed=False)


async def login(request: web.Request) -> web.Response:
    form = await request.post()
    token = request.app[CTX].token
    given = str(form.get("token", ""))
    target = _next(str(form.get("next", "")))
    if token and not hmac.compare_digest(given.encode(), token.encode()):
        return await render("login.html", status=401, next=target, failed=True)
    response = web.HTTPSeeOther(target)
    if token:
        response.set_cookie(COOKIE, token, httponly=True, samesite="Strict", path="/")
    raise response


async def logout(request: web.Request) -> web.Response:
    response = web.HTTPSeeOther("/login")
    response.del_cookie(COOKIE, path="/")
    raise response


@web.middleware
async def login_redirect(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A person opening a page without the token is sent to the form, not shown a JSON 401."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        page = request.method == "GET" and (request.path == "/" or request.path.startswith(PAGE_PATHS[1:]))
        if e.status == 401 and page:
            raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs})) from None
        raise


def register(app: web.Application) -> None:
    app.middlewares.insert(0, login_redirect)  # outermost: it sees the auth middleware's 401
    app.router.add_get("/", conversations)
    app.router.add_get("/runs", runs)
    app.router.add_get("/runs/{id}", run)
    app.router.add_get("/runs/{id}/steps/{number:\\d+}", step_transcript)
    app.router.add_get("/conversations/{id}", conversation)
    app.router.add_get("/attempts/{id}", attempt)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_static("/static", STATIC, append_version=False)
