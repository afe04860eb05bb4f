-- A fleet of workers: the work of runs any worker may take, and the workers themselves.
--
-- A run submitted to the fleet has the owner 'fleet'. Its work waits in `tasks`:
-- one row per unit (a step, or an item of a for_each) that is ready (no owner) or
-- running on a worker (its owner and attempt), and one row with the step '' for
-- the next time the run must be looked at (a retry's due time, an approval's
-- deadline). Only a writer holding the run's row (the run's lock) changes its
-- tasks. A worker's claims last until its heartbeat's `expires_at`.

CREATE TABLE tasks (
    run_no   BIGINT NOT NULL REFERENCES runs (no),
    step     TEXT NOT NULL,               -- '' : look at the run again at due_at
    item     INTEGER NOT NULL,            -- -1 when the step has no items
    due_at   DOUBLE PRECISION NOT NULL,
    tool     TEXT NOT NULL DEFAULT '',    -- for limits that hold across the fleet
    owner    TEXT,                        -- the worker running it
    attempt  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_no, step, item)
);
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
