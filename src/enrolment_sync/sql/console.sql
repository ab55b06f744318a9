-- Queries of the operations console (/ops, web/), same named-block format as queries.sql. Each page asks what
-- the seeds' queries (sql/ops/) ask, but through an index and with a limit, so a page stays fast on large
-- tables (`python -m bench ops`): no query reads source_record without its category, lists are keyset-paged
-- (`before_id`), and counts are taken over partial indexes of open rows only. Times are UTC; web/ shows KST.

-- console_cohorts --
-- One line per cohort ever synced (a skip scan over run_log_category_id_idx): latest run and last success.
with recursive cohorts as (
    (select category_id from run_log where category_id is not null order by category_id limit 1)
    union all
    select (select r.category_id from run_log r where r.category_id > c.category_id
            order by r.category_id limit 1)
    from cohorts c
    where c.category_id is not null
)
select c.category_id,
       last.id as run_id, last.status, last.trigger_type, last.started_at, last.finished_at,
       extract(epoch from last.finished_at - last.started_at) as duration_s,
       last.total_records, last.new_records, last.changed_records, last.error_group,
       ok.id as last_success_run_id, ok.finished_at as last_success_at
from cohorts c
cross join lateral (
    select * from run_log r where r.category_id = c.category_id order by r.id desc limit 1
) last
left join lateral (
    select r.id, r.finished_at from run_log r
    where r.job_name = %(job_name)s and r.category_id = c.category_id and r.status = 'SUCCESS'
    order by r.finished_at desc limit 1
) ok on true
where c.category_id is not null
order by c.category_id
limit 500;

-- console_open_alerts_by_cohort --
-- Open alerts per cohort and severity. Where the key names the cohort (a record key `category:course:user`, a
-- STALE key `job:category:id`) it is read from the key; the other open alerts (FAILED, few: one per failure
-- group and cooldown window) take it from the run that raised them, looked up by primary key.
select category_id, severity, sum(cnt)::bigint as cnt
from (
    select case when source_type = 'enrolment_status' and source_id ~ '^[0-9]{1,18}:'
                then split_part(source_id, ':', 1)::bigint
                when source_type = 'category' and split_part(source_id, ':', 3) ~ '^[0-9]{1,18}$'
                then split_part(source_id, ':', 3)::bigint end as category_id,
           severity, count(*) as cnt
    from alert
    where not resolved and source_type in ('enrolment_status', 'category')
    group by 1, 2
    union all
    select r.category_id, a.severity, count(*)
    from alert a
    left join run_log r on r.id = a.run_id
    where not a.resolved and a.source_type not in ('enrolment_status', 'category')
    group by 1, 2
) counted
group by 1, 2;

-- console_open_alerts_by_severity --
-- Open alerts per type and severity (what 3-4 shows, for the open ones).
select alert_type, severity, count(*) as cnt
from alert
where not resolved
group by 1, 2
order by 1, 2;

