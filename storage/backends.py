"""Which backend a `--database` URL names, and the store for it."""

from __future__ import annotations

from storage.base import Store

SQLITE = "sqlite:///"
POSTGRES = ("postgresql://", "postgres://")


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES)


def store_for(url: str, *, replica: str | None = None) -> Store:
    """`sqlite:///rel.db`, `sqlite:////abs.db` or `postgresql://user:password@host:port/dbname`;
    `replica` names this sidecar in a shared store (the host name by default)."""
    if is_postgres(url):
        from storage.postgres import PostgresStore  # the pool and its driver only when asked for

        return PostgresStore(url, replica=replica)
    if url.startswith(SQLITE) and url != SQLITE:
        from storage.sqlite import SqliteStore

        return SqliteStore(url.removeprefix(SQLITE))
    raise ValueError(
        "expected sqlite:///relative.db, sqlite:////absolute.db"
        f" or postgresql://user:password@host/dbname, got {url!r}"
    )
