-- Every query Charter runs, once, named. Parameters are :named.
-- Dialects translate the parameter style; they do not rewrite the SQL.

-- name: insert_run
INSERT INTO runs (id, status, goal, tool_sources, parent_run, steps_total, created_at, updated_at,
                  last_seq, owner, lease_expires)
VALUES (:id, :status, :goal, :tool_sources, :parent_run, :steps_total, :created_at, :created_at,
        0, :owner, :lease_expires)

-- name: insert_event
INSERT INTO events (run_no, seq, type, at, data)
VALUES ((SELECT no FROM runs WHERE id = :run_id), :seq, :type, :at, :data)

-- name: update_run
UPDATE runs SET status = :status, steps_done = :steps_done, reason = :reason, output = :output,
       updated_at = :updated_at, finished_at = :finished_at, last_seq = :last_seq
WHERE id = :id AND owner = :owner AND last_seq = :prev_seq

-- name: update_run_same_status
-- As update_run, for a batch that left the status as it was: the index on the status is not touched.
UPDATE runs SET steps_done = :steps_done, reason = :reason, output = :output,
       updated_at = :updated_at, finished_at = :finished_at, last_seq = :last_seq
WHERE id = :id AND owner = :owner AND last_seq = :prev_seq

-- name: select_events
SELECT e.seq, e.type, e.at, e.data FROM events e
WHERE e.run_no = (SELECT no FROM runs WHERE id = :run_id) AND e.seq > :after ORDER BY e.seq

-- name: select_run
SELECT id, status, goal, tool_sources, parent_run, steps_total, steps_done, reason, output,
       created_at, updated_at, finished_at, last_seq, owner, lease_expires
FROM runs WHERE id = :id

-- name: select_run_ids_like
SELECT id FROM runs WHERE id LIKE :prefix ESCAPE '\' ORDER BY created_at DESC LIMIT 5

-- name: select_runs
SELECT id, status, goal, tool_sources, parent_run, steps_total, steps_done, reason, output,
       created_at, updated_at, finished_at, last_seq, owner, lease_expires
FROM runs ORDER BY created_at DESC LIMIT :limit

-- name: select_unfinished_runs
SELECT id, owner, lease_expires FROM runs WHERE status IN ('running', 'replanning') ORDER BY created_at

-- name: claim_run
UPDATE runs SET owner = :owner, lease_expires = :lease_expires
WHERE id = :id AND (owner IS NULL OR owner = :owner OR owner = :expected_owner)

-- name: renew_lease
UPDATE runs SET lease_expires = :lease_expires WHERE id = :id AND owner = :owner

-- name: release_run
UPDATE runs SET owner = NULL, lease_expires = NULL WHERE id = :id AND owner = :owner

-- name: insert_request
INSERT INTO requests (run_id, kind, step, requested_by, reason, data, created_at)
VALUES (:run_id, :kind, :step, :requested_by, :reason, :data, :created_at)
RETURNING id

-- name: select_requests
SELECT id, run_id, kind, step, requested_by, reason, data, created_at FROM requests ORDER BY id

-- name: delete_request
DELETE FROM requests WHERE id = :id

-- name: drop_finished_requests
DELETE FROM requests WHERE run_id = :id
  AND EXISTS (SELECT 1 FROM runs WHERE id = :id AND status IN ('succeeded', 'failed', 'cancelled', 'rejected'))

-- name: select_schema_version
SELECT max(version) FROM schema_migrations

-- name: create_schema_migrations
CREATE TABLE IF NOT EXISTS schema_migrations
    (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)

-- name: select_migrations_done
SELECT version FROM schema_migrations

-- name: insert_migration
INSERT INTO schema_migrations (version, name, applied_at) VALUES (:v, :n, :t)

-- name: insert_effect
INSERT INTO effects (run_id, seq, step_id, item, attempt, key, tool, target, result, at)
VALUES (:run_id, :seq, :step_id, :item, :attempt, :key, :tool, :target, :result, :at)

-- name: select_effects
SELECT run_id, seq, step_id, item, attempt, key, tool, target, result, at FROM effects
WHERE (:run_id = '' OR run_id = :run_id) ORDER BY at, run_id, seq LIMIT :limit
