"""The one interface every storage backend implements (SQLite now, PostgreSQL later)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from storage.records import Row


@dataclass(slots=True)
class RunFilter:
    kind: str | None = None
    status: str | None = None
    conversation_id: str | None = None
    provider: str | None = None
    model: str | None = None
    since: str | None = None
    until: str | None = None
    has_error: bool | None = None
    q: str | None = None


class Store(Protocol):
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    async def close(self) -> None: ...

    async def write(self, rows: list[Row]) -> None:
        """Upsert rows in one transaction (runs before steps before attempts)."""

    async def interrupt_open(self, finished_at: str) -> int:
        """End every run, step and attempt left `in_progress` by a previous process."""

    async def ping(self) -> bool:
        """True when the database answers and accepts writes."""

    async def list_runs(
        self, where: RunFilter, limit: int, cursor: tuple[str, str] | None
    ) -> list[dict[str, Any]]:
        """Runs newest first, keyset-paginated after (started_at, id)."""

    async def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run with its steps, each with its attempts."""

    async def get_attempt(self, attempt_id: str) -> dict[str, Any] | None:
        """An attempt with its raw (redacted, capped) bodies."""
