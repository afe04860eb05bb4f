-- The effect ledger: every change a write tool made, kept beside the events that record it.

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
