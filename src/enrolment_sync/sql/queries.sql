-- Every query of the worker, as a named block: `-- name --`, a one-line description, then SQL with
-- %(param)s placeholders. Loaded once by db.queries(). Ops queries of the seeds live in sql/ops/.

-- lock_select_for_update --
-- The job's lease row, locked for the rest of the transaction, with the database's view of expiry.
select job_name, locked_by, run_id, locked_at, lock_expires_at, lock_expires_at <= now() as expired
from job_lock
where job_name = %(job_name)s
for update;

-- lock_insert --
-- Take a free lease; returns nothing if another worker inserted it first.
insert into job_lock (job_name, locked_by, run_id, locked_at, lock_expires_at, renewed_at)
values (%(job_name)s, %(locked_by)s, %(run_id)s, now(), now() + make_interval(secs => %(ttl_s)s), now())
on conflict (job_name) do nothing
returning job_name;

-- lock_take_over --
-- Take an expired lease (the row is already locked by lock_select_for_update).
update job_lock
set locked_by = %(locked_by)s, run_id = %(run_id)s, locked_at = now(),
    lock_expires_at = now() + make_interval(secs => %(ttl_s)s), renewed_at = now()
where job_name = %(job_name)s and lock_expires_at <= now()
returning job_name;

-- lock_renew --
-- Extend our own live lease; no row means it was lost (it expired, and may have been taken over).
update job_lock
set lock_expires_at = now() + make_interval(secs => %(ttl_s)s), renewed_at = now()
where job_name = %(job_name)s and run_id = %(run_id)s and locked_by = %(locked_by)s and lock_expires_at > now()
returning lock_expires_at;

-- lock_release --
-- Give our lease back.
delete from job_lock
where job_name = %(job_name)s and run_id = %(run_id)s and locked_by = %(locked_by)s;

-- run_insert --
-- One run_log row per request.
insert into run_log (job_name, trigger_type, status, category_id, params, worker_id, started_at, updated_at,
                     error_message, error_group, finished_at, request_id, retry_of_run_id)
values (%(job_name)s, %(trigger_type)s, %(status)s, %(category_id)s, %(params)s, %(worker_id)s, %(now)s, %(now)s,
        %(error_message)s, %(error_group)s, %(finished_at)s, %(request_id)s, %(retry_of_run_id)s)
returning id;

-- run_set_lock_owner --
-- Record the run id on the lease just taken.
update job_lock set run_id = %(run_id)s where job_name = %(job_name)s and locked_by = %(locked_by)s;

-- run_finish --
-- Close a run with its totals (SUCCESS or FAILED); no row if it was closed meanwhile as abandoned.
update run_log
set status = %(status)s, total_records = %(total_records)s, new_records = %(new_records)s,
    changed_records = %(changed_records)s, created_alerts = %(created_alerts)s, summary = %(summary)s,
    error_message = %(error_message)s, error_group = %(error_group)s, http_status_code = %(http_status_code)s,
    finished_at = %(now)s, updated_at = %(now)s
where id = %(run_id)s and status = 'RUNNING'
returning id;

