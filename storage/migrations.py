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


# ---- /stats rollups (m009) ------------------------------------------------------------------
# Hourly sums kept by the database itself as rows change (insert, update, cascade, delete), so
# `/stats` over a month adds a few thousand rows instead of reading a million. Each change
# *appends* a delta row (the old values negated, the new ones): no writer updates a counter in
# place, so replicas never wait on each other's rows; the leader folds deltas into one row per
# key now and then (`storage/rollups.py`). Latencies are counted per logarithmic bucket (2 %
# wide), so percentiles of a long window come from counts, not a sort.
# (frozen here, not imported from `records`: a released migration never changes with the code)
_USAGE = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
_RUN_KEY = ("kind", "status", "provider", "model")
_RUN_SUMS = ("runs", "errors", *_USAGE, "cost", "costed")
_ROLLUP_TABLES = f"""
    CREATE TABLE run_rollup (
        hour TEXT NOT NULL, kind TEXT, status TEXT, provider TEXT, model TEXT,
        runs INTEGER NOT NULL, errors INTEGER NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL" for c in _USAGE)},
        cost REAL, costed INTEGER NOT NULL,
        folded BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX run_rollup_by_hour ON run_rollup (hour);
    CREATE INDEX run_rollup_unfolded ON run_rollup (hour) WHERE NOT folded;
    CREATE TABLE attempt_rollup (
        hour TEXT NOT NULL, error_class TEXT, attempts INTEGER NOT NULL,
        folded BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX attempt_rollup_by_hour ON attempt_rollup (hour);
    CREATE INDEX attempt_rollup_unfolded ON attempt_rollup (hour) WHERE NOT folded;
    CREATE TABLE latency_rollup (
        hour TEXT NOT NULL, metric TEXT NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL,
        folded BOOLEAN NOT NULL DEFAULT FALSE
    );
    CREATE INDEX latency_rollup_by_hour ON latency_rollup (hour, metric, bucket, n);
    CREATE INDEX latency_rollup_unfolded ON latency_rollup (hour) WHERE NOT folded;

    -- the folded hours of each day summed once more: a month is thirty rows per key
    CREATE TABLE run_rollup_daily (
        day TEXT NOT NULL, kind TEXT, status TEXT, provider TEXT, model TEXT,
        runs INTEGER NOT NULL, errors INTEGER NOT NULL,
        {", ".join(f"{c} INTEGER NOT NULL" for c in _USAGE)},
        cost REAL, costed INTEGER NOT NULL
    );
    CREATE INDEX run_rollup_daily_by_day ON run_rollup_daily (day);
    CREATE TABLE attempt_rollup_daily (day TEXT NOT NULL, error_class TEXT, attempts INTEGER NOT NULL);
    CREATE INDEX attempt_rollup_daily_by_day ON attempt_rollup_daily (day);
    CREATE TABLE latency_rollup_daily (
        day TEXT NOT NULL, metric TEXT NOT NULL, bucket INTEGER NOT NULL, n INTEGER NOT NULL
    );
    CREATE INDEX latency_rollup_daily_by_day ON latency_rollup_daily (day, metric, bucket, n);
"""


def _run_terms(row: str, sign: str, engine: str, named: bool = False) -> str:
    """One run's contribution to `_RUN_SUMS`, negated when `sign` is "-" (`named`: each term
    under its sum's name)."""
    flag = (lambda e: f"CASE WHEN {e} THEN 1 ELSE 0 END") if engine == "postgres" else (lambda e: f"({e})")
    terms = [
        "1",
        flag(f"{row}.error_class IS NOT NULL"),
        *(f"{row}.{c}" for c in _USAGE),
        f"{row}.cost_total",
        flag(f"{row}.cost_total IS NOT NULL"),
    ]
    if named:
        return ", ".join(f"{sign}{t} AS {name}" for t, name in zip(terms, _RUN_SUMS, strict=True))
    return ", ".join(f"{sign}{t}" for t in terms)


