"""Where the terminal commands read recorded runs: the store itself (`--database`) or a running
sidecar's API (`--api URL`). Both answer in the API's JSON shapes."""

from __future__ import annotations

import asyncio
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson

from proxy.api import models as m
from proxy.api.params import decode_cursor, encode_cursor
from proxy.api.routes import VERSION
from storage.backends import is_postgres, store_for
from storage.records import timestamp


class ReadError(Exception):
    """The source cannot answer (unreachable, refused, unknown id): one line for the user."""


class Reader(Protocol):
    def runs(self, query: dict[str, Any]) -> dict[str, Any]: ...
    def run(self, run_id: str) -> dict[str, Any]: ...
    def export(self, run_id: str) -> dict[str, Any]: ...
    def follow(self) -> Iterator[dict[str, Any]]:
        """Runs as they are created and change, oldest change first, until interrupted."""
        ...

    def close(self) -> None: ...


class ApiReader:
    def __init__(self, base: str, token: str | None) -> None:
        self.base = base.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _open(self, path: str, query: dict[str, Any] | None = None, timeout: float | None = 30) -> Any:
        url = self.base + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        try:
            return urllib.request.urlopen(urllib.request.Request(url, headers=self.headers), timeout=timeout)
        except urllib.error.HTTPError as e:
            try:
                message = orjson.loads(e.read())["error"]["message"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                message = e.reason
            raise ReadError(f"{url}: {e.code} {message}") from None
        except (urllib.error.URLError, OSError) as e:
            raise ReadError(f"{url}: {getattr(e, 'reason', e)}") from None

    def _get(self, path: str, query: dict[str, Any] | None = None) -> Any:
        with self._open(path, query) as response:
            return orjson.loads(response.read())

    def runs(self, query: dict[str, Any]) -> dict[str, Any]:
        return self._get("/api/v1/runs", query)

    def run(self, run_id: str) -> dict[str, Any]:
        return self._get(f"/api/v1/runs/{urllib.parse.quote(run_id, safe='')}")

    def export(self, run_id: str) -> dict[str, Any]:
        return self._get(f"/api/v1/runs/{urllib.parse.quote(run_id, safe='')}/export")

    def follow(self) -> Iterator[dict[str, Any]]:
        with self._open("/api/v1/events", timeout=None) as stream:
            event = ""
            for line in _lines(stream):
                if line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:") and event == "run":
                    yield orjson.loads(line[5:].strip())
                elif not line:
                    event = ""

    def close(self) -> None:
        pass


def _lines(stream: Any) -> Iterator[str]:
    """Lines as soon as they arrive: `read1` returns what a chunk holds, where line iteration
    would wait for a full buffer."""
    pending = b""
    while chunk := stream.read1(65536):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode().rstrip("\r")


class StoreReader:
    """The store on its own loop: the commands are synchronous, the store is not."""

    def __init__(self, url: str, poll: float = 1.0) -> None:
        path = url.removeprefix("sqlite:///")
        if not is_postgres(url) and not Path(path).exists():  # opening would create an empty one
            raise ReadError(f"no database at {path} (--database sqlite:///path.db, or --api URL)")
        self.loop = asyncio.new_event_loop()
        self.store = store_for(url)
        self.poll = poll
        try:
            self.loop.run_until_complete(self.store.open())
        except Exception as e:
            self.close()
            raise ReadError(f"{self.store.location}: {e}") from None

    def _do[T](self, coroutine: Any) -> T:
        return self.loop.run_until_complete(coroutine)

    def runs(self, query: dict[str, Any]) -> dict[str, Any]:
        q = m.RunsQuery.model_validate(query)
        where = q.where()
        rows = self._do(self.store.list_runs(where, q.limit + 1, decode_cursor(q.cursor)))
        page = rows[: q.limit]
        cursor = encode_cursor(page[-1]["started_at"], page[-1]["id"]) if len(rows) > q.limit else None
        runs = [m.Run.model_validate(r).model_dump(mode="json", by_alias=True) for r in page]
        return {"runs": runs, "next_cursor": cursor}

    def _found(self, run_id: str) -> dict[str, Any]:
        found = self._do(self.store.get_run(run_id))
        if found is None:
            raise ReadError(f"no run {run_id!r}")
        return found

    def run(self, run_id: str) -> dict[str, Any]:
        return m.RunDetail.model_validate(self._found(run_id)).model_dump(mode="json", by_alias=True)

    def export(self, run_id: str) -> dict[str, Any]:
        """The same document as `GET /api/v1/runs/{id}/export`."""
        run = self._found(run_id)
        bodies = self._do(self.store.attempt_bodies(run_id))
        for step in run["steps"]:
            for attempt in step["attempts"]:
                attempt.update(bodies.get(attempt["id"], {}))
        export = m.Export(exported_at=timestamp(time.time()), generator=f"chatdebug-proxy {VERSION}", run=run)
        return export.model_dump(mode="json", by_alias=True)

    def follow(self) -> Iterator[dict[str, Any]]:
        """A store has no event stream: poll for runs that changed since the last look."""
        seen: dict[str, str] = {}
        since = timestamp(time.time() - 300)  # runs still open from the last few minutes change too
        while True:
            changed = []
            for run in self.runs({"since": since, "limit": m.MAX_LIMIT})["runs"]:
                if seen.get(run["id"]) != run["updated_at"]:
                    seen[run["id"]] = run["updated_at"]
                    changed.append(run)
            yield from sorted(changed, key=lambda r: r["updated_at"])
            time.sleep(self.poll)

    def close(self) -> None:
        if not self.loop.is_closed():
            self.loop.run_until_complete(self.store.close())
            self.loop.close()


def open_reader(database: str | None, api: str | None, token: str | None) -> Reader:
    if api:
        return ApiReader(api, token)
    url = database or "sqlite:///chatdebug.db"
    if not is_postgres(url) and (not url.startswith("sqlite:///") or url == "sqlite:///"):
        raise ReadError(
            "--database: expected sqlite:///relative.db, sqlite:////absolute.db"
            f" or postgresql://user:password@host/dbname, got {url!r}"
        )
    return StoreReader(url)
