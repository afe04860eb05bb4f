-- Every query Charter runs, once, named. Parameters are :named.
-- Dialects translate the parameter style; they do not rewrite the SQL.

-- name: insert_run
INSERT INTO runs (id, status, goal, tool_sources, parent_run, steps_total, created_at, updated_at,
                  last_seq, owner, lease_expires)
VALUES (:id, :status, :goal, :tool_sources, :parent_run, :steps_total, :created_at, :created_at,
        1, :owner, :lease_expires)

-- name: insert_event
INSERT INTO events (run_id, seq, type, at, data) VALUES (:run_id, :seq, :type, :at, :data)

-- name: update_run
UPDATE runs SET status = :status, steps_done = :steps_done, reason = :reason, output = :output,
       updated_at = :updated_at, finished_at = :finished_at, last_seq = :last_seq
WHERE id = :id AND owner = :owner AND last_seq = :prev_seq

-- name: upsert_step
INSERT INTO steps (run_id, step_id, item, status, attempt, retry_at, started_at, finished_at, output, error)
VALUES (:run_id, :step_id, :item, :status, :attempt, :retry_at, :started_at, :finished_at, :output, :error)
ON CONFLICT (run_id, step_id, item) DO UPDATE SET
    status = excluded.status, attempt = excluded.attempt, retry_at = excluded.retry_at,
    started_at = excluded.started_at, finished_at = excluded.finished_at,
    output = excluded.output, error = excluded.error

-- name: select_events
SELECT seq, type, at, data FROM events WHERE run_id = :run_id AND seq > :after ORDER BY seq

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

-- name: select_steps
SELECT step_id, item, status, attempt, retry_at, started_at, finished_at, output, error
FROM steps WHERE run_id = :run_id ORDER BY step_id, item

-- name: claim_run
UPDATE runs SET owner = :owner, lease_expires = :lease_expires
WHERE id = :id AND (owner IS NULL OR owner = :owner OR owner = :expected_owner)

-- name: renew_lease
UPDATE runs SET lease_expires = :lease_expires WHERE id = :id AND owner = :owner

-- name: release_run
UPDATE runs SET owner = NULL, lease_expires = NULL WHERE id = :id AND owner = :owner

-- name: insert_request
INSERT INTO requests (run_id, action, reason, created_at) VALUES (:run_id, :action, :reason, :created_at)

-- name: select_requests
SELECT id, run_id, action, reason FROM requests ORDER BY id

-- name: delete_request
DELETE FROM requests WHERE id = :id

-- name: drop_finished_requests
DELETE FROM requests WHERE run_id = :id
  AND EXISTS (SELECT 1 FROM runs WHERE id = :id AND status IN ('succeeded', 'failed', 'cancelled', 'rejected'))

-- name: select_schema_version
SELECT max(version) FROM schema_migrations

-- name: insert_effect
INSERT INTO effects (run_id, seq, step_id, item, attempt, key, tool, target, result, at)
VALUES (:run_id, :seq, :step_id, :item, :attempt, :key, :tool, :target, :result, :at)

-- name: select_effects
SELECT run_id, seq, step_id, item, attempt, key, tool, target, result, at FROM effects
WHERE (:run_id = '' OR run_id = :run_id) ORDER BY at, run_id, seq LIMIT :limit
