-- Queries of GET /metrics (web/metrics.py) and of retention (retention.py), same named-block format as
-- queries.sql. The metrics read the counter tables of migration 0010 (a few dozen rows, whatever the size
-- of run_log) and the partial indexes of open rows; the queues and open alerts reuse the console's queries.

-- metrics_runs --
-- Finished runs and the records they changed, by trigger, status and failure group (counters).
select trigger_type, status, error_group, runs, changed_records
from run_metric
order by 1, 2, 3;

-- metrics_duration_buckets --
-- The run duration histogram: cumulative counts per upper bound (every bound), by status.
select s.status, bound as le, s.sum_seconds,
       (select coalesce(sum(b.runs), 0) from run_duration_bucket b where b.status = s.status and b.le <= bound) as runs
from run_duration_sum s
cross join unnest(run_duration_bounds()) as bound
order by s.status, bound;

-- metrics_last_success --
-- Each category's last successful run (categories that never succeeded have no row here).
select category_id, extract(epoch from last_success_at)::double precision as last_success_s
from run_category_metric
where last_success_at is not null
order by category_id;

-- metrics_upstream_requests --
-- Upstream requests by answer code, as counted by the runs.
select code, requests from upstream_request_metric order by code;

-- metrics_now --
-- The database's clock: the queues' ages are measured by it, as the queues' times are written by it.
select now() as now;

-- retention_runs --
-- Delete a batch of finished runs older than their retention (FAILED ones have a longer one), oldest first.
-- Kept whatever their age: RUNNING runs, each category's latest run and latest success (the staleness check
-- and the console's overview read them), and runs an open alert points at.
with kept as (
    select (select r.id from run_log r where r.category_id = c.category_id order by r.id desc limit 1) as id
    from ops.cohorts c
    union all
    select (select r.id from run_log r
            where r.job_name = %(job_name)s and r.category_id = c.category_id and r.status = 'SUCCESS'
            order by r.finished_at desc limit 1)
    from ops.cohorts c
), victims as (
    select r.id
    from run_log r
    where r.status <> 'RUNNING'
      and r.finished_at < now() - make_interval(secs => case when r.status = 'FAILED' then %(failed_keep_s)s
                                                                else %(keep_s)s end)
      and r.id not in (select id from kept where id is not null)
      and not exists (select 1 from alert a where not a.resolved and a.run_id = r.id)
      and not exists (select 1 from alert a where not a.resolved and a.last_run_id = r.id)
    order by r.id
    limit %(limit)s
    for update of r skip locked
)
delete from run_log r
using victims v
where r.id = v.id and r.status <> 'RUNNING'
returning r.id;

-- retention_alerts --
-- Delete a batch of alerts resolved longer ago than their retention, oldest resolution first. An open alert
-- is never deleted.
with victims as (
    select id from alert
    where resolved and resolved_at < now() - make_interval(secs => %(keep_s)s)
    order by resolved_at, id
    limit %(limit)s
    for update skip locked
)
delete from alert a
using victims v
where a.id = v.id and a.resolved
returning a.id;