def latency_bucket(value: str) -> str:
    """The 2 %-wide logarithmic bucket of a latency in ms (ln 1.02); under 0.01 ms counts as 0.01.
    The same text in both engines and in `storage/stats.py`, which reads the buckets."""
    return (
        f"CAST(ceil(ln(CASE WHEN {value} < 0.01 THEN 0.01 ELSE {value} END) / 0.0198026272961797) AS INTEGER)"
    )


def _sqlite_rollup_triggers() -> str:
    key = ", ".join(_RUN_KEY)
    sums = ", ".join(_RUN_SUMS)
    run_insert = (
        f"INSERT INTO run_rollup (hour, {key}, {sums}) VALUES (substr({{r}}.started_at, 1, 13),"
        f" {', '.join(f'{{r}}.{c}' for c in _RUN_KEY)}, {{terms}});"
    )
    watched = ("started_at", *_RUN_KEY, "error_class", *_USAGE, "cost_total")
    changed = " OR ".join(f"old.{c} IS NOT new.{c}" for c in watched)
    add_run = run_insert.format(r="new", terms=_run_terms("new", "", "sqlite"))
    drop_run = run_insert.format(r="old", terms=_run_terms("old", "-", "sqlite"))

    def latency(r: str, sign: str) -> str:
        return "\n".join(
            f"INSERT INTO latency_rollup (hour, metric, bucket, n) SELECT substr({r}.started_at, 1, 13),"
            f" '{m}', {latency_bucket(f'{r}.{m}')}, {sign}1 WHERE {r}.{m} IS NOT NULL;"
            for m in ("duration_ms", "ttfb_ms")
        )

    def attempt(r: str, sign: str) -> str:
        return (
            "INSERT INTO attempt_rollup (hour, error_class, attempts)"
            f" VALUES (substr({r}.started_at, 1, 13), {r}.error_class, {sign}1);\n" + latency(r, sign)
        )

    attempt_changed = " OR ".join(
        f"old.{c} IS NOT new.{c}" for c in ("started_at", "error_class", "duration_ms", "ttfb_ms")
    )
    return f"""
    CREATE TRIGGER runs_rollup_insert AFTER INSERT ON runs BEGIN {add_run} END;
    CREATE TRIGGER runs_rollup_update AFTER UPDATE ON runs WHEN {changed} BEGIN
        {drop_run} {add_run}
    END;
    CREATE TRIGGER runs_rollup_delete AFTER DELETE ON runs BEGIN {drop_run} END;
    CREATE TRIGGER attempts_rollup_insert AFTER INSERT ON attempts BEGIN {attempt("new", "")} END;
    CREATE TRIGGER attempts_rollup_update AFTER UPDATE ON attempts WHEN {attempt_changed} BEGIN
        {attempt("old", "-")} {attempt("new", "")}
    END;
    CREATE TRIGGER attempts_rollup_delete AFTER DELETE ON attempts BEGIN {attempt("old", "-")} END;
    """


