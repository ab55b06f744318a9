-- Queries of the outbox consumers (Step 3) beyond the queue itself (sql/queue.sql, run by queue.py for both
-- sheet_outbox and notification_outbox), same named-block format as queries.sql. Every unit of work is one
-- short transaction: no session state, no session advisory locks, no LISTEN (Supabase transaction pooler).

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
-- One notification per open, unsilenced high-severity FAILED or STALE alert of the lookback window not queued yet.
insert into notification_outbox (kind, dedupe_key, severity, run_id, category_id, alert_id, payload)
select case a.alert_type when 'FAILED' then 'FAILED_ALERT' else 'STALE_ALERT' end,
       lower(a.alert_type) || '-alert:' || a.id, 'high', a.run_id,
       coalesce(r.category_id, (a.detail ->> 'category_id')::bigint), a.id,
       jsonb_build_object('alert_id', a.id)
from alert a
left join run_log r on r.id = a.run_id
where a.alert_type in ('FAILED', 'STALE') and a.severity = 'high' and not a.resolved and a.silence_id is null
  and a.created_at >= now() - make_interval(secs => %(lookback_s)s)
order by a.id
on conflict (dedupe_key) do nothing
returning id;

-- outbox_notification_delivered --
-- The channels a claimed notification reached, and the POSTs still unanswered from earlier attempts (same
-- transaction as its queue_done or queue_retry).
update notification_outbox
set delivered_to = %(delivered_to)s, sent_unconfirmed = %(sent_unconfirmed)s, updated_at = now()
where id = %(id)s and locked_by = %(consumer)s and status = 'PROCESSING';

-- outbox_notification_sending --
-- Before a POST to a channel: counted as sent and not confirmed until this attempt records its outcome, so a
-- consumer that dies while the POST is under way leaves what is known (sent there, never confirmed).
update notification_outbox
set sent_unconfirmed = %(sent_unconfirmed)s, updated_at = now()
where id = %(id)s and locked_by = %(consumer)s and status = 'PROCESSING';

-- outbox_digest_facts --
-- What a change digest says, computed when it is sent: the run, and its sheet messages of the category by state.
select r.status as run_status, r.trigger_type, r.started_at, r.finished_at,
       extract(epoch from now() - %(created_at)s::timestamptz)::float8 as age_s,  -- the database's clock
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
-- The CHANGED alerts a run raised (or repeated) for a category, most severe first (a 대량 변경 alert first of
-- all); neither those folded into a 대량 변경 alert nor silenced ones.
select a.id, a.severity, a.source_type, a.source_id, a.message, a.occurrences
from alert a
where a.alert_type = 'CHANGED' and (a.run_id = %(run_id)s or a.last_run_id = %(run_id)s)
  and (a.detail ->> 'category_id') = %(category_id)s::text
  and not a.detail ? 'folded_into' and a.silence_id is null and enrolment_sync_alert_silence(a, now()) is null
order by a.source_type = 'mass_change' desc, case a.severity when 'high' then 0 when 'medium' then 1 else 2 end, a.id
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
