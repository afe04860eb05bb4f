-- Every query Charter runs, once, named. Parameters are :named.
-- Dialects translate the parameter style; they do not rewrite the SQL.

-- name: insert_run
INSERT INTO runs (id, status, goal, tool_sources, parent_run, steps_total, created_at, updated_at,
                  last_seq, owner, lease_expires, request)
VALUES (:id, :status, :goal, :tool_sources, :parent_run, :steps_total, :created_at, :created_at,
        0, :owner, :lease_expires, :request)

-- name: insert_event
INSERT INTO events (run_no, seq, type, at, data)
VALUES ((SELECT no FROM runs WHERE id = :run_id), :seq, :type, :at, :data)

-- name: update_run
UPDATE runs SET status = :status, steps_done = :steps_done, reason = :reason, output = :output,
       updated_at = :updated_at, finished_at = :finished_at, last_seq = :last_seq, tokens = :tokens, cost = :cost
WHERE id = :id AND owner = :owner AND last_seq = :prev_seq

-- name: update_run_same_status
-- As update_run, for a batch that left the status as it was: the index on the status is not touched.
UPDATE runs SET steps_done = :steps_done, reason = :reason, output = :output,
       updated_at = :updated_at, finished_at = :finished_at, last_seq = :last_seq, tokens = :tokens, cost = :cost
WHERE id = :id AND owner = :owner AND last_seq = :prev_seq

-- name: select_events
SELECT e.seq, e.type, e.at, e.data FROM events e
WHERE e.run_no = (SELECT no FROM runs WHERE id = :run_id) AND e.seq > :after ORDER BY e.seq

-- name: select_run
SELECT id, status, goal, tool_sources, parent_run, steps_total, steps_done, reason, output,
       created_at, updated_at, finished_at, last_seq, owner, lease_expires, request, tokens, cost, pruned_at
FROM runs WHERE id = :id

-- name: insert_payload
-- A payload a run's events refer to (a run's writer holds the run: no other writer waits on
-- these rows). One that was pruned is written again if a run that was pruned goes on.
INSERT INTO payloads (run_no, hash, size, data)
VALUES ((SELECT no FROM runs WHERE id = :run_id), :hash, :size, :data)
ON CONFLICT (run_no, hash) DO UPDATE SET data = excluded.data WHERE payloads.data IS NULL

-- name: select_payloads
-- :hashes is a JSON list
SELECT hash, size, data FROM payloads
WHERE run_no = (SELECT no FROM runs WHERE id = :run_id) AND hash IN (SELECT value FROM json_each(:hashes))

-- name: select_payloads.postgresql
SELECT hash, size, data FROM payloads
WHERE run_no = (SELECT no FROM runs WHERE id = :run_id)
  AND hash IN (SELECT jsonb_array_elements_text(CAST(:hashes AS jsonb)))

-- name: select_run_ids_like
SELECT id FROM runs WHERE id LIKE :prefix ESCAPE '\' ORDER BY created_at DESC LIMIT 5

-- name: select_runs
-- Newest first, by the order of creation; every filter is optional (a NULL parameter lets all
-- through); the page after the run :before. Statuses come as a comma-wrapped list: ',failed,paused,'.
SELECT id, status, goal, tool_sources, parent_run, steps_total, steps_done, reason, output,
       created_at, updated_at, finished_at, last_seq, owner, lease_expires, request, tokens, cost, pruned_at