-- run_state --
-- How a run stands (an idempotent finish tells its own earlier close from another worker's).
select status, finished_at, error_message from run_log where id = %(run_id)s;

-- run_add_alerts --
-- Count alerts created for a run after it was closed (a lock conflict's FAILED alert).
update run_log set created_alerts = created_alerts + %(count)s, updated_at = %(now)s where id = %(run_id)s;

-- run_abandoned --
-- RUNNING rows of this job that no live lease vouches for (their worker died), locked for closing.
select r.id, r.worker_id, r.category_id, r.started_at
from run_log r
where r.job_name = %(job_name)s
  and r.status = 'RUNNING'
  and (%(run_id)s::bigint is null or r.id = %(run_id)s)
  and not exists (
      select 1 from job_lock l
      where l.job_name = r.job_name and l.run_id = r.id and l.lock_expires_at > now())
order by r.id
for update of r skip locked;

-- run_close_abandoned --
-- Close one abandoned run as FAILED (UNKNOWN), counting its FAILED alert if one was created.
update run_log
set status = 'FAILED', error_group = 'UNKNOWN', error_message = %(error_message)s,
    created_alerts = created_alerts + %(created_alerts)s, finished_at = %(now)s, updated_at = %(now)s
where id = %(run_id)s and status = 'RUNNING';
-- run_category_history --
-- One category's last success and first attempt (staleness): two index probes, never a scan of run_log.
select %(category_id)s::bigint as category_id,
       (select finished_at from run_log
        where job_name = %(job_name)s and category_id = %(category_id)s and status = 'SUCCESS'
        order by finished_at desc limit 1) as last_success_at,
       (select started_at from run_log
        where job_name = %(job_name)s and category_id = %(category_id)s
        order by started_at limit 1) as first_started_at;

-- run_categories_history --
-- Every category the job ever ran for, with its last success and first attempt: a skip scan over the
-- (job_name, category_id, started_at) index, one probe per category, instead of grouping every run.
with recursive seen as (
    (select category_id from run_log
     where job_name = %(job_name)s and category_id is not null
     order by category_id limit 1)
    union all
    select (select r.category_id from run_log r
            where r.job_name = %(job_name)s and r.category_id > seen.category_id
            order by r.category_id limit 1)
    from seen
    where seen.category_id is not null
)
select seen.category_id,
       (select finished_at from run_log
        where job_name = %(job_name)s and category_id = seen.category_id and status = 'SUCCESS'
        order by finished_at desc limit 1) as last_success_at,
       (select started_at from run_log
        where job_name = %(job_name)s and category_id = seen.category_id
        order by started_at limit 1) as first_started_at
from seen
where seen.category_id is not null
order by seen.category_id;

-- records_of_course --
-- What the diff needs of the records stored for one course: hash, missing mark, alert fields as written.
select source_type, source_id, content_hash, missing_since is not null as missing,
       payload ->> 'status' as status, payload ->> 'status_msg' as status_msg,
       payload ->> 'gc_date' as gc_date, payload ->> 'sjc_date' as sjc_date,
       payload ->> 'update_time' as update_time
from source_record
where category_id = %(category_id)s and course_id = %(course_id)s
  and source_id = category_id || ':' || course_id || ':' || user_id;  -- final keys only (see migrate-keys)

-- records_upsert --
-- Store new and changed records in one statement; an unchanged row is never rewritten.
insert into source_record as s
    (source_type, source_id, category_id, course_id, user_id, status, status_msg, gc_date, sjc_date,
     update_time, payload, content_hash, first_seen_run_id, last_changed_run_id, created_at, updated_at)
select r.source_type, r.source_id, r.category_id, r.course_id, r.user_id, r.status, r.status_msg, r.gc_date,
       r.sjc_date, r.update_time, r.payload, r.content_hash, %(run_id)s, %(run_id)s, %(now)s, %(now)s
from jsonb_to_recordset(%(rows)s::jsonb) as r(
    source_type text, source_id text, category_id bigint, course_id bigint, user_id text, status text,
    status_msg text, gc_date date, sjc_date date, update_time timestamptz, payload jsonb, content_hash text)
on conflict (source_type, source_id) do update
set category_id = excluded.category_id, course_id = excluded.course_id, user_id = excluded.user_id,
    status = excluded.status, status_msg = excluded.status_msg, gc_date = excluded.gc_date,
    sjc_date = excluded.sjc_date, update_time = excluded.update_time, payload = excluded.payload,
    content_hash = excluded.content_hash, last_changed_run_id = excluded.last_changed_run_id,
    missing_since = null, updated_at = excluded.updated_at
where s.content_hash is distinct from excluded.content_hash or s.missing_since is not null;

-- records_mark_missing --
-- Mark (never delete) the records of learners who left a course; each status record marked gets its MISSING
-- history row in the same statement.
with marked as (
    update source_record
    set missing_since = %(now)s, updated_at = %(now)s
    where category_id = %(category_id)s and course_id = %(course_id)s
      and source_id = any(%(source_ids)s) and missing_since is null
    returning source_type, source_id, category_id, course_id, user_id, status, status_msg, gc_date, sjc_date,
              update_time
)
insert into status_history (source_id, category_id, course_id, user_id, change, old_status, old_status_msg,
                            old_gc_date, old_sjc_date, update_time, run_id, changed_at)
select source_id, category_id, course_id, user_id, 'MISSING', status, status_msg, gc_date, sjc_date, update_time,
       %(run_id)s, %(now)s
from marked
where source_type = 'enrolment_status';

-- records_present_in_category --
-- How many records of a category are stored and not marked missing (an empty course list is doubted then).
select count(*) as n from source_record where category_id = %(category_id)s and missing_since is null;

-- records_mark_missing_outside --
-- Mark (never delete) the records of courses no longer listed in their category, with their MISSING history rows.
with marked as (
    update source_record
    set missing_since = %(now)s, updated_at = %(now)s
    where category_id = %(category_id)s and course_id <> all(%(course_ids)s::bigint[]) and missing_since is null
      and source_id = category_id || ':' || course_id || ':' || user_id
    returning source_type, source_id, category_id, course_id, user_id, status, status_msg, gc_date, sjc_date,
              update_time
), logged as (
    insert into status_history (source_id, category_id, course_id, user_id, change, old_status, old_status_msg,
                                old_gc_date, old_sjc_date, update_time, run_id, changed_at)
    select source_id, category_id, course_id, user_id, 'MISSING', status, status_msg, gc_date, sjc_date,
           update_time, %(run_id)s, %(now)s
    from marked
    where source_type = 'enrolment_status'
)
select source_id from marked;

-- alerts_raise --
-- Raise alerts, one per key, unless an open alert of the same key was created inside the cooldown:
-- then count the repeat on it instead. Returns one row per input key: created or suppressed.
-- %(alerts)s holds the fields of alerts.AlertSpec, read as the alert table's own columns.
-- A repeat: the message becomes the repeat's (the latest state, with the count and the alert's severity when
-- that is higher), detail.repeats keeps the newest %(repeats_kept)s repeats (each its own detail, time,
-- severity and message), detail.latest the last repeat's detail (as before; 0005's backfill reads it), and
-- detail.failing_categories (FAILED alerts) gains the repeat's categories.
-- The first occurrence's own detail stays at the top (4-4 joins the run that created the alert through it).
with incoming as (
    select source_type, source_id, severity, message, detail
    from jsonb_populate_recordset(null::alert, %(alerts)s::jsonb)
), absorbed as (
    update alert a
    set occurrences = a.occurrences + 1, last_seen_at = %(now)s, last_run_id = %(run_id)s, updated_at = %(now)s,
        severity = w.severity,
        message = i.message || ' (반복 ' || (a.occurrences + 1) || '회째'
                  || case when w.severity <> i.severity then ', 최고 심각도 ' || w.severity else '' end || ')',
        detail = a.detail
            || jsonb_build_object('latest', i.detail)
            || jsonb_build_object('repeats', (
                   select coalesce(jsonb_agg(r.x order by r.n), '[]'::jsonb)
                   from (select e.x, e.n
                         from jsonb_array_elements(
                                  coalesce(a.detail -> 'repeats', '[]'::jsonb)
                                  || jsonb_build_array(jsonb_build_object(
                                         'at', %(now)s::timestamptz, 'run_id', %(run_id)s::bigint,
                                         'severity', i.severity, 'message', i.message, 'detail', i.detail))
                              ) with ordinality as e(x, n)
                         order by e.n desc
                         limit %(repeats_kept)s) r))
            || case when i.detail ? 'failing_categories' then jsonb_build_object('failing_categories', (
                   select jsonb_agg(distinct c.value)
                   from jsonb_array_elements(
                            coalesce(a.detail -> 'failing_categories', '[]'::jsonb) || (i.detail -> 'failing_categories')
                        ) as c(value)))
               else '{}'::jsonb end
    from incoming i
    join alert o on o.alert_type = %(alert_type)s and o.source_type = i.source_type and o.source_id = i.source_id
    cross join lateral (
        select case when i.severity = 'high' or o.severity = 'high' then 'high'
                    when i.severity = 'medium' or o.severity = 'medium' then 'medium' else 'low' end as severity
    ) w
    where a.id = o.id
      and not a.resolved and a.created_at > %(now)s - make_interval(secs => %(cooldown_s)s)
    returning a.source_id, a.id
), created as (
    insert into alert (alert_type, severity, source_type, source_id, message, detail, run_id, last_run_id,
                       created_at, updated_at, last_seen_at)
    select %(alert_type)s, i.severity, i.source_type, i.source_id, i.message, i.detail, %(run_id)s, %(run_id)s,
           %(now)s, %(now)s, %(now)s
    from incoming i
    where i.source_id not in (select source_id from absorbed)
    returning source_id, id
)
select source_id, id, true as created from created
union all
select source_id, id, false from absorbed;

