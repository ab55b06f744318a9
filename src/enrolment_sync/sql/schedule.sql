-- Queries of the unattended worker (issue 12): schedules, slots, sync requests, heartbeats. Same named-block
-- format as queries.sql. The request queue's own statements (claim, renew, done, retry, ...) are queue.sql's.
-- Every time here is the database's now(): slots and leases agree across hosts with skewed clocks.

-- schedule_insert --
-- A new schedule; its first slot comes after its creation.
insert into sync_schedule (category_id, max_categories, max_users_per_course, cron_expr, timezone, every_seconds)
values (%(category_id)s, %(max_categories)s, %(max_users_per_course)s, %(cron_expr)s, %(timezone)s, %(every_seconds)s)
returning id, created_at;

-- schedule_list --
-- Every schedule with its last fired slot and its category's latest run (for `schedule list` and the console).
select s.id, s.category_id, s.max_categories, s.max_users_per_course, s.cron_expr, s.timezone, s.every_seconds,
       s.enabled, s.enabled_since, s.paused_at, s.paused_reason, s.paused_auto, s.last_slot_at, s.stale_slot_at,
       s.created_at, now() as db_now,
       r.id as last_run_id, r.status as last_run_status, r.trigger_type as last_run_trigger,
       r.error_group as last_run_error_group, r.finished_at as last_run_finished_at,
       (select max(o.finished_at) from run_log o
        where o.job_name = %(job_name)s and o.category_id = s.category_id and o.status = 'SUCCESS') as last_success_at
from sync_schedule s
left join lateral (
    select l.id, l.status, l.trigger_type, l.error_group, l.finished_at
    from run_log l
    where l.job_name = %(job_name)s and l.category_id = s.category_id
    order by l.id desc
    limit 1
) r on true
where %(schedule_id)s::bigint is null or s.id = %(schedule_id)s
order by s.id;

-- schedule_pause --
-- Pause one schedule by hand (no slot fires, the watchdog leaves it alone).
update sync_schedule
set enabled = false, paused_at = now(), paused_reason = %(reason)s, paused_auto = false, updated_at = now()
where id = %(schedule_id)s and enabled
returning id, category_id;

-- schedule_resume --
-- Resume one schedule: slots from the time it was paused are neither fired nor watched.
update sync_schedule
set enabled = true, enabled_since = now(), paused_at = null, paused_reason = null, paused_auto = false,
    updated_at = now()
where id = %(schedule_id)s and not enabled
returning id, category_id;

-- schedule_delete --
-- Remove one schedule and its slots (its requests and runs stay).
delete from sync_schedule where id = %(schedule_id)s returning id, category_id;

-- schedule_exists --
-- Whether a schedule id exists (to tell "no such schedule" from "already paused").
select id, enabled from sync_schedule where id = %(schedule_id)s;

-- schedules_due --
-- Enabled schedules with what the tick needs to find their due slot and watch their freshness.
select s.id, s.category_id, s.max_categories, s.max_users_per_course, s.cron_expr, s.timezone, s.every_seconds,
       s.created_at, s.enabled_since, s.last_slot_at, s.stale_slot_at, now() as db_now,
       (select max(o.finished_at) from run_log o
        where o.job_name = %(job_name)s and o.category_id = s.category_id and o.status = 'SUCCESS') as last_success_at
from sync_schedule s
where s.enabled
order by s.id;

-- slot_claim --
-- Fire a slot: the first process to insert it wins; the others get no row (the insert waits for theirs).
insert into sync_slot (schedule_id, slot_at, fired_by)
values (%(schedule_id)s, %(slot_at)s, %(fired_by)s)
on conflict (schedule_id, slot_at) do nothing
returning slot_at;

-- slot_fired --
-- Record the request a fired slot queued, and the schedule's latest fired slot.
with slot as (
    update sync_slot set request_id = %(request_id)s
    where schedule_id = %(schedule_id)s and slot_at = %(slot_at)s
)
update sync_schedule
set last_slot_at = greatest(coalesce(last_slot_at, %(slot_at)s), %(slot_at)s), updated_at = now()
where id = %(schedule_id)s;

-- schedule_stale_slot --
-- Claim the watchdog's alert for one slot (compare-and-set: one process alerts, once per slot).
update sync_schedule
set stale_slot_at = %(slot_at)s, updated_at = now()
where id = %(schedule_id)s and enabled and (stale_slot_at is null or stale_slot_at < %(slot_at)s)
returning id;

