"""The schema's whole history, oldest first. Each migration runs once; `schema_migrations` says which ran.

Plain SQL that SQLite and PostgreSQL both accept. Never edit a released migration: add one.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[str, str]] = []


def migration(sql: str) -> None:
    name = f"m{len(MIGRATIONS) + 1:03d}"
    MIGRATIONS.append((name, sql))


migration(
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        conversation_id TEXT,
        kind TEXT NOT NULL,
        classification_source TEXT NOT NULL,
        classification_reason TEXT NOT NULL,
        status TEXT NOT NULL,
        provider TEXT,
        api TEXT,
        model TEXT,
        endpoint TEXT,
        first_message TEXT,
        started_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        finished_at TEXT,
        step_count INTEGER NOT NULL,
        attempt_count INTEGER NOT NULL,
        usage TEXT,
        error_class TEXT,
        error TEXT
    );
    CREATE INDEX runs_by_started ON runs (started_at, id);
    CREATE INDEX runs_by_conversation ON runs (conversation_id, started_at);
    CREATE INDEX runs_by_updated ON runs (updated_at);
    CREATE INDEX runs_open ON runs (status) WHERE status = 'in_progress';

    CREATE TABLE steps (
        id TEXT PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        status TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        request TEXT,
        response TEXT,
        usage TEXT,
        error TEXT
    );
    CREATE INDEX steps_by_run ON steps (run_id, number);

    CREATE TABLE attempts (
        id TEXT PRIMARY KEY,
        step_id TEXT NOT NULL REFERENCES steps (id) ON DELETE CASCADE,
        run_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        status TEXT NOT NULL,
        method TEXT NOT NULL,
        url TEXT NOT NULL,
        http_status INTEGER,
        error_class TEXT,
        error TEXT,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        ttfb_ms REAL,
        duration_ms REAL,
        streamed BOOLEAN NOT NULL,
        request_bytes INTEGER NOT NULL,
        response_bytes INTEGER NOT NULL,
        request_headers TEXT,
        response_headers TEXT,
        retry_signal TEXT,
        response TEXT
    );
    CREATE INDEX attempts_by_step ON attempts (step_id, number);
    CREATE INDEX attempts_by_run ON attempts (run_id);
    CREATE INDEX attempts_by_started ON attempts (started_at);

    CREATE TABLE attempt_bodies (
        id TEXT PRIMARY KEY REFERENCES attempts (id) ON DELETE CASCADE,
        request_body TEXT,
        response_body TEXT,
        request_truncated BOOLEAN NOT NULL,
        response_truncated BOOLEAN NOT NULL
    );
    """
)
