-- The log is kept in the order runs were created in, not by their random ids.
--
-- Each run gets a number when it is created, and its events are clustered by
-- (number, seq). The runs in flight together (those created together) then keep
-- their events on a few pages, so a commit writes a few pages however many runs
-- the store holds; by random id, every run of a batch had a page of its own.

-- (The store applies migrations with foreign keys off and checks them all before committing, as
-- SQLite's way of rebuilding a table that others refer to requires.)

CREATE TABLE runs_numbered (
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
    lease_expires DOUBLE PRECISION
);
INSERT INTO runs_numbered (id, status, goal, tool_sources, parent_run, steps_total, steps_done, reason, output,
                           created_at, updated_at, finished_at, last_seq, owner, lease_expires)
SELECT id, status, goal, tool_sources, parent_run, steps_total, steps_done, reason, output,
       created_at, updated_at, finished_at, last_seq, owner, lease_expires
FROM runs ORDER BY created_at, rowid;

CREATE TABLE events_numbered (
    run_no  INTEGER NOT NULL REFERENCES runs_numbered (no),  -- "runs" once it is renamed below
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    data    TEXT NOT NULL,                -- JSON
    PRIMARY KEY (run_no, seq)
) WITHOUT ROWID;
INSERT INTO events_numbered (run_no, seq, type, at, data)
SELECT r.no, e.seq, e.type, e.at, e.data FROM events e JOIN runs_numbered r ON r.id = e.run_id;

DROP TABLE events;
DROP TABLE runs;
ALTER TABLE runs_numbered RENAME TO runs;
ALTER TABLE events_numbered RENAME TO events;
CREATE INDEX runs_by_status ON runs (status, created_at);
