-- Queries of the outbox consumers (Step 3), same named-block format as queries.sql. Every unit of work is one
-- short transaction: no session state, no session advisory locks, no LISTEN (Supabase transaction pooler).
-- A claimed message is PROCESSING with its lease end in both locked_until and next_attempt_at, so "ready" is
-- one condition (status open and next_attempt_at <= now()) served by the claim index of 0001.

-- outbox_sheet_claim --
-- Claim ready sheet messages, oldest first; a learner with an older open message waits for it (one writer per row).
with picked as (
    select m.id
    from sheet_outbox m
    where m.status in ('PENDING', 'PROCESSING') and m.next_attempt_at <= now()
      and m.attempts < %(max_attempts)s
      and not exists (
          select 1 from sheet_outbox o
          where o.source_id = m.source_id and o.id < m.id and o.status in ('PENDING', 'PROCESSING'))
    order by m.next_attempt_at, m.id
    limit %(batch)s
    for update of m skip locked
)
update sheet_outbox m
set status = 'PROCESSING', attempts = m.attempts + 1, locked_by = %(consumer)s,
    locked_until = now() + make_interval(secs => %(lease_s)s),
    next_attempt_at = now() + make_interval(secs => %(lease_s)s), updated_at = now()
from picked
where m.id = picked.id
returning m.id, m.run_id, m.category_id, m.source_id, m.payload, m.attempts;

-- outbox_sheet_park_expired --
-- Messages with no attempt left: the lease ran out on the last one (their consumer kept dying), or
-- OUTBOX_MAX_ATTEMPTS was lowered below what they had used. Park them as dead.
update sheet_outbox
set status = 'DEAD', locked_by = null, locked_until = null, updated_at = now(),
    last_error = case when status = 'PROCESSING'
        then 'lease expired on attempt ' || attempts || ' (consumer ' || coalesce(locked_by, '?')
             || ' stopped answering)' || coalesce('; before: ' || last_error, '')
        else 'no attempt left (OUTBOX_MAX_ATTEMPTS is ' || %(max_attempts)s || ')'
             || coalesce('; before: ' || last_error, '') end
where ((status = 'PROCESSING' and next_attempt_at <= now()) or status = 'PENDING') and attempts >= %(max_attempts)s
returning id, run_id, category_id, source_id, attempts, last_error;

-- outbox_sheet_renew --
-- Extend our lease on claimed messages; returns the ids still ours (a missing id was taken over).
update sheet_outbox
set locked_until = now() + make_interval(secs => %(lease_s)s),
    next_attempt_at = now() + make_interval(secs => %(lease_s)s), updated_at = now()
where id = any(%(ids)s) and locked_by = %(consumer)s and status = 'PROCESSING'
returning id;

-- outbox_notification_renew --
-- Extend our lease on claimed notifications; returns the ids still ours.
update notification_outbox
set locked_until = now() + make_interval(secs => %(lease_s)s),
    next_attempt_at = now() + make_interval(secs => %(lease_s)s), updated_at = now()
where id = any(%(ids)s) and locked_by = %(consumer)s and status = 'PROCESSING'
returning id;

-- outbox_sheet_done --
-- Mark written messages done (only those still leased to us).
update sheet_outbox
set status = 'DONE', processed_at = now(), locked_by = null, locked_until = null, last_error = null,
    updated_at = now()
where id = any(%(ids)s) and locked_by = %(consumer)s and status = 'PROCESSING'
returning id, run_id, category_id;

-- outbox_sheet_retry --
-- A failed attempt: back to PENDING after its backoff, or DEAD when it was the last allowed attempt.
update sheet_outbox m
set status = case when r.dead then 'DEAD' else 'PENDING' end,
    next_attempt_at = now() + make_interval(secs => r.delay_s),
    locked_by = null, locked_until = null, last_error = %(error)s, updated_at = now()
from jsonb_to_recordset(%(rows)s::jsonb) as r(id bigint, delay_s double precision, dead boolean)
where m.id = r.id and m.locked_by = %(consumer)s and m.status = 'PROCESSING'
returning m.id, m.status, m.run_id, m.category_id, m.source_id, m.attempts;

-- outbox_sheet_release --
-- Give claimed messages back untried (shutdown): the attempt is not counted.
update sheet_outbox
set status = 'PENDING', attempts = greatest(attempts - 1, 0), next_attempt_at = now(),
    locked_by = null, locked_until = null, updated_at = now()
where id = any(%(ids)s) and locked_by = %(consumer)s and status = 'PROCESSING';

-- outbox_digest_enqueue --
-- One change digest per (run, category) written to the sheet; repeats (split batches, re-deliveries) are ignored.
insert into notification_outbox (kind, dedupe_key, severity, run_id, category_id, payload)
select 'CHANGE_DIGEST', 'digest:' || k.run_id || ':' || k.category_id, 'low', k.run_id, k.category_id,
       jsonb_build_object('run_id', k.run_id, 'category_id', k.category_id)
