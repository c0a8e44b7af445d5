-- The lookups of an escalation's first step (streams/db/deliveries.py,
-- `escalation_recipients`): the patient's clinicians by (org_id, patient_id), and the care
-- teams of the alert's clinician by (org_id, clinician_id). Neither key led an index (the
-- primary keys start (org_id, clinician_id, ...) and (org_id, team, ...)), so each lookup read
-- every row of the organisation's index: 3.3 ms a lookup at 23,075 patient-clinician rows,
-- growing with the organisation, once per escalated alert inside the worker's batch
-- transaction (pg_stat_statements over one bench replay: 2,974 calls, 3.1 s).
CREATE INDEX IF NOT EXISTS patient_clinicians_patient ON patient_clinicians (org_id, patient_id);
CREATE INDEX IF NOT EXISTS care_team_members_clinician ON care_team_members (org_id, clinician_id);
