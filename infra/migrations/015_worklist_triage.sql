-- The worklist's triage order (issue 17: "a new critical alert sinks"): a patient's tier is
-- that of their most urgent open alert (0 red flag or fall, 1 other critical, 2 high,
-- 3 adherence low, 4 inactivity, 5 billing at risk, 6 other, 7 none: alerts.rollup
-- alert_tier), and inside a tier who has waited longest comes first (tier_since: the
-- oldest open alert of that tier). Kept by the stream; filled here from the open alerts.
ALTER TABLE patient_rollups ADD COLUMN IF NOT EXISTS tier smallint NOT NULL DEFAULT 7;
ALTER TABLE patient_rollups ADD COLUMN IF NOT EXISTS tier_since timestamptz;

UPDATE patient_rollups r SET tier = t.tier, tier_since = t.since
FROM (SELECT org_id, patient_id, min(t) AS tier,
             (array_agg(fired_at ORDER BY t, fired_at))[1] AS since
      FROM (SELECT a.org_id, a.patient_id, a.fired_at,
                   CASE WHEN a.kind IN ('red_flag', 'fall') THEN 0
                        WHEN a.severity = 'critical' THEN 1 WHEN a.severity = 'high' THEN 2
                        WHEN a.kind = 'adherence_low' THEN 3 WHEN a.kind = 'inactivity' THEN 4
                        WHEN a.kind = 'billing_at_risk' THEN 5 ELSE 6 END AS t
            FROM alerts a WHERE a.status = 'open') x
      GROUP BY org_id, patient_id) t
WHERE r.org_id = t.org_id AND r.patient_id = t.patient_id;

-- the worklist's first page in this order is an index scan with the scope as a filter
CREATE INDEX IF NOT EXISTS patient_rollups_triage ON patient_rollups
    (org_id, tier, tier_since, patient_id);
DROP INDEX IF EXISTS patient_rollups_need;