FROM runs
WHERE (CAST(:statuses AS TEXT) IS NULL OR :statuses LIKE '%,' || status || ',%')
  AND (CAST(:since AS DOUBLE PRECISION) IS NULL OR created_at >= :since)
  AND (CAST(:text AS TEXT) IS NULL OR lower(goal) LIKE :text ESCAPE '\' OR lower(coalesce(request, '')) LIKE :text ESCAPE '\'
       OR id LIKE :text ESCAPE '\')
  AND (CAST(:before AS TEXT) IS NULL OR no < (SELECT no FROM runs WHERE id = :before))
ORDER BY no DESC LIMIT :limit

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

-- The fleet: tasks of runs any worker may take, and the workers' heartbeats.

-- name: lock_run
-- The run's row, locked for the transaction (a dialect adds its row lock, and SKIP LOCKED to claim).
SELECT no, status, last_seq, tool_sources FROM runs WHERE id = :id AND owner = 'fleet'

-- name: select_run_tasks
SELECT t.step, t.item, t.due_at, t.owner, t.attempt, t.tool,
       (t.owner IS NULL OR (w.expires_at IS NOT NULL AND w.expires_at >= :now)) AS live
FROM tasks t LEFT JOIN workers w ON w.id = t.owner
WHERE t.run_no = :no

-- name: insert_task
INSERT INTO tasks (run_no, step, item, due_at, tool, owner, attempt)
VALUES (:no, :step, :item, :due_at, :tool, :owner, :attempt)

-- name: update_task
UPDATE tasks SET due_at = :due_at, tool = :tool, owner = :owner, attempt = :attempt
WHERE run_no = :no AND step = :step AND item = :item

-- name: delete_task
DELETE FROM tasks WHERE run_no = :no AND step = :step AND item = :item

-- name: select_due_tasks
-- Ready units and timers that came due, and units whose worker's claim lapsed, oldest first.
SELECT r.id, t.step, t.item, t.owner, t.tool, r.owner, r.tool_sources FROM tasks t
JOIN runs r ON r.no = t.run_no
LEFT JOIN workers w ON w.id = t.owner
WHERE t.due_at <= :now AND (t.owner IS NULL OR w.expires_at IS NULL OR w.expires_at < :now)
ORDER BY t.due_at LIMIT :limit

-- name: select_next_due
SELECT min(due_at) FROM tasks WHERE owner IS NULL

-- name: upsert_worker
INSERT INTO workers (id, host, pid, started_at, heartbeat_at, expires_at, concurrency, running, runs, lacking,
                     stopping)
VALUES (:id, :host, :pid, :started_at, :heartbeat_at, :expires_at, :concurrency, :running, :runs, :lacking,
        :stopping)
ON CONFLICT (id) DO UPDATE SET heartbeat_at = excluded.heartbeat_at, expires_at = excluded.expires_at,
    concurrency = excluded.concurrency, running = excluded.running, runs = excluded.runs,
    lacking = excluded.lacking, stopping = excluded.stopping

-- name: select_workers
SELECT id, host, pid, started_at, heartbeat_at, expires_at, concurrency, running, runs, lacking, stopping
FROM workers ORDER BY started_at

-- name: delete_worker
DELETE FROM workers WHERE id = :id

-- name: delete_workers_gone
-- Workers silent for long (a day past their lease): their tasks were taken over long ago.
DELETE FROM workers WHERE expires_at < :before
  AND NOT EXISTS (SELECT 1 FROM tasks WHERE owner = workers.id)

-- name: select_run_no
SELECT no FROM runs WHERE id = :id

-- name: insert_tool_slot
INSERT INTO tool_slots (tool, next_at) VALUES (:tool, 0) ON CONFLICT (tool) DO NOTHING

-- name: lock_tool_slot
-- A limited tool's row, locked for the transaction (a dialect adds its row lock): its next start.
SELECT next_at FROM tool_slots WHERE tool = :tool

-- name: count_tool_running
-- How many of a tool's units run on live workers: a statement of its own, after the lock, so that
-- it sees what the writer that held the lock before committed (read committed: one snapshot a statement).
SELECT count(*) FROM tasks t JOIN workers w ON w.id = t.owner
WHERE t.tool = :tool AND t.step <> '' AND w.expires_at >= :now

-- name: update_tool_slot
UPDATE tool_slots SET next_at = :next_at WHERE tool = :tool

-- name: delete_timer
-- A run's timer goes when someone takes the run (or sets a new one).
DELETE FROM tasks WHERE run_no = (SELECT no FROM runs WHERE id = :id) AND step = ''

-- name: insert_timer
INSERT INTO tasks (run_no, step, item, due_at, tool, owner, attempt)
VALUES ((SELECT no FROM runs WHERE id = :id), '', -1, :due_at, '', NULL, 0)

-- name: hand_over_run
-- A run that its host let go of while it waited (an approval with a deadline): the fleet takes it.
UPDATE runs SET owner = 'fleet', lease_expires = NULL WHERE id = :id AND owner IS NULL

-- name: select_stopped_runs
-- The runs a worker runs units of that are no longer going on (paused, cancelled, ended by someone else).
SELECT DISTINCT r.id FROM tasks t JOIN runs r ON r.no = t.run_no
WHERE t.owner = :owner AND t.step <> '' AND r.status NOT IN ('running', 'awaiting', 'replanning')

-- History ---------------------------------------------------------------------------------

-- name: select_prunable
-- Runs that ended before :before and have payloads to drop (failed ones kept if asked). A run
-- with none is left as it is: nothing would be gained, and it can still go on.
SELECT no FROM runs
WHERE pruned_at IS NULL AND status IN ('succeeded', 'failed', 'cancelled', 'rejected')
  AND coalesce(finished_at, updated_at) < :before AND (:keep_failed = 0 OR status <> 'failed')
  AND EXISTS (SELECT 1 FROM payloads p WHERE p.run_no = runs.no AND p.data IS NOT NULL)
ORDER BY no LIMIT :limit

-- name: count_payloads_of_run
SELECT count(*), coalesce(sum(size), 0) FROM payloads WHERE run_no = :no AND data IS NOT NULL

-- name: prune_payloads_of_run
UPDATE payloads SET data = NULL WHERE run_no = :no AND data IS NOT NULL

-- name: mark_run_pruned
UPDATE runs SET pruned_at = :now WHERE no = :no

-- name: stats_runs
SELECT status, count(*), count(pruned_at), min(created_at) FROM runs GROUP BY status ORDER BY status

-- name: stats_events
SELECT count(*), coalesce(sum(length(data)), 0) FROM events

-- name: stats_payloads
-- Payloads kept (count, bytes), then pruned (count, bytes).
SELECT count(data), coalesce(sum(CASE WHEN data IS NULL THEN 0 ELSE size END), 0),
       count(*) - count(data), coalesce(sum(CASE WHEN data IS NULL THEN size ELSE 0 END), 0)
FROM payloads

-- name: stats_effects
SELECT count(*), coalesce(sum(length(target) + coalesce(length(result), 0)), 0) FROM effects

-- name: stats_biggest_runs
-- The runs whose log and payloads take the most room.
SELECT r.id, r.status, r.created_at, r.pruned_at,
       (SELECT coalesce(sum(length(e.data)), 0) FROM events e WHERE e.run_no = r.no)
       + (SELECT coalesce(sum(p.size), 0) FROM payloads p WHERE p.run_no = r.no AND p.data IS NOT NULL) AS bytes
FROM runs r ORDER BY bytes DESC, r.no DESC LIMIT :limit