-- alerts_key_lock --
-- Serialise raisers of one alert key (transaction-scoped, so pooler-safe).
select pg_advisory_xact_lock(hashtextextended(%(key)s, 0));

-- alerts_resolve_failed --
-- A success of one category no longer counts against the job's open FAILED alerts: it leaves each alert's
-- detail.failing_categories (and is listed in detail.recovered_categories); an alert is resolved once every
-- category whose failures it counts has succeeded since. Alerts raised before categories were tracked (no
-- failing_categories) are resolved by any success, as they were. Returns (id, resolved) per alert touched.
with open_failed as (
    select a.id, a.detail ? 'failing_categories' as tracked,
           coalesce(a.detail -> 'failing_categories', '[]'::jsonb) as failing
    from alert a
    where a.alert_type = 'FAILED' and a.source_type = 'run_log' and a.source_id like %(job_prefix)s
      and not a.resolved
    for update
), touched as (
    select o.id, o.tracked,
           (select coalesce(jsonb_agg(c.value), '[]'::jsonb)
            from jsonb_array_elements(o.failing) as c(value)
            where c.value <> to_jsonb(%(category_id)s::bigint)) as remaining
    from open_failed o
    where not o.tracked or o.failing @> jsonb_build_array(%(category_id)s::bigint)
)
update alert a
set resolved = (not t.tracked or t.remaining = '[]'::jsonb),
    resolved_at = case when not t.tracked or t.remaining = '[]'::jsonb then %(now)s::timestamptz end,
    resolved_by = case when not t.tracked or t.remaining = '[]'::jsonb then %(resolved_by)s::text end,
    detail = case when t.tracked
                  then a.detail || jsonb_build_object(
                      'failing_categories', t.remaining,
                      'recovered_categories', coalesce(a.detail -> 'recovered_categories', '[]'::jsonb)
                          || jsonb_build_array(jsonb_build_object(
                                 'category_id', %(category_id)s::bigint, 'run_id', %(run_id)s::bigint,
                                 'at', %(now)s::timestamptz)))
                  else a.detail end,
    updated_at = %(now)s