def _postgres_rollup_triggers() -> str:
    """Statement-level triggers over transition tables: one batch appends one delta row per key
    it changed, its old rows' values netted against its new ones."""
    key = ", ".join(_RUN_KEY)
    sums = ", ".join(_RUN_SUMS)
    nonzero = " OR ".join(f"SUM({c}) <> 0" for c in ("runs", "errors", *_USAGE, "costed"))

    def runs_from(table: str, sign: str) -> str:
        terms = _run_terms(table, sign, "postgres")
        return f"SELECT substr(started_at, 1, 13) AS hour, {key}, {terms} FROM {table}"

    run_delta = (
        f"INSERT INTO run_rollup (hour, {key}, {sums})"
        f" SELECT hour, {key}, {', '.join(f'SUM({c})' for c in _RUN_SUMS)}"
        f" FROM ({{rows}}) AS d ({'hour, ' + key + ', ' + sums}) GROUP BY hour, {key} HAVING {nonzero};"
    )

    def attempts_from(table: str, sign: str) -> str:
        return f"SELECT substr(started_at, 1, 13), error_class, {sign}1 FROM {table}"

    def latency_from(table: str, sign: str) -> str:
        return " UNION ALL ".join(
            f"SELECT substr(started_at, 1, 13), '{m}', {latency_bucket(m)}, {sign}1"
            f" FROM {table} WHERE {m} IS NOT NULL"
            for m in ("duration_ms", "ttfb_ms")
        )

    attempt_delta = (
        "INSERT INTO attempt_rollup (hour, error_class, attempts) SELECT hour, error_class, SUM(n)"
        " FROM ({rows}) AS d (hour, error_class, n) GROUP BY hour, error_class HAVING SUM(n) <> 0;"
    )
    latency_delta = (
        "INSERT INTO latency_rollup (hour, metric, bucket, n) SELECT hour, metric, bucket, SUM(n)"
        " FROM ({rows}) AS d (hour, metric, bucket, n) GROUP BY hour, metric, bucket HAVING SUM(n) <> 0;"
    )

    def function(name: str, sources: list[tuple[str, str]]) -> str:
        """A trigger function over whichever of the transition tables its event has."""
        ops = {
            "INSERT": [("new_rows", "")],
            "UPDATE": [("old_rows", "-"), ("new_rows", "")],
            "DELETE": [("old_rows", "-")],
        }
        branches = []
        for op, tables in ops.items():
            body = "\n".join(
                template.format(rows=" UNION ALL ".join(source(t, s) for t, s in tables))
                for template, source in sources
            )
            branches.append(f"IF TG_OP = '{op}' THEN\n{body}\nEND IF;")
        return (
            f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"
            + "\n".join(branches)
            + "\nRETURN NULL;\nEND\n$$;"
        )

    return "\n".join(
        (
            function("runs_rollup", [(run_delta, runs_from)]),
            function("attempts_rollup", [(attempt_delta, attempts_from), (latency_delta, latency_from)]),
            _statement_triggers("runs", "runs_rollup"),
            _statement_triggers("attempts", "attempts_rollup"),
        )
    )


def _statement_triggers(table: str, fn: str) -> str:
    return f"""
    CREATE TRIGGER {table}_rollup_insert AFTER INSERT ON {table}
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION {fn}();
    CREATE TRIGGER {table}_rollup_update AFTER UPDATE ON {table}
        REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
        FOR EACH STATEMENT EXECUTE FUNCTION {fn}();
    CREATE TRIGGER {table}_rollup_delete AFTER DELETE ON {table}
        REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION {fn}();
    """


def _rollup_backfill(engine: str) -> str:
    """The rollups of the rows already stored, as folded rows."""
    key = ", ".join(_RUN_KEY)
    sums = ", ".join(f"SUM({c})" for c in _RUN_SUMS)
    true = "TRUE" if engine == "postgres" else "1"
    latency = " UNION ALL ".join(
        f"SELECT substr(started_at, 1, 13) AS hour, '{m}' AS metric, {latency_bucket(m)} AS bucket"
        f" FROM attempts WHERE {m} IS NOT NULL"
        for m in ("duration_ms", "ttfb_ms")
    )
    return f"""
    INSERT INTO run_rollup (hour, {key}, {", ".join(_RUN_SUMS)}, folded)
    SELECT hour, {key}, {sums}, {true} FROM (
        SELECT substr(started_at, 1, 13) AS hour, {key}, {_run_terms("runs", "", engine, named=True)}
        FROM runs
    ) AS r GROUP BY hour, {key};
    INSERT INTO attempt_rollup (hour, error_class, attempts, folded)
    SELECT substr(started_at, 1, 13), error_class, COUNT(*), {true} FROM attempts
    GROUP BY substr(started_at, 1, 13), error_class;
    INSERT INTO latency_rollup (hour, metric, bucket, n, folded)
    SELECT hour, metric, bucket, COUNT(*), {true} FROM ({latency}) AS l GROUP BY hour, metric, bucket;
    INSERT INTO run_rollup_daily (day, {key}, {", ".join(_RUN_SUMS)})
    SELECT substr(hour, 1, 10), {key}, {sums} FROM run_rollup GROUP BY substr(hour, 1, 10), {key};
    INSERT INTO attempt_rollup_daily (day, error_class, attempts)
    SELECT substr(hour, 1, 10), error_class, SUM(attempts) FROM attempt_rollup
    GROUP BY substr(hour, 1, 10), error_class;
    INSERT INTO latency_rollup_daily (day, metric, bucket, n)
    SELECT substr(hour, 1, 10), metric, bucket, SUM(n) FROM latency_rollup
    GROUP BY substr(hour, 1, 10), metric, bucket;
    """


