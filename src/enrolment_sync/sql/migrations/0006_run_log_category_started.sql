-- 0006_run_log_category_started: the staleness check reads, per category, the last success (served by 0001's
-- run_log_job_category_success_idx) and the first attempt; this index serves the first attempt, and lets the
-- `check` command walk the distinct categories of a job without reading every run.
create index run_log_job_category_started_idx on run_log (job_name, category_id, started_at);
