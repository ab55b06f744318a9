-- 0010_metrics_retention: what GET /metrics reads (docs/metrics.md), the `ops` schema of views for the SQL
-- editor, and the indexes retention deletes through.
--
-- Metrics come from counter tables that a trigger on run_log keeps up to date as each run finishes (in the
-- transaction that finishes it, whichever process that is: `serve`, a `sync` command, a recovery), so a scrape
-- reads a few dozen rows however many runs there are, and the counters never go down when retention deletes
-- old runs. Nothing else writes these tables; the migration fills them from the runs already logged.

create table run_metric (
    trigger_type           text             not null,
    status                 text             not null,
    error_group            text             not null,  -- '' for a success
    runs                   bigint           not null default 0,
    changed_records        bigint           not null default 0,
    primary key (trigger_type, status, error_group)
);

-- The duration histogram: runs per bucket (the smallest bound at or above the duration; seconds, 'Infinity'
-- is +Inf), by run status; a scrape adds them up into Prometheus' cumulative buckets.
create table run_duration_bucket (
    status text             not null,
    le     double precision not null,
    runs   bigint           not null default 0,
    primary key (status, le)
);
create table run_duration_sum (
    status      text             primary key,
    runs        bigint           not null default 0,
    sum_seconds double precision not null default 0
);

create table run_category_metric (
    category_id     bigint      primary key,
    last_success_at timestamptz,
    last_finished_at timestamptz not null
);

-- Upstream requests by answer: the HTTP status code, or 'none' (timeout, connection refused).
create table upstream_request_metric (
    code     text   primary key,
    requests bigint not null default 0
);

alter table run_metric              enable row level security;
alter table run_duration_bucket     enable row level security;
alter table run_duration_sum        enable row level security;
alter table run_category_metric     enable row level security;
alter table upstream_request_metric enable row level security;

-- The histogram's bounds, in one place: a sync of one cohort takes a fraction of a second to minutes.
create function run_duration_bounds() returns double precision[]
language sql immutable
as $$ select array[0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 'Infinity']::double precision[] $$;

-- Count finished runs, set-based: one upsert per counter row, however many runs (a backfill, a bulk insert).
create function run_metric_add(finished run_log[]) returns void
language plpgsql
set search_path from current
as $fn$
begin
    if coalesce(cardinality(finished), 0) = 0 then
        return;
    end if;
    insert into run_metric as m (trigger_type, status, error_group, runs, changed_records)
    select r.trigger_type, r.status, coalesce(r.error_group, ''), count(*), sum(r.changed_records)
    from unnest(finished) r
    group by 1, 2, 3
    on conflict (trigger_type, status, error_group)
    do update set runs = m.runs + excluded.runs, changed_records = m.changed_records + excluded.changed_records;

    insert into run_duration_bucket as b (status, le, runs)
    select r.status, d.le, count(*)
    from unnest(finished) r
    cross join lateral (
        select min(bound) as le from unnest(run_duration_bounds()) bound
        where greatest(0, extract(epoch from r.finished_at - r.started_at)) <= bound
    ) d
    group by 1, 2
    on conflict (status, le) do update set runs = b.runs + excluded.runs;

    insert into run_duration_sum as s (status, runs, sum_seconds)
    select r.status, count(*), sum(greatest(0, extract(epoch from r.finished_at - r.started_at)))
    from unnest(finished) r
    group by 1
    on conflict (status) do update set runs = s.runs + excluded.runs, sum_seconds = s.sum_seconds + excluded.sum_seconds;

    insert into run_category_metric as c (category_id, last_success_at, last_finished_at)
    select r.category_id, max(r.finished_at) filter (where r.status = 'SUCCESS'), max(r.finished_at)
    from unnest(finished) r
    where r.category_id is not null
    group by 1
    on conflict (category_id) do update
    set last_success_at = greatest(c.last_success_at, excluded.last_success_at),
        last_finished_at = greatest(c.last_finished_at, excluded.last_finished_at);

    insert into upstream_request_metric as u (code, requests)
    select e.code, sum(e.value::bigint)
    from unnest(finished) r
    cross join lateral jsonb_each_text(case when jsonb_typeof(r.summary -> 'upstream_codes') = 'object'
                                            then r.summary -> 'upstream_codes' else '{}'::jsonb end) as e(code, value)
    where e.code ~ '^([0-9]{3}|none)$' and e.value ~ '^[0-9]{1,18}$'
    group by 1
    on conflict (code) do update set requests = u.requests + excluded.requests;
end
$fn$;

create function run_log_count_inserted() returns trigger
language plpgsql
set search_path from current
as $fn$
begin
    perform run_metric_add(array(select n::run_log from new_runs n where n.status <> 'RUNNING'));
    return null;
end
$fn$;

create function run_log_count_finished() returns trigger
language plpgsql
set search_path from current
as $fn$
begin
    perform run_metric_add(array(
        select n::run_log from new_runs n join old_runs o on o.id = n.id
        where o.status = 'RUNNING' and n.status <> 'RUNNING'));
    return null;
end
$fn$;

-- A run is counted once: when it is logged already finished (a lock conflict) or when it leaves RUNNING.
-- Statement triggers with transition tables: a statement finishing many runs counts them in one go.
create trigger run_log_counted_on_insert after insert on run_log
    referencing new table as new_runs
    for each statement execute function run_log_count_inserted();
