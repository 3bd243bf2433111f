"""Files that hold recorded traffic are the owner's alone (mode 0600), whatever the umask.

Recorded prompts and replies are as private as the conversations they come from: the database,
its WAL and shared-memory files and the spool are created 0600, and an existing one that others
can read is tightened (or, when it is not ours to change, warned about).
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

PRIVATE = 0o600


def make_private(fd: int, path: Path | str) -> None:
    """Give an open file mode 0600: a umask may have taken the owner's bits, an older file may
    have given others theirs."""
    mode = stat.S_IMODE(os.fstat(fd).st_mode)
    if mode == PRIVATE:
        return
    try:
        os.fchmod(fd, PRIVATE)
    except OSError as e:
        if mode & 0o077:
            log.warning("%s is readable by others (mode %04o) and cannot be tightened: %s", path, mode, e)
        return
    if mode & 0o077:
        log.warning("%s was readable by others (mode %04o): tightened to 0600", path, mode)


def create_private(path: Path | str) -> None:
    """Create `path` empty and 0600 if it is missing; tighten it if it exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE)
    except FileExistsError:
        tighten(path)  # opened for reading only: a read-only file is for SQLite to report
        return
    try:
        make_private(fd, path)
    finally:
        os.close(fd)


def tighten(path: Path | str) -> None:
    """Tighten `path` to 0600 if it exists (a WAL or shared-memory file left by an earlier run)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        make_private(fd, path)
    finally:
        os.close(fd)
