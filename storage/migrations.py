"""The schema's whole history, oldest first, for both engines. Each migration runs once;
`schema_migrations` says which ran. Never edit a released migration: add one.

Most are plain SQL that SQLite and PostgreSQL both accept (PostgreSQL reads `INTEGER` as
`BIGINT` and `REAL` as `DOUBLE PRECISION`, SQLite's sizes: see `for_postgres`). Where an engine
has its own feature (SQLite's FTS5, PostgreSQL's pg_trgm and jsonb) the migration names the SQL
for each, or for one only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    name: str
    sqlite: str | None  # None: nothing to do on this engine
    postgres: str | None

    def sql(self, engine: str) -> str | None:
        return self.sqlite if engine == "sqlite" else self.postgres


MIGRATIONS: list[Migration] = []

_POSTGRES_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION"}


def for_postgres(sql: str) -> str:
    """SQLite's integers and reals are 64-bit; PostgreSQL's of those names are 32-bit."""
    return re.sub(r"\b(INTEGER|REAL)\b", lambda m: _POSTGRES_TYPES[m.group(1)], sql)


def migration(sql: str | None = None, *, sqlite: str | None = None, postgres: str | None = None) -> None:
    """Register the next migration: `sql` for both engines, or each engine's own."""
    name = f"m{len(MIGRATIONS) + 1:03d}"
    if sql is not None:
        sqlite, postgres = sql, for_postgres(sql)
    MIGRATIONS.append(Migration(name, sqlite, postgres))


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
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        total_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        reasoning_tokens INTEGER NOT NULL,
        error_class TEXT,
        error TEXT
    );
    -- one index per list filter, each continuing with the keyset (started_at, id), so a page
    -- walks its index in order and stops after `limit` rows, then with the other filter
    -- columns, so rows another filter rejects are rejected inside the index
    CREATE INDEX runs_by_started ON runs (started_at, id);
    CREATE INDEX runs_by_kind ON runs (kind, started_at, id, status, provider, model, error_class);
    CREATE INDEX runs_by_status ON runs (status, started_at, id, kind, provider, model, error_class);
    CREATE INDEX runs_by_conversation
        ON runs (conversation_id, started_at, id, kind, status, provider, model, error_class);
    CREATE INDEX runs_by_provider ON runs (provider, started_at, id, kind, status, model, error_class);
    CREATE INDEX runs_by_model ON runs (model, started_at, id, kind, status, provider, error_class);
    CREATE INDEX runs_by_error ON runs (error_class, started_at, id, kind, status, provider, model);
    CREATE INDEX runs_by_updated ON runs (updated_at);

    CREATE TABLE conversations (
        id TEXT PRIMARY KEY,
        first_message TEXT,
        started_at TEXT NOT NULL,
        last_activity_at TEXT NOT NULL,
        run_count INTEGER NOT NULL
    );
    CREATE INDEX conversations_by_activity ON conversations (last_activity_at, id);

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
    -- covers /stats: the window, its error classes and latencies, without reading attempts
    CREATE INDEX attempts_by_started ON attempts (started_at, error_class, duration_ms, ttfb_ms);

    CREATE TABLE attempt_bodies (
        id TEXT PRIMARY KEY REFERENCES attempts (id) ON DELETE CASCADE,
        request_body TEXT,
        response_body TEXT,
        request_truncated BOOLEAN NOT NULL,
        response_truncated BOOLEAN NOT NULL
    );
    """
)


# `q` finds text inside first messages: a trigram index answers rare and absent words without
# reading every run (PostgreSQL: a pg_trgm GIN index).
migration(
    sqlite="""
    CREATE VIRTUAL TABLE runs_fts USING fts5(
        first_message, content='runs', content_rowid='rowid', tokenize='trigram'
    );
    INSERT INTO runs_fts (runs_fts) VALUES ('rebuild');
    CREATE TRIGGER runs_fts_insert AFTER INSERT ON runs BEGIN
        INSERT INTO runs_fts (rowid, first_message) VALUES (new.rowid, new.first_message);
    END;
    CREATE TRIGGER runs_fts_delete AFTER DELETE ON runs BEGIN
        INSERT INTO runs_fts (runs_fts, rowid, first_message) VALUES ('delete', old.rowid, old.first_message);
    END;
    CREATE TRIGGER runs_fts_update AFTER UPDATE OF first_message ON runs
    WHEN old.first_message IS NOT new.first_message BEGIN
        INSERT INTO runs_fts (runs_fts, rowid, first_message) VALUES ('delete', old.rowid, old.first_message);
        INSERT INTO runs_fts (rowid, first_message) VALUES (new.rowid, new.first_message);
    END;
    """,
    postgres="""
    CREATE EXTENSION IF NOT EXISTS pg_trgm;
    CREATE INDEX runs_first_message_trgm ON runs USING gin (first_message gin_trgm_ops);
    """,
)


# What the user asked (boilerplate left out) and how the run was placed in its conversation.
migration(
    """
    ALTER TABLE runs ADD COLUMN prompt TEXT;
    ALTER TABLE runs ADD COLUMN conversation_source TEXT;
    """
)


# `q` finds text in the prompt as well as in the first message.
migration(
    sqlite="""
    DROP TRIGGER runs_fts_insert;
    DROP TRIGGER runs_fts_delete;
    DROP TRIGGER runs_fts_update;
    DROP TABLE runs_fts;
    CREATE VIRTUAL TABLE runs_fts USING fts5(
        first_message, prompt, content='runs', content_rowid='rowid', tokenize='trigram'
    );
    INSERT INTO runs_fts (runs_fts) VALUES ('rebuild');
    CREATE TRIGGER runs_fts_insert AFTER INSERT ON runs BEGIN
        INSERT INTO runs_fts (rowid, first_message, prompt) VALUES (new.rowid, new.first_message, new.prompt);
    END;
    CREATE TRIGGER runs_fts_delete AFTER DELETE ON runs BEGIN
        INSERT INTO runs_fts (runs_fts, rowid, first_message, prompt)
        VALUES ('delete', old.rowid, old.first_message, old.prompt);
    END;
    CREATE TRIGGER runs_fts_update AFTER UPDATE OF first_message, prompt ON runs
    WHEN old.first_message IS NOT new.first_message OR old.prompt IS NOT new.prompt BEGIN
        INSERT INTO runs_fts (runs_fts, rowid, first_message, prompt)
        VALUES ('delete', old.rowid, old.first_message, old.prompt);
        INSERT INTO runs_fts (rowid, first_message, prompt) VALUES (new.rowid, new.first_message, new.prompt);
    END;
    """,
    postgres="""
    CREATE INDEX runs_prompt_trgm ON runs USING gin (prompt gin_trgm_ops);
    CREATE INDEX conversations_first_message_trgm ON conversations USING gin (first_message gin_trgm_ops);
    """,
)


# What each call cost (null where the model's price is unknown); conversations sum their runs'.
migration(
    """
    ALTER TABLE runs ADD COLUMN cost TEXT;
    ALTER TABLE runs ADD COLUMN cost_total REAL;
    ALTER TABLE steps ADD COLUMN cost TEXT;
    ALTER TABLE attempts ADD COLUMN cost TEXT;
    ALTER TABLE conversations ADD COLUMN cost_total REAL;
    ALTER TABLE conversations ADD COLUMN kinds TEXT;
    ALTER TABLE conversations ADD COLUMN error_count INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE conversations ADD COLUMN total_tokens INTEGER NOT NULL DEFAULT 0;
    """
)


# Continuity across restarts and replicas: a request that extends a stored step's history (or
# names its response) belongs to that step's conversation.
migration(
    """
    ALTER TABLE steps ADD COLUMN request_hash TEXT;
    ALTER TABLE steps ADD COLUMN response_id TEXT;
    CREATE INDEX steps_by_request_hash ON steps (request_hash);
    CREATE INDEX steps_by_response_id ON steps (response_id);
    """
)


# Which replica last recorded a run: a replica that restarts ends only its own open runs.
migration(
    """
    ALTER TABLE runs ADD COLUMN recorded_by TEXT;
    CREATE INDEX runs_open_by_replica ON runs (status, recorded_by);
    """
)


# PostgreSQL keeps payloads as jsonb (SQLite's JSON is text with json functions over it).
migration(
    postgres="""
    ALTER TABLE runs ALTER COLUMN error TYPE jsonb USING error::jsonb,
                     ALTER COLUMN cost TYPE jsonb USING cost::jsonb;
    ALTER TABLE steps ALTER COLUMN request TYPE jsonb USING request::jsonb,
                      ALTER COLUMN response TYPE jsonb USING response::jsonb,
                      ALTER COLUMN usage TYPE jsonb USING usage::jsonb,
                      ALTER COLUMN error TYPE jsonb USING error::jsonb,
                      ALTER COLUMN cost TYPE jsonb USING cost::jsonb;
    ALTER TABLE attempts ALTER COLUMN error TYPE jsonb USING error::jsonb,
                         ALTER COLUMN request_headers TYPE jsonb USING request_headers::jsonb,
                         ALTER COLUMN response_headers TYPE jsonb USING response_headers::jsonb,
                         ALTER COLUMN response TYPE jsonb USING response::jsonb,
                         ALTER COLUMN cost TYPE jsonb USING cost::jsonb;
    """
)
