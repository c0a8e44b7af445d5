-- The worklist names the red flags of a patient's open red_flag alerts (issue 17: "the red
-- flag is never named"): patient_rollups.open_red_flags, kept by the stream with the other
-- open-alert columns (alerts.rollup), filled here from the open alerts already stored.
ALTER TABLE patient_rollups ADD COLUMN IF NOT EXISTS open_red_flags text[] NOT NULL DEFAULT '{}';

UPDATE patient_rollups r SET open_red_flags = f.flags
FROM (SELECT a.org_id, a.patient_id, array_agg(DISTINCT d ORDER BY d) AS flags
      FROM alerts a CROSS JOIN LATERAL jsonb_array_elements_text(a.payload->'details') d
      WHERE a.kind = 'red_flag' AND a.status = 'open'
      GROUP BY a.org_id, a.patient_id) f
WHERE r.org_id = f.org_id AND r.patient_id = f.patient_id AND r.open_red_flags = '{}';
