"""An append-only spool for rows the database could not take: orjson lines, fsync'd per batch.

While the database is slow, locked, read-only, full or gone, the writer appends here instead;
once it answers again, the spool is replayed in order and emptied. The spool is capped: past
the cap rows are dropped, and counted.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from storage.records import AttemptRow, BodyRow, Row, RunRow, StepRow, dumps

KINDS: dict[str, type[Row]] = {k.table: k for k in (RunRow, StepRow, AttemptRow, BodyRow)}


def encode(row: Row) -> bytes:
    values = {f.name: getattr(row, f.name) for f in fields(row)}
    return dumps({"table": row.table, "row": values}) + b"\n"


def decode(line: bytes) -> Row | None:
    try:
        item: dict[str, Any] = orjson.loads(line)
        return KINDS[item["table"]](**item["row"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None  # a torn last line from a crash mid-append


class Spool:
    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def __bool__(self) -> bool:
        return self.size > 0

    def append(self, rows: list[Row]) -> int:
        """Append rows durably; returns how many fit under the cap (the rest are the caller's to count)."""
        data = bytearray()
        room = self.max_bytes - self.size
        kept = 0
        for row in rows:
            line = encode(row)
            if len(data) + len(line) > room:
                break
            data += line
            kept += 1
        if data:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        return kept

    def batches(self, size: int) -> Iterator[list[Row]]:
        """The spooled rows in order, `size` at a time."""
        if not self.path.exists():
            return
        batch: list[Row] = []
        with self.path.open("rb") as f:
            for line in f:
                row = decode(line)
                if row is not None:
                    batch.append(row)
                if len(batch) >= size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
