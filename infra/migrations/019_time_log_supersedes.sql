-- A time log that corrects an earlier one names it (clinician.time_logged's `supersedes`):
-- the month counts the correction instead of the log it replaces (billing/state.py,
-- PatientBillingState.counted_time_logs). Rows written before the field existed have none.
ALTER TABLE billing_time_logs ADD COLUMN IF NOT EXISTS supersedes text;