from touched t
where a.id = t.id
returning a.id, a.resolved;

-- alerts_resolve_one --
-- Resolve one alert by hand.
update alert
set resolved = true, resolved_at = %(now)s, resolved_by = %(resolved_by)s, updated_at = %(now)s
where id = %(alert_id)s and not resolved
returning id, alert_type, severity, source_id;

-- alerts_get --
-- One alert.
select * from alert where id = %(alert_id)s;

-- sheet_enqueue --
-- Queue sheet rows for new and changed enrolments (same transaction as the records). Queue times are the
-- database's now(), never the worker's clock: a worker host running fast must not delay the messages.
insert into sheet_outbox (run_id, category_id, source_id, payload, created_at, updated_at, next_attempt_at)
select %(run_id)s, r.category_id, r.source_id, r.payload, now(), now(), now()
from jsonb_to_recordset(%(rows)s::jsonb) as r(category_id bigint, source_id text, payload jsonb);

-- notification_enqueue --
-- Queue one notification; a repeat of the same dedupe key is ignored. Queue times are the database's now().
insert into notification_outbox (kind, dedupe_key, severity, run_id, category_id, alert_id, payload,
                                 created_at, updated_at, next_attempt_at)
values (%(kind)s, %(dedupe_key)s, %(severity)s, %(run_id)s, %(category_id)s, %(alert_id)s, %(payload)s,
        now(), now(), now())
on conflict (dedupe_key) do nothing
returning id;

-- health --
-- The database answers and the schema is there.
select count(*) as migrations from schema_migration;

-- alerts_list --
-- Alerts for the CLI, newest first.
select id, alert_type, severity, source_id, occurrences, created_at, resolved, message
from alert
where %(include_resolved)s or not resolved
order by created_at desc, id desc
limit %(limit)s;

-- alerts_resolve_stale --
-- A success for a category resolves its open STALE alert.
update alert
set resolved = true, resolved_at = %(now)s, resolved_by = %(resolved_by)s, updated_at = %(now)s
where alert_type = 'STALE' and source_type = 'category' and source_id = %(source_id)s and not resolved
returning id;
