-- The declared SQLite schema: what applying every migration in order must produce.
-- A test checks that it does; change it together with a new migration.

CREATE TABLE runs (
    no            INTEGER PRIMARY KEY,    -- the order of creation: clusters the log
    id            TEXT NOT NULL UNIQUE,
    status        TEXT NOT NULL,
    goal          TEXT NOT NULL,
    tool_sources  TEXT NOT NULL,          -- JSON list of tool files/modules
    parent_run    TEXT,
    steps_total   INTEGER NOT NULL,
    steps_done    INTEGER NOT NULL DEFAULT 0,
    reason        TEXT NOT NULL DEFAULT '',
    output        TEXT,                   -- JSON
    created_at    DOUBLE PRECISION NOT NULL,
    updated_at    DOUBLE PRECISION NOT NULL,
    finished_at   DOUBLE PRECISION,
    last_seq      INTEGER NOT NULL DEFAULT 0,
    owner         TEXT,                   -- host:pid:token of the engine running it
    lease_expires DOUBLE PRECISION,
    request       TEXT,                   -- the words the plan was made from, if a planner made it
    tokens        INTEGER NOT NULL DEFAULT 0,
    cost          DOUBLE PRECISION NOT NULL DEFAULT 0,
    pruned_at     DOUBLE PRECISION        -- when its payloads were dropped (charter prune)
);
CREATE INDEX runs_by_status ON runs (status, created_at);

CREATE TABLE events (
    run_no  INTEGER NOT NULL REFERENCES runs (no),
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    data    TEXT NOT NULL,                -- JSON
    PRIMARY KEY (run_no, seq)
) WITHOUT ROWID;

CREATE TABLE requests (
    id           INTEGER PRIMARY KEY,
    run_id       TEXT NOT NULL REFERENCES runs (id),
    kind         TEXT NOT NULL,
    step         TEXT,
    requested_by TEXT NOT NULL DEFAULT '',
    reason       TEXT NOT NULL DEFAULT '',
    data         TEXT NOT NULL DEFAULT '{}',
    created_at   DOUBLE PRECISION NOT NULL
);
CREATE INDEX requests_by_run ON requests (run_id);

CREATE TABLE effects (
    run_id   TEXT NOT NULL REFERENCES runs (id),
    seq      INTEGER NOT NULL,            -- the EffectRecorded event
    step_id  TEXT NOT NULL,
    item     INTEGER NOT NULL,            -- -1 for the step as a whole
    attempt  INTEGER NOT NULL,
    key      TEXT NOT NULL,               -- the idempotency key the tool was given
    tool     TEXT NOT NULL,
    target   TEXT NOT NULL,               -- JSON list: what it acted on
    result   TEXT,                        -- JSON
    at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX effects_by_key ON effects (key);
CREATE INDEX effects_by_time ON effects (at);

-- the fleet (see 0005_fleet.sql)
CREATE TABLE tasks (
    run_no   INTEGER NOT NULL REFERENCES runs (no),
    step     TEXT NOT NULL,               -- '' : look at the run again at due_at
    item     INTEGER NOT NULL,            -- -1 when the step has no items
    due_at   DOUBLE PRECISION NOT NULL,
    tool     TEXT NOT NULL DEFAULT '',    -- for limits that hold across the fleet
    owner    TEXT,                        -- the worker running it
    attempt  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_no, step, item)
) WITHOUT ROWID;
CREATE INDEX tasks_due ON tasks (due_at);

CREATE TABLE workers (
    id            TEXT PRIMARY KEY,       -- host:pid:token
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    DOUBLE PRECISION NOT NULL,
    heartbeat_at  DOUBLE PRECISION NOT NULL,
    expires_at    DOUBLE PRECISION NOT NULL,  -- its claims lapse after this unless it beats again
    concurrency   INTEGER NOT NULL,
    running       INTEGER NOT NULL DEFAULT 0,
    runs          TEXT NOT NULL DEFAULT '[]',   -- JSON: the runs it has work of
    lacking       TEXT NOT NULL DEFAULT '{}',   -- JSON: run id -> why it leaves that run's steps
    stopping      INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE tool_slots (
    tool     TEXT PRIMARY KEY,            -- a tool with a rate limit: when its next call may start
    next_at  DOUBLE PRECISION NOT NULL
);

CREATE TABLE payloads (
    run_no  INTEGER NOT NULL REFERENCES runs (no),
    hash    TEXT NOT NULL,                -- of the JSON text
    size    INTEGER NOT NULL,             -- bytes of the JSON text
    data    TEXT,                         -- the JSON text (NULL once pruned)
    PRIMARY KEY (run_no, hash)
) WITHOUT ROWID;
