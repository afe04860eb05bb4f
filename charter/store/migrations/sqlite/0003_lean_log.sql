-- Lean commits and typed control requests.
--
-- A transition writes what the guarantees need: its events and the run's row.
-- The per-step rows went (they were rewritten on every commit and read only by
-- tests; a run's steps are replayed from its log), and the log is clustered by
-- (run, seq) with no second index beside it.

DROP TABLE steps;

CREATE TABLE events_clustered (
    run_id  TEXT NOT NULL REFERENCES runs (id),
    seq     INTEGER NOT NULL,
    type    TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    data    TEXT NOT NULL,                -- JSON
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
INSERT INTO events_clustered (run_id, seq, type, at, data) SELECT run_id, seq, type, at, data FROM events;
DROP TABLE events;
ALTER TABLE events_clustered RENAME TO events;

-- Control requests by kind, with their own fields (an approval's step and note used to
-- travel as JSON inside the reason).
CREATE TABLE control_requests (
    id           INTEGER PRIMARY KEY,     -- the dialect's identity column
    run_id       TEXT NOT NULL REFERENCES runs (id),
    kind         TEXT NOT NULL,           -- pause | cancel | resume | approve_plan | reject_plan | revise_plan
                                          -- | approve_step | reject_step | retry_step
    step         TEXT,                    -- the step decided on or retried
    requested_by TEXT NOT NULL DEFAULT '',
    reason       TEXT NOT NULL DEFAULT '',
    data         TEXT NOT NULL DEFAULT '{}',  -- JSON: what a kind carries beyond that (a plan, a budget)
    created_at   DOUBLE PRECISION NOT NULL
);
INSERT INTO control_requests (id, run_id, kind, step, requested_by, reason, created_at)
SELECT id, run_id,
       CASE action WHEN 'approve' THEN 'approve_step' WHEN 'reject' THEN 'reject_step' ELSE action END,
       CASE WHEN action IN ('approve', 'reject') THEN json_extract(reason, '$.step') END,
       CASE WHEN action IN ('approve', 'reject') THEN coalesce(json_extract(reason, '$.by'), '') ELSE '' END,
       CASE WHEN action IN ('approve', 'reject') THEN coalesce(json_extract(reason, '$.note'), '') ELSE reason END,
       created_at
FROM requests;
DROP TABLE requests;
ALTER TABLE control_requests RENAME TO requests;
CREATE INDEX requests_by_run ON requests (run_id);
