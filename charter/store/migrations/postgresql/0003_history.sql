-- Bounded history, and what the runs page shows and filters on.
--
-- Bulky parts of events (a model request resending a growing conversation, a large
-- tool output) are stored once per run, content-addressed, in `payloads`; an event's
-- data refers to them as {"$payload": hash}. `charter prune` drops the data of old
-- runs' payloads and keeps the hash and the size: the event still says what was there.
-- (Per run, not across runs: a run's writer holds its run, so writing a payload never
-- waits for another run's writer, and pruning a run touches its rows only.)
-- The run row gains the request, the tokens and the cost of its model calls, and
-- when its payloads were pruned.

ALTER TABLE runs ADD COLUMN request TEXT;
ALTER TABLE runs ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN cost DOUBLE PRECISION NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN pruned_at DOUBLE PRECISION;

UPDATE runs SET request = (
    SELECT CAST(e.data AS jsonb) ->> 'request' FROM events e
    WHERE e.run_no = runs.no AND e.seq = 1 AND e.type = 'RunCreated'
);
UPDATE runs SET
    tokens = coalesce((
        SELECT sum(coalesce((CAST(e.data AS jsonb) ->> 'input_tokens')::bigint, 0) + coalesce((CAST(e.data AS jsonb) ->> 'output_tokens')::bigint, 0))
        FROM events e WHERE e.run_no = runs.no AND e.type = 'ModelCalled'
    ), 0),
    cost = coalesce((
        SELECT sum(coalesce((CAST(e.data AS jsonb) ->> 'cost')::double precision, 0))
        FROM events e WHERE e.run_no = runs.no AND e.type = 'ModelCalled'
    ), 0);

CREATE TABLE payloads (
    run_no  BIGINT NOT NULL REFERENCES runs (no),
    hash    TEXT NOT NULL,                -- of the JSON text
    size    INTEGER NOT NULL,             -- bytes of the JSON text
    data    TEXT,                         -- the JSON text (NULL once pruned)
    PRIMARY KEY (run_no, hash)
);