from jsonb_to_recordset(%(keys)s::jsonb) as k(run_id bigint, category_id bigint)
where k.run_id is not null
on conflict (dedupe_key) do nothing
returning id;

-- outbox_failed_alerts_enqueue --
-- One notification per high-severity FAILED or STALE alert of the lookback window not queued yet.
insert into notification_outbox (kind, dedupe_key, severity, run_id, category_id, alert_id, payload)
select case a.alert_type when 'FAILED' then 'FAILED_ALERT' else 'STALE_ALERT' end,
       lower(a.alert_type) || '-alert:' || a.id, 'high', a.run_id,
       coalesce(r.category_id, (a.detail ->> 'category_id')::bigint), a.id,
       jsonb_build_object('alert_id', a.id)
from alert a
left join run_log r on r.id = a.run_id
where a.alert_type in ('FAILED', 'STALE') and a.severity = 'high'
  and a.created_at >= now() - make_interval(secs => %(lookback_s)s)
order by a.id
on conflict (dedupe_key) do nothing
returning id;

-- outbox_notification_claim --
-- Claim ready notifications, oldest first.
with picked as (
    select id
    from notification_outbox
    where status in ('PENDING', 'PROCESSING') and next_attempt_at <= now() and attempts < %(max_attempts)s
    order by next_attempt_at, id
    limit %(batch)s
    for update skip locked
)
update notification_outbox m
set status = 'PROCESSING', attempts = m.attempts + 1, locked_by = %(consumer)s,
    locked_until = now() + make_interval(secs => %(lease_s)s),
    next_attempt_at = now() + make_interval(secs => %(lease_s)s), updated_at = now()
from picked
where m.id = picked.id
returning m.id, m.kind, m.dedupe_key, m.severity, m.run_id, m.category_id, m.alert_id, m.payload, m.attempts,
          m.delivered_to, m.created_at;

-- outbox_notification_park_expired --
-- Notifications with no attempt left (as outbox_sheet_park_expired): park them as dead.
update notification_outbox
set status = 'DEAD', locked_by = null, locked_until = null, updated_at = now(),
    last_error = case when status = 'PROCESSING'
        then 'lease expired on attempt ' || attempts || ' (consumer ' || coalesce(locked_by, '?')
             || ' stopped answering)' || coalesce('; before: ' || last_error, '')
        else 'no attempt left (OUTBOX_MAX_ATTEMPTS is ' || %(max_attempts)s || ')'
             || coalesce('; before: ' || last_error, '') end
where ((status = 'PROCESSING' and next_attempt_at <= now()) or status = 'PENDING') and attempts >= %(max_attempts)s
returning id, kind, dedupe_key, attempts, last_error;

-- outbox_notification_done --
-- A notification reached every channel it was meant for.
update notification_outbox
set status = 'DONE', processed_at = now(), delivered_to = %(delivered_to)s, locked_by = null,
    locked_until = null, last_error = null, updated_at = now()
where id = %(id)s and locked_by = %(consumer)s and status = 'PROCESSING'
returning id;

-- outbox_notification_retry --
-- A failed delivery: keep the channels it reached, retry the rest after the backoff, or park it as dead.
update notification_outbox
set status = case when %(dead)s then 'DEAD' else 'PENDING' end,
    next_attempt_at = now() + make_interval(secs => %(delay_s)s), delivered_to = %(delivered_to)s,
    locked_by = null, locked_until = null, last_error = %(error)s, updated_at = now()
where id = %(id)s and locked_by = %(consumer)s and status = 'PROCESSING'
returning id, status, kind, dedupe_key, attempts;

-- outbox_notification_defer --
-- Not ready to be sent yet (a digest whose run or sheet rows are still in progress): look again later,
-- without counting an attempt.
update notification_outbox
set status = 'PENDING', attempts = greatest(attempts - 1, 0),
    next_attempt_at = now() + make_interval(secs => %(delay_s)s), locked_by = null, locked_until = null,
    updated_at = now()
where id = any(%(ids)s) and locked_by = %(consumer)s and status = 'PROCESSING';

-- outbox_digest_facts --
-- What a change digest says, computed when it is sent: the run, and its sheet messages of the category by state.
select r.status as run_status, r.trigger_type, r.started_at, r.finished_at,
       count(s.id) filter (where s.payload ->> 'change' = 'NEW') as new_count,
       count(s.id) filter (where s.payload ->> 'change' = 'CHANGED') as changed_count,
       count(s.id) filter (where s.status = 'DONE') as written_count,
       count(s.id) filter (where s.status in ('PENDING', 'PROCESSING')) as open_count,
       count(s.id) filter (where s.status = 'DEAD') as dead_count