migration(
    sqlite=_ROLLUP_TABLES + _sqlite_rollup_triggers() + _rollup_backfill("sqlite"),
    postgres=for_postgres(_ROLLUP_TABLES) + _postgres_rollup_triggers() + _rollup_backfill("postgres"),
)


# ---- PostgreSQL: day partitions (m010) --------------------------------------------------------
# Runs, steps, attempts and bodies are partitioned by the day their run began (`day`: days
# since 1970, read from the time in the run's id; ids without one are day 0), so retention drops
# a whole day at once instead of deleting its rows. A run's rows share its partition; each
# table's key is (id, day). The tables are rebuilt with their rows, indexes and triggers.
# `chatdebug_partition(day)` makes a day's partitions (the writer calls it for each new day);
# `chatdebug_drop_day(day)` drops them.
_PARTITIONED = ("runs", "steps", "attempts", "attempt_bodies")
migration(
    postgres="""
    CREATE FUNCTION chatdebug_day(run_id TEXT) RETURNS INTEGER LANGUAGE sql IMMUTABLE AS $$
        SELECT COALESCE(
            (('x' || lpad(substring(run_id FROM '^[a-z]+_([0-9a-f]{12})'), 16, '0'))::bit(64)::bigint
             / 86400000)::integer, 0)
    $$;

    CREATE FUNCTION chatdebug_partition(d INTEGER) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE t TEXT;
    BEGIN
        IF to_regclass('attempt_bodies_d' || d) IS NOT NULL THEN
            RETURN;  -- made already: no lock on the tables
        END IF;
        -- making one waits for any vacuum of the table its key refers to, which yields after a
        -- second: longer than the writes' lock timeout (once a day; the writer's queue holds rows)
        PERFORM set_config('lock_timeout', '15s', true);
        PERFORM pg_advisory_xact_lock(7161137266270867968);  -- one maker at a time
        FOREACH t IN ARRAY ARRAY['runs', 'steps', 'attempts', 'attempt_bodies'] LOOP
            EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF %I FOR VALUES FROM (%s) TO (%s)',
                           t || '_d' || d, t, d, d + 1);
        END LOOP;
    END $$;

    CREATE FUNCTION chatdebug_drop_day(d INTEGER) RETURNS void LANGUAGE plpgsql AS $$
    DECLARE t TEXT;
    BEGIN
        -- children first; a partition another table's key refers to is detached before it goes
        FOREACH t IN ARRAY ARRAY['attempt_bodies', 'attempts', 'steps', 'runs'] LOOP
            IF to_regclass(t || '_d' || d) IS NOT NULL THEN
                EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', t, t || '_d' || d);
                EXECUTE format('DROP TABLE %I', t || '_d' || d);
            END IF;
        END LOOP;
    END $$;

    DO $$
    DECLARE
        indexes TEXT[];
        statement TEXT;
        t TEXT;
        d INTEGER;
    BEGIN
        SELECT array_agg(indexdef) INTO indexes FROM pg_indexes
        WHERE schemaname = current_schema()
          AND tablename IN ('runs', 'steps', 'attempts', 'attempt_bodies')
          AND indexname NOT LIKE '%\\_pkey';
        ALTER TABLE runs ADD COLUMN day INTEGER;
        UPDATE runs SET day = chatdebug_day(id);
        ALTER TABLE steps ADD COLUMN day INTEGER;
        UPDATE steps SET day = chatdebug_day(run_id);
        ALTER TABLE attempts ADD COLUMN day INTEGER;
        UPDATE attempts SET day = chatdebug_day(run_id);
        ALTER TABLE attempt_bodies ADD COLUMN day INTEGER;
        UPDATE attempt_bodies b SET day = a.day FROM attempts a WHERE a.id = b.id;
        FOREACH t IN ARRAY ARRAY['runs', 'steps', 'attempts', 'attempt_bodies'] LOOP
            EXECUTE format('ALTER TABLE %I RENAME TO %I', t, t || '_unpartitioned');
            EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS) PARTITION BY RANGE (day)',
                           t, t || '_unpartitioned');
            EXECUTE format('ALTER TABLE %I ALTER COLUMN day SET NOT NULL', t);
        END LOOP;
        FOR d IN SELECT DISTINCT day FROM runs_unpartitioned LOOP
            PERFORM chatdebug_partition(d);
        END LOOP;
        FOREACH t IN ARRAY ARRAY['runs', 'steps', 'attempts', 'attempt_bodies'] LOOP
            EXECUTE format('INSERT INTO %I SELECT * FROM %I WHERE day IS NOT NULL', t, t || '_unpartitioned');
        END LOOP;
        DROP TABLE attempt_bodies_unpartitioned, attempts_unpartitioned, steps_unpartitioned,
                   runs_unpartitioned;
        ALTER TABLE runs ADD PRIMARY KEY (id, day);
        ALTER TABLE steps ADD PRIMARY KEY (id, day);
        ALTER TABLE attempts ADD PRIMARY KEY (id, day);
        ALTER TABLE attempt_bodies ADD PRIMARY KEY (id, day);
        ALTER TABLE steps ADD FOREIGN KEY (run_id, day) REFERENCES runs (id, day) ON DELETE CASCADE;
        ALTER TABLE attempts ADD FOREIGN KEY (step_id, day) REFERENCES steps (id, day) ON DELETE CASCADE;
        ALTER TABLE attempt_bodies ADD FOREIGN KEY (id, day) REFERENCES attempts (id, day) ON DELETE CASCADE;
        FOREACH statement IN ARRAY COALESCE(indexes, ARRAY[]::TEXT[]) LOOP
            EXECUTE statement;
        END LOOP;
    END $$;

    """
    + _statement_triggers("runs", "runs_rollup")
    + _statement_triggers("attempts", "attempts_rollup")
)


