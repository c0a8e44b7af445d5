-- The worker reads, for each batch, the readiness facts and episode starts of the patients
-- it touched (streams/db/readiness.py, `readiness_load`). Through the (org, patient, time)
-- index that visited every event of those patients to keep the few facts; this partial
-- index holds only the fact rows (a few per episode), so it costs the insert almost
-- nothing. Its predicate is the query's, literally (READINESS_EVENT_TYPES; a unit test
-- holds the two lists equal).
CREATE INDEX IF NOT EXISTS events_readiness_facts ON events (org_id, patient_id)
    WHERE type IN ('consent.recorded', 'plan_of_care.certified', 'procedure.recorded',
                   'rpm.enrolled', 'therapy_spend.reported', 'episode.started');