-- console_open_high --
-- 3-5: open high alerts, newest first (the overview's banner).
select id, alert_type, severity, source_id, message, created_at
from alert
where resolved = false and severity = 'high'
order by created_at desc
limit 50;

-- console_lock --
-- 3-7: who holds the job lease, and whether it has expired.
select job_name, locked_by, run_id, locked_at, lock_expires_at, renewed_at, lock_expires_at < now() as expired
from job_lock
order by locked_at desc;

-- console_queue_health --
-- Backlog, ready and oldest open message per queue, and dead messages (the README's operations check): the
-- view of the SQL editor (migration 0010), so both say the same.
select queue, pending, processing, ready, dead, oldest_open_at from ops.queue_health;

-- console_schedule_slots --
-- The last slots of every schedule and what became of them: the request each fired and the run that served it.
select s.id as schedule_id, t.slot_at, t.fired_at, q.id as request_id, q.status as request_status,
       q.coalesced, l.id as run_id, l.status as run_status, l.error_group
from sync_schedule s
cross join lateral (
    select slot_at, fired_at, request_id from sync_slot where schedule_id = s.id order by slot_at desc limit 5
) t
left join sync_request q on q.id = t.request_id
left join run_log l on l.id = q.run_id
order by s.id, t.slot_at desc
limit 1000;

-- console_requests_open --
-- Sync requests waiting or running (the request queue), oldest first.
select id, category_id, trigger_type, status, attempts, coalesced, retry_of_run_id, retry_number, requested_by,
       next_attempt_at, created_at, left(last_error, 300) as last_error
from sync_request
where status in ('PENDING', 'PROCESSING')
order by next_attempt_at, id
limit 50;

-- console_runs --
-- 3-1 with filters (status, trigger, cohort), newest first, keyset-paged by id.
select id, category_id, trigger_type, status, total_records, new_records, changed_records, created_alerts,
       error_group, http_status_code, left(error_message, 300) as error_message, started_at, finished_at,
       extract(epoch from finished_at - started_at) as duration_s
from run_log
where (%(status)s::text is null or status = %(status)s::text)
  and (%(trigger_type)s::text is null or trigger_type = %(trigger_type)s::text)
  and (%(category_id)s::bigint is null or category_id = %(category_id)s::bigint)
  and (%(before_id)s::bigint is null or id < %(before_id)s::bigint)
order by id desc
limit %(limit)s;

-- console_run --
-- One run, with its duration.
select *, extract(epoch from coalesce(finished_at, now()) - started_at) as duration_s
from run_log
where id = %(run_id)s;

-- console_run_alerts --
-- The alerts a run raised (CHANGED and FAILED) or repeated (CHANGED seen again in this run).
select * from (
    (select id, alert_type, severity, source_id, message, occurrences, resolved, created_at, true as raised_here
     from alert where alert_type = 'CHANGED' and run_id = %(run_id)s order by id limit 200)
    union all
    (select id, alert_type, severity, source_id, message, occurrences, resolved, created_at, true
     from alert where alert_type = 'FAILED' and detail ->> 'run_id' = %(run_id)s::text order by id limit 200)
    union all
    (select id, alert_type, severity, source_id, message, occurrences, resolved, created_at, false
     from alert where alert_type = 'CHANGED' and last_run_id = %(run_id)s and run_id <> %(run_id)s
     order by id limit 200)
) a
order by raised_here desc, id
limit 300;

-- console_run_neighbours --
-- The cohort's runs just before and after a run (a retry follows the run it retries).
select * from (
    (select id, trigger_type, status, error_group, started_at, finished_at from run_log
     where category_id = %(category_id)s and id < %(run_id)s order by id desc limit 5)
    union all
    (select id, trigger_type, status, error_group, started_at, finished_at from run_log
     where category_id = %(category_id)s and id > %(run_id)s order by id limit 5)
) n
order by id;

-- console_retry_chain --
-- The retry chain a run belongs to: back to the run first retried, then every retry after it (run_log's
-- retry_of_run_id, written by the scheduler's automatic RETRY), at most 20 steps each way.
with recursive back as (
    select id, retry_of_run_id, 0 as depth from run_log where id = %(run_id)s
    union all
    select r.id, r.retry_of_run_id, b.depth + 1
    from run_log r join back b on r.id = b.retry_of_run_id
    where b.depth < 20
), root as (
    select id from back order by depth desc limit 1
), chain as (
    select id, 0 as step from root
    union all
    select r.id, c.step + 1
    from run_log r join chain c on r.retry_of_run_id = c.id
    where c.step < 20
)
select r.id, r.trigger_type, r.status, r.error_group, r.started_at, r.finished_at, r.retry_of_run_id, c.step
from chain c join run_log r on r.id = c.id
order by c.step, r.id
limit 50;

-- console_run_sheet_counts --
-- The sheet messages a run produced, by state.
select status, count(*) as cnt
from sheet_outbox
where run_id = %(run_id)s
group by status
order by status;

-- console_run_sheet_rows --
-- The first sheet messages a run produced.
select id, category_id, source_id, status, attempts, left(last_error, 300) as last_error, updated_at
from sheet_outbox
where run_id = %(run_id)s
order by id
limit 50;

-- console_run_notifications --
-- The notifications a run produced.
select id, kind, severity, status, attempts, left(last_error, 300) as last_error, created_at, processed_at
from notification_outbox
where run_id = %(run_id)s
order by id
limit 50;

-- console_cohort_recent_runs --
-- A cohort's recent runs, for the charts (duration, records, changes, failures by group).
select id, status, error_group, started_at, total_records, changed_records,
       extract(epoch from finished_at - started_at) as duration_s
from run_log
where category_id = %(category_id)s
order by id desc
limit %(limit)s;

-- console_alerts_open --
-- Open alerts, newest first, optionally of one type and severity; keyset-paged by id.
select id, alert_type, severity, source_type, source_id, message, occurrences, run_id, created_at, last_seen_at,
       acknowledged_at, acknowledged_by, ack_note, silence_id
from alert
where not resolved
  and (%(alert_type)s::text is null or alert_type = %(alert_type)s::text)
  and (%(severity)s::text is null or severity = %(severity)s::text)
  and (%(before_id)s::bigint is null or id < %(before_id)s::bigint)
order by id desc
limit %(limit)s;

-- console_alerts_recent --
-- Every alert, newest first (resolved ones too); keyset-paged by id.
select id, alert_type, severity, source_type, source_id, message, occurrences, run_id, created_at, last_seen_at,
       resolved, resolved_at, resolved_by, acknowledged_at, acknowledged_by, ack_note, silence_id
from alert
where (%(before_id)s::bigint is null or id < %(before_id)s::bigint)
order by id desc
limit %(limit)s;

-- console_alert_distribution --
-- 3-4: alert types and severities of the last 24 hours.
select alert_type, severity, count(*) as cnt
from alert
where created_at >= now() - interval '24 hours'
group by 1, 2
order by 1, 2;

-- console_failed_groups --
-- 4-3: FAILED alerts of the last 24 hours by failure group and severity.
select detail ->> 'error_group' as error_group, severity, count(*) as cnt
from alert
where alert_type = 'FAILED'
  and created_at >= now() - interval '24 hours'
group by 1, 2
order by 3 desc, 1;

-- console_failed_alerts --
-- 4-2: the FAILED alert list, newest first.
select id, source_id, alert_type, severity, resolved,
       detail ->> 'error_group' as error_group,
       detail ->> 'http_status_code' as http_status_code,
       detail ->> 'run_id' as run_id,
       created_at
from alert
where alert_type = 'FAILED'
order by id desc
limit 50;

-- console_alert --
-- One alert, whole.
select * from alert where id = %(alert_id)s;

-- console_records_sample --
-- 3-6: a cohort's status rows, most recently stored first.
select source_id, user_id, course_id, status, status_msg, gc_date, sjc_date, update_time, updated_at,
       missing_since
from source_record
where source_type = 'enrolment_status'
  and category_id = %(category_id)s
order by updated_at desc
limit 100;

-- console_records_by_user_prefix --
-- A cohort's status rows of learners whose id starts with the prefix (a LIKE pattern, escaped by the caller).
select source_id, user_id, course_id, status, status_msg, gc_date, sjc_date, update_time, updated_at,
       missing_since
from source_record
where category_id = %(category_id)s
  and user_id like %(prefix)s
  and source_type = 'enrolment_status'
order by user_id, course_id
limit 100;

-- console_records_by_course --
-- A cohort's status rows of one course.
select source_id, user_id, course_id, status, status_msg, gc_date, sjc_date, update_time, updated_at,
       missing_since
from source_record
where category_id = %(category_id)s
  and course_id = %(course_id)s
  and source_type = 'enrolment_status'
order by user_id
limit 100;

-- console_learner_records --
-- One learner's current records in a cohort: status rows (3-6's columns) and details.
select source_type, source_id, course_id, status, status_msg, gc_date, sjc_date, update_time, updated_at,
       missing_since, first_seen_run_id, last_changed_run_id,
       payload ->> 'progress_rate' as progress_rate, payload ->> 'attendance_rate' as attendance_rate,
       payload ->> 'exam_score' as exam_score
from source_record
where category_id = %(category_id)s
  and user_id = %(user_id)s
order by course_id, source_type desc
limit 200;

-- console_learner_changes --
-- The changes seen for a learner: the CHANGED alerts of their record keys, newest first.
select id, severity, source_id, message, detail -> 'changed_fields' as changed_fields,
       detail -> 'before' ->> 'status' as status_before, detail -> 'after' ->> 'status' as status_after,
       occurrences, run_id, resolved, created_at
from alert
where source_id = any(%(source_ids)s::text[])
  and alert_type = 'CHANGED'
order by id desc
limit 100;

-- console_dead_sheet --
-- Dead sheet messages with their last error, newest first; keyset-paged by id.
select id, category_id, source_id as what, attempts, last_error, updated_at
from sheet_outbox
where status = 'DEAD' and (%(before_id)s::bigint is null or id < %(before_id)s::bigint)
order by id desc
limit %(limit)s;

-- console_dead_notification --
-- Dead notifications with their last error, newest first; keyset-paged by id.
select id, category_id, kind || ' ' || dedupe_key as what, attempts, last_error, updated_at
from notification_outbox
where status = 'DEAD' and (%(before_id)s::bigint is null or id < %(before_id)s::bigint)
order by id desc
limit %(limit)s;

-- console_requeue_sheet --
-- Re-queue dead sheet messages (the given ids, or the oldest `limit` when ids is null) as new, with every
-- attempt back. A message with a newer one for the same enrolment is closed as superseded instead: delivered
-- after it, it would overwrite newer content on the sheet.
with picked as (
    select m.id, exists (select 1 from sheet_outbox n where n.source_id = m.source_id and n.id > m.id) as stale
    from sheet_outbox m
    where m.status = 'DEAD' and (%(ids)s::bigint[] is null or m.id = any(%(ids)s::bigint[]))
    order by m.id
    limit %(limit)s
    for update of m skip locked
)
update sheet_outbox m
set status = case when p.stale then 'DONE' else 'PENDING' end,
    attempts = case when p.stale then m.attempts else 0 end,
    processed_at = case when p.stale then now() end,
    last_error = case when p.stale then 'superseded by a newer message for the same enrolment (console re-queue)'
                      else m.last_error end,
    next_attempt_at = now(), locked_by = null, locked_until = null, dead_alerted = false, updated_at = now()
from picked p
where m.id = p.id
returning m.id, p.stale;

-- console_requeue_notification --
-- Re-queue dead notifications (the given ids, or the oldest `limit`): channels already reached stay reached.
with picked as (
    select id from notification_outbox
    where status = 'DEAD' and (%(ids)s::bigint[] is null or id = any(%(ids)s::bigint[]))
    order by id
    limit %(limit)s
    for update skip locked
)
update notification_outbox m
set status = 'PENDING', attempts = 0, next_attempt_at = now(), locked_by = null, locked_until = null,
    dead_alerted = false, updated_at = now()
from picked p
where m.id = p.id
returning m.id, false as stale;

-- console_audit --
-- The console's audit trail, newest first; keyset-paged by id.
select id, at, actor, role, action, target, outcome, detail, remote_addr
from ops_audit
where (%(before_id)s::bigint is null or id < %(before_id)s::bigint)
order by id desc
limit %(limit)s;

-- console_audit_for_target --
-- The audit entries of one target (an alert, a schedule, a queue).
select id, at, actor, role, action, target, outcome, detail
from ops_audit
where target = %(target)s
order by id desc
limit 50;

-- console_audit_record --
-- Record one console action.
insert into ops_audit (actor, role, action, target, outcome, detail, remote_addr)
values (%(actor)s, %(role)s, %(action)s, %(target)s, %(outcome)s, %(detail)s, %(remote_addr)s)
returning id;