# ---- PostgreSQL: no foreign keys (m011) -------------------------------------------------------
# A foreign key costs every written row a lookup in its parent's index (a quarter of a batch's
# time on the server). The store does their two jobs itself: a batch leaves out the rows whose
# run, step or attempt is gone (`PostgresStore._write`), and a delete takes each table's rows of
# its runs (`_DELETE_RUNS`). A day's partitions no longer wait on each other to be made or dropped.
migration(
    postgres="""
    ALTER TABLE attempt_bodies DROP CONSTRAINT IF EXISTS attempt_bodies_id_day_fkey;
    ALTER TABLE attempts DROP CONSTRAINT IF EXISTS attempts_step_id_day_fkey;
    ALTER TABLE steps DROP CONSTRAINT IF EXISTS steps_run_id_day_fkey;
    """
)


# ---- PostgreSQL: one trigram index for `q` (m012) ---------------------------------------------
# `q` looks in a run's prompt and its first message. An index on each, in every day partition,
# had the planner weigh a BitmapOr of 60 trigram indexes over a month of partitions: 30-40 ms of
# planning per search, at any size. One index over both texts, joined by a character `q` never
# holds, finds the same runs with one index scan per partition (queries.TEXT_SEARCH_ONE_INDEX).
migration(
    postgres="""
    DROP INDEX IF EXISTS runs_first_message_trgm;
    DROP INDEX IF EXISTS runs_prompt_trgm;
    CREATE INDEX runs_text_trgm ON runs
        USING gin ((COALESCE(prompt, '') || chr(31) || COALESCE(first_message, '')) gin_trgm_ops);
    """
)
