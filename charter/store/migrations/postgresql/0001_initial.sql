-- Charter's schema on PostgreSQL: the same tables as SQLite's after its fourth
-- migration, with PostgreSQL's identity columns and types.

CREATE TABLE runs (
    no            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the order of creation: clusters the log
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
    lease_expires DOUBLE PRECISION
);
CREATE INDEX runs_by_status ON runs (status, created_at);

CREATE TABLE events (
    run_no  BIGINT NOT NULL REFERENCES runs (no),
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    data    TEXT NOT NULL,                -- JSON
    PRIMARY KEY (run_no, seq)
);

CREATE TABLE requests (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    seq      INTEGER NOT NULL,
    step_id  TEXT NOT NULL,
    item     INTEGER NOT NULL,
    attempt  INTEGER NOT NULL,
    key      TEXT NOT NULL,
    tool     TEXT NOT NULL,
    target   TEXT NOT NULL,
    result   TEXT,
    at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX effects_by_key ON effects (key);
CREATE INDEX effects_by_time ON effects (at);
