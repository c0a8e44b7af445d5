-- Acting on an alert (issue 17, item 2): the disposition a clinician records with the
-- acknowledgement (one of a fixed list, alerts.models.Disposition; NULL on alerts
-- acknowledged before it was required) and the end of a snooze (alerts.snoozed_until: a
-- reader compares it with its clock; the payload carries who, when and why). The stream
-- keeps patient_rollups.open_snoozed (open alerts with a snooze), so the worklist reads the
-- alerts of those patients only to place them in their tier as of now.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS disposition text;
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS snoozed_until timestamptz;
ALTER TABLE patient_rollups ADD COLUMN IF NOT EXISTS open_snoozed int NOT NULL DEFAULT 0;
