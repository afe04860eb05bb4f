-- Charter's first schema: the event log and the state derived from it.

CREATE TABLE runs (
    id            TEXT PRIMARY KEY,
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
    run_id  TEXT NOT NULL REFERENCES runs (id),
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    data    TEXT NOT NULL,                -- JSON
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE steps (
    run_id      TEXT NOT NULL REFERENCES runs (id),
    step_id     TEXT NOT NULL,
    item        INTEGER NOT NULL,         -- -1 for the step as a whole
    status      TEXT NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 0,
    retry_at    DOUBLE PRECISION,
    started_at  DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    output      TEXT,                     -- JSON
    error       TEXT,                     -- JSON
    PRIMARY KEY (run_id, step_id, item)
);

CREATE TABLE requests (
    id         INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES runs (id),
    action     TEXT NOT NULL,             -- pause | cancel
    reason     TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX requests_by_run ON requests (run_id);
