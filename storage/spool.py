"""An append-only spool for rows the database could not take: orjson lines, fsync'd per batch.

While the database is slow, locked, read-only, full or gone, the writer appends here instead;
once it answers again, the spool is replayed in order and emptied. The spool is capped: past
the cap rows are dropped, and counted.

Only whole lines count. A full disk (ENOSPC, or EFBIG past a file-size limit) can stop an
append part-way: the spool cuts itself back to its last whole line and reports only the rows
that are wholly on disk, so the caller counts the rest as dropped and the next append never
glues onto a torn tail. A tail torn by a crash is cut before the next append, and any line
that does not decode is skipped at replay; both are counted in `torn`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from storage.files import PRIVATE, make_private, tighten
from storage.records import AttemptRow, BodyRow, Row, RunRow, StepRow, dumps

log = logging.getLogger(__name__)

KINDS: dict[str, type[Row]] = {k.table: k for k in (RunRow, StepRow, AttemptRow, BodyRow)}


def encode(row: Row) -> bytes:
    values = {f.name: getattr(row, f.name) for f in fields(row)}
    return dumps({"table": row.table, "row": values}) + b"\n"


def decode(line: bytes) -> Row | None:
    try:
        item: dict[str, Any] = orjson.loads(line)
        return KINDS[item["table"]](**item["row"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None  # a line torn by a crash mid-append


class Spool:
    def __init__(self, path: Path | str, max_bytes: int) -> None:
        self.path = Path(path)  # used as given: the caller decides where the spool lives
        self.max_bytes = max_bytes
        self.torn = 0  # rows lost to torn or undecodable lines, found and skipped
        self._tail_checked = False  # the file may end in a line a crash tore: checked once

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def __bool__(self) -> bool:
        return self.size > 0

    def take_torn(self) -> int:
        """Torn rows found since the last call (the caller counts them as dropped)."""
        torn, self.torn = self.torn, 0
        return torn

    def append(self, rows: list[Row]) -> int:
        """Append rows durably; returns how many are wholly on disk (the caller counts the rest)."""
        data = bytearray()
        ends: list[int] = []  # where each row's line ends in `data`
        room = self.max_bytes - self.size
        for row in rows:
            line = encode(row)
            if len(data) + len(line) > room:
                break
            data += line
            ends.append(len(data))
        if not data:
            return 0
        fd = self._open()
        try:
            start = self._whole_end(fd)
            written = _write_all(fd, data)
            kept = sum(1 for end in ends if end <= written)
            try:
                if kept < len(ends):
                    os.ftruncate(fd, start + (ends[kept - 1] if kept else 0))
                os.fsync(fd)
            except OSError as e:  # nothing here is known durable: keep none of it
                log.debug("spool fsync failed: %s", e)
                self._cut(fd, start)
                return 0
            if kept < len(ends):
                log.debug("spool write stopped after %d of %d bytes", written, len(data))
            return kept
        finally:
            os.close(fd)

    def batches(self, size: int) -> Iterator[list[Row]]:
        """The spooled rows in order, `size` at a time (lines that do not decode are counted in `torn`)."""
        if not self.path.exists():
            return
        tighten(self.path)  # left by an earlier process, perhaps under a looser umask
        batch: list[Row] = []
        with self.path.open("rb") as f:
            for line in f:
                row = decode(line)
                if row is None:
                    self.torn += 1
                    continue
                batch.append(row)
                if len(batch) >= size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    # ---- whole lines only ------------------------------------------------------------------

    def _open(self) -> int:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, PRIVATE)
        try:
            make_private(fd, self.path)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _whole_end(self, fd: int) -> int:
        """The file's size once it ends in a whole line: a torn tail is cut (and counted)."""
        size = os.fstat(fd).st_size
        if self._tail_checked or size == 0:
            self._tail_checked = True
            return size
        if os.pread(fd, 1, size - 1) != b"\n":
            keep = _last_line_end(fd, size)
            if decode(os.pread(fd, size - keep, keep)) is not None:
                os.write(fd, b"\n")  # whole but for its newline
                size += 1
            else:
                log.warning("the spool %s ended in a torn line (a crash mid-append): cut", self.path)
                self.torn += 1
                os.ftruncate(fd, keep)
                size = keep
        self._tail_checked = True
        return size

    def _cut(self, fd: int, size: int) -> None:
        try:
            os.ftruncate(fd, size)
        except OSError as e:  # the tail may be torn: check it before the next append
            log.debug("spool truncate failed: %s", e)
            self._tail_checked = False


def _write_all(fd: int, data: bytes | bytearray) -> int:
    """Write until done or the disk refuses (ENOSPC, EFBIG, EIO); returns the bytes written."""
    view = memoryview(data)
    done = 0
    while done < len(view):
        try:
            n = os.write(fd, view[done:])
        except OSError as e:
            log.debug("spool write failed: %s", e)
            break
        if n <= 0:
            break
        done += n
    return done


def _last_line_end(fd: int, size: int, chunk: int = 1 << 16) -> int:
    """The offset just past the last newline before `size` (0 when there is none)."""
    pos = size
    while pos > 0:
        start = max(0, pos - chunk)
        found = os.pread(fd, pos - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        pos = start
    return 0