from (select %(run_id)s::bigint as run_id) k
left join run_log r on r.id = k.run_id
left join sheet_outbox s on s.run_id = k.run_id and s.category_id = %(category_id)s
group by r.status, r.trigger_type, r.started_at, r.finished_at;

-- outbox_digest_alerts --
-- The CHANGED alerts a run raised (or repeated) for a category, most severe first.
select id, severity, source_id, message, occurrences
from alert
where alert_type = 'CHANGED' and (run_id = %(run_id)s or last_run_id = %(run_id)s)
  and (detail ->> 'category_id') = %(category_id)s::text
order by case severity when 'high' then 0 when 'medium' then 1 else 2 end, id
limit %(limit)s;

-- outbox_alert_get --
-- One alert, for the message that announces it.
select id, alert_type, severity, source_type, source_id, message, detail, run_id, occurrences, created_at, resolved
from alert
where id = %(alert_id)s;

-- outbox_quota_take --
-- Take one token from a shared token bucket (refilled at %(rate)s per second up to %(capacity)s).
insert into outbox_quota as q (name, tokens, granted, refreshed_at)
values (%(name)s, %(capacity)s - 1, true, statement_timestamp())
on conflict (name) do update
set granted = least(%(capacity)s::float8, q.tokens + %(rate)s::float8
                    * greatest(0, extract(epoch from statement_timestamp() - q.refreshed_at))::float8) >= 1,
    tokens = least(%(capacity)s::float8, q.tokens + %(rate)s::float8
                   * greatest(0, extract(epoch from statement_timestamp() - q.refreshed_at))::float8)
             - case when least(%(capacity)s::float8, q.tokens + %(rate)s::float8
                    * greatest(0, extract(epoch from statement_timestamp() - q.refreshed_at))::float8) >= 1
                    then 1 else 0 end,
    refreshed_at = greatest(q.refreshed_at, statement_timestamp())  -- a statement that waited on the row lock
returning granted, tokens;                                            -- must not credit the same time twice

-- outbox_quota_drain --
-- The API answered 429: empty the bucket so every consumer slows down, not only the one that was told.
update outbox_quota set tokens = least(tokens, 0), refreshed_at = statement_timestamp() where name = %(name)s;

-- outbox_status --
-- Backlog, oldest open message and dead messages per queue (the README's operations check).
select 'sheet_outbox' as queue,
       count(*) filter (where status = 'PENDING') as pending,
       count(*) filter (where status = 'PROCESSING') as processing,
       count(*) filter (where status in ('PENDING', 'PROCESSING') and next_attempt_at <= now()) as ready,
       (select count(*) from sheet_outbox where status = 'DEAD') as dead,
       extract(epoch from now() - min(created_at))::bigint as oldest_open_age_s,
       max(attempts) as max_attempts_so_far
from sheet_outbox
where status in ('PENDING', 'PROCESSING')
union all
select 'notification_outbox',
       count(*) filter (where status = 'PENDING'),
       count(*) filter (where status = 'PROCESSING'),
       count(*) filter (where status in ('PENDING', 'PROCESSING') and next_attempt_at <= now()),
       (select count(*) from notification_outbox where status = 'DEAD'),
       extract(epoch from now() - min(created_at))::bigint,
       max(attempts)
from notification_outbox
where status in ('PENDING', 'PROCESSING');

-- outbox_dead_list --
-- The most recent dead messages of both queues, with their last error.
select * from (
    select 'sheet_outbox' as queue, id, 'category ' || category_id || ' ' || source_id as what, attempts,
           last_error, updated_at
    from sheet_outbox where status = 'DEAD'
    union all
    select 'notification_outbox', id, kind || ' ' || dedupe_key, attempts, last_error, updated_at
    from notification_outbox where status = 'DEAD'
) d
order by updated_at desc, id desc
limit %(limit)s;

-- outbox_sheet_dead_unalerted --
-- Dead sheet messages not announced yet, locked for the sweep that announces them.
select id, category_id::text as what, last_error, attempts
from sheet_outbox
where status = 'DEAD' and not dead_alerted
order by id
limit %(limit)s
for update skip locked;

-- outbox_notification_dead_unalerted --
-- Dead notifications not announced yet, locked for the sweep that announces them.
select id, kind as what, last_error, attempts
from notification_outbox
where status = 'DEAD' and not dead_alerted
order by id
limit %(limit)s
for update skip locked;

-- outbox_sheet_dead_alerted --
-- Mark dead sheet messages as announced.
update sheet_outbox set dead_alerted = true, updated_at = now() where id = any(%(ids)s);

-- outbox_notification_dead_alerted --
-- Mark dead notifications as announced.
update notification_outbox set dead_alerted = true, updated_at = now() where id = any(%(ids)s);
