-- The worklist's "My tasks" (issue 19) read every task of the scope's episode_outcomes rows as
-- JSON on each load: 126 ms of the admin's 172 ms median over 28,484 episode rows (rtm bench
-- --pages, docs/benchmarks.md). The open and overdue tasks are now kept beside the rows, in
-- the refresh's transaction (streams/db/outcome_rows.py replace_outcomes), so the list is an
-- index scan in its order. Status and step-up reason are as of the episode row's as_of.
CREATE TABLE IF NOT EXISTS episode_open_tasks (
    org_id          text NOT NULL,
    patient_id      text NOT NULL,
    episode_id      text NOT NULL,
    clinician_id    text NOT NULL,
    kind            text NOT NULL,
    due_on          date,
    overdue         boolean NOT NULL,
    step_up_reason  text  -- the episode's step-up decision's reason, if it took one
);
CREATE INDEX IF NOT EXISTS episode_open_tasks_order
    ON episode_open_tasks (org_id, overdue DESC, due_on, patient_id, kind);
CREATE INDEX IF NOT EXISTS episode_open_tasks_patient ON episode_open_tasks (org_id, patient_id);

-- the rows stored before: their open tasks, once (the table is empty only on first apply)
INSERT INTO episode_open_tasks
SELECT o.org_id, o.patient_id, o.episode_id, o.clinician_id, t->>'kind',
       (t->>'due_on')::date, t->>'status' = 'overdue',
       (SELECT d->>'reason' FROM jsonb_array_elements(o.decisions) d
        WHERE d->>'decision' = 'step_up' LIMIT 1)
FROM episode_outcomes o CROSS JOIN LATERAL jsonb_array_elements(o.tasks) t
WHERE t->>'status' IN ('open', 'overdue')
  AND NOT EXISTS (SELECT 1 FROM episode_open_tasks);

ANALYZE episode_open_tasks;