-- schedules_pause_category --
-- Pause every enabled schedule of a category after repeated failures (paused_auto: a manual success resumes).
update sync_schedule
set enabled = false, paused_at = now(), paused_reason = %(reason)s, paused_auto = true, updated_at = now()
where category_id = %(category_id)s and enabled
returning id;

-- schedules_resume_after_manual_success --
-- Schedules paused by repeated failures whose category has since succeeded on a MANUAL run.
update sync_schedule s
set enabled = true, enabled_since = now(), paused_at = null, paused_reason = null, paused_auto = false,
    updated_at = now()
where s.paused_auto and not s.enabled
  and exists (select 1 from run_log r
              where r.job_name = %(job_name)s and r.category_id = s.category_id and r.status = 'SUCCESS'
                and r.trigger_type = 'MANUAL' and r.finished_at > s.paused_at)
returning s.id, s.category_id;

-- category_recent_runs --
-- The latest runs of one category, newest first (the pause rule counts failures since the last success).
select status, error_group
from run_log
where job_name = %(job_name)s and category_id = %(category_id)s
order by id desc
limit %(limit)s;

-- request_create --
-- Queue a request through the same function SQL callers use (coalescing included); returns its id.
select enrolment_sync_request(
    %(category_id)s, %(trigger_type)s, %(max_categories)s, %(max_users_per_course)s, %(not_before)s,
    %(retry_of_run_id)s, %(retry_number)s, %(schedule_id)s, %(requested_by)s) as id;

-- request_get --
-- One request with what its state needs.
select q.id, q.category_id, q.trigger_type, q.max_categories, q.max_users_per_course, q.schedule_id,
       q.retry_of_run_id, q.retry_number, q.coalesced, q.requested_by, q.run_id, q.http_status, q.result,
       q.status, q.attempts, q.next_attempt_at, q.last_error, q.created_at, q.updated_at, q.processed_at
from sync_request q
where q.id = %(request_id)s;

-- request_finish --
-- What the request's run answered, written with the queue's done in one transaction.
update sync_request
set run_id = %(run_id)s, http_status = %(http_status)s, result = %(result)s, updated_at = now()
where id = %(request_id)s and locked_by = %(consumer)s and status = 'PROCESSING'
returning id;

-- alerts_resolve_recovered --
-- The unattended worker's alerts (stale slots, exhausted retries, paused schedules) end with the category's
-- next success: resolved by the first SUCCESS run finished after the alert was last seen.
with recovered as (
    select a.id,
           (select max(r.id) from run_log r
            where r.job_name = %(job_name)s and r.category_id = (a.detail ->> 'category_id')::bigint
              and r.status = 'SUCCESS' and r.finished_at >= a.last_seen_at) as run_id
    from alert a
    where not a.resolved and a.source_type in ('sync_schedule', 'sync_request')
)
update alert a
set resolved = true, resolved_at = now(), resolved_by = 'run_id=' || r.run_id || ' (SUCCESS)', updated_at = now()
from recovered r
where a.id = r.id and r.run_id is not null
returning a.id;

-- alerts_resolve_paused --
-- A schedule resumed by hand resolves its category's open "schedules paused" alert.
update alert
set resolved = true, resolved_at = now(), resolved_by = %(resolved_by)s, updated_at = now()
where alert_type = 'FAILED' and source_type = 'sync_schedule' and source_id = %(source_id)s and not resolved
returning id;

-- schedules_enabled_categories --
-- Categories with an enabled schedule: the watchdog watches their slots instead of STALE_AFTER_HOURS.
select distinct category_id from sync_schedule where enabled;

-- heartbeat_beat --
-- The loop of one process is alive; its state for /healthz and `schedule list`.
insert into scheduler_heartbeat as h (worker_id, started_at, beat_at, state)
values (%(worker_id)s, now(), now(), %(state)s)
on conflict (worker_id) do update set beat_at = now(), stopped_at = null, state = excluded.state
returning beat_at;

-- heartbeat_stop --
-- The loop of one process stopped (a signal): its final state.
update scheduler_heartbeat set beat_at = now(), stopped_at = now(), state = %(state)s
where worker_id = %(worker_id)s;

-- heartbeat_prune --
-- Forget processes that stopped (or went silent) over a week ago.
delete from scheduler_heartbeat where beat_at < now() - interval '7 days';

-- heartbeat_latest --
-- The most recent heartbeat of any running loop, and its age by the database's clock.
select worker_id, beat_at, extract(epoch from now() - beat_at)::double precision as age_s, state
from scheduler_heartbeat
where stopped_at is null
order by beat_at desc
limit 1;