create trigger run_log_counted_on_finish after update on run_log
    referencing old table as old_runs new table as new_runs
    for each statement execute function run_log_count_finished();

select run_metric_add(array(select r from run_log r where r.status <> 'RUNNING'));

revoke execute on function run_metric_add(run_log[]) from public;
revoke execute on function run_log_count_inserted() from public;
revoke execute on function run_log_count_finished() from public;

-- Retention (retention.py) deletes in batches, oldest first: resolved alerts by resolution time, and runs
-- whose open alerts still point at them are kept.
create index alert_resolved_at_idx on alert (resolved_at, id) where resolved;
create index alert_open_run_idx on alert (run_id) where not resolved;
create index alert_open_last_run_idx on alert (last_run_id) where not resolved;
-- Served sync requests, deleted oldest first by the queue's own queue_prune_done.
create index sync_request_done_idx on sync_request (processed_at) where status = 'DONE';

-- The `ops` schema: views over the console's main questions for the Supabase SQL editor, times in KST.
-- security_invoker: a view reads with the rights (and row level security) of whoever queries it. Supabase's
-- Data API serves only the schemas listed in its settings (public by default), and nothing here is granted
-- to its roles, so anon and authenticated can read none of it.
create schema ops;
revoke all on schema ops from public;

-- Every cohort ever synced: a skip scan over run_log_category_id_idx (one index probe per cohort).
create view ops.cohorts with (security_invoker = true) as
with recursive cohorts as (
    (select category_id from run_log where category_id is not null order by category_id limit 1)
    union all
    select (select r.category_id from run_log r where r.category_id > c.category_id order by r.category_id limit 1)
    from cohorts c
    where c.category_id is not null
)
select category_id from cohorts where category_id is not null;

create view ops.latest_run_per_cohort with (security_invoker = true) as
select c.category_id,
       last.id as run_id, last.status, last.trigger_type, last.error_group,
       (last.started_at at time zone 'Asia/Seoul') as started_at_kst,
       (last.finished_at at time zone 'Asia/Seoul') as finished_at_kst,
       round(extract(epoch from last.finished_at - last.started_at)::numeric, 1) as duration_s,
       last.total_records, last.new_records, last.changed_records,
       ok.id as last_success_run_id,
       (ok.finished_at at time zone 'Asia/Seoul') as last_success_at_kst
from ops.cohorts c
cross join lateral (select * from run_log r where r.category_id = c.category_id order by r.id desc limit 1) last
left join lateral (
    select r.id, r.finished_at from run_log r
    where r.job_name = 'enrolment_sync' and r.category_id = c.category_id and r.status = 'SUCCESS'
    order by r.finished_at desc limit 1
) ok on true;

create view ops.failures_by_group with (security_invoker = true) as
select error_group,
       count(*) filter (where started_at >= now() - interval '24 hours') as last_24h,
       count(*) as last_7d,
       (max(started_at) at time zone 'Asia/Seoul') as last_failed_at_kst,
       (array_agg(id order by id desc))[1] as last_run_id,
       left((array_agg(error_message order by id desc))[1], 300) as last_error
from run_log
where status = 'FAILED' and started_at >= now() - interval '7 days'
group by error_group;

create view ops.open_alerts with (security_invoker = true) as
select id, alert_type, severity, source_type, source_id, message, occurrences, run_id, last_run_id,
       (created_at at time zone 'Asia/Seoul') as created_at_kst,
       (last_seen_at at time zone 'Asia/Seoul') as last_seen_at_kst
from alert
where not resolved;

-- The console's queue health (console_queue_health reads this view) with the oldest open message in KST.
create view ops.queue_health with (security_invoker = true) as
select q.queue, q.pending, q.processing, q.ready, q.dead, q.oldest_open_at,
       (q.oldest_open_at at time zone 'Asia/Seoul') as oldest_open_at_kst,
       round(extract(epoch from now() - q.oldest_open_at)::numeric) as oldest_open_age_s
from (
    select 'sheet_outbox' as queue,
           count(*) filter (where status = 'PENDING') as pending,
           count(*) filter (where status = 'PROCESSING') as processing,
           count(*) filter (where next_attempt_at <= now()) as ready,
           (select count(*) from sheet_outbox where status = 'DEAD') as dead,
           min(created_at) as oldest_open_at
    from sheet_outbox where status in ('PENDING', 'PROCESSING')
    union all
    select 'notification_outbox',
           count(*) filter (where status = 'PENDING'), count(*) filter (where status = 'PROCESSING'),
           count(*) filter (where next_attempt_at <= now()),
           (select count(*) from notification_outbox where status = 'DEAD'), min(created_at)
    from notification_outbox where status in ('PENDING', 'PROCESSING')
    union all
    select 'sync_request',
           count(*) filter (where status = 'PENDING'), count(*) filter (where status = 'PROCESSING'),
           count(*) filter (where next_attempt_at <= now()),
           (select count(*) from sync_request where status = 'DEAD'), min(created_at)
    from sync_request where status in ('PENDING', 'PROCESSING')
) q;

do $$
declare
    role_name text;
begin
    foreach role_name in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = role_name) then
            execute format('revoke all on schema ops from %I', role_name);
            execute format('revoke all on all tables in schema ops from %I', role_name);
        end if;
    end loop;
end
$$;
