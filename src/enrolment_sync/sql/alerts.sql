-- The alert lifecycle (migration 0008, docs/alerts.md): acknowledge, silences, and what the notification
-- consumer queues and checks before it sends. Same named-block format as queries.sql.

-- alerts_mark_silenced --
-- Alerts just raised that an active silence matches: recorded as usual, marked with the silence.
update alert a
set silence_id = enrolment_sync_alert_silence(a, %(now)s)
where a.id = any(%(ids)s::bigint[]) and a.silence_id is null and enrolment_sync_alert_silence(a, %(now)s) is not null
returning a.id, a.silence_id;

-- alerts_acknowledge --
-- Someone is on it: who, when, a note. Only an open alert; acknowledging again keeps the first acknowledgement.
update alert
set acknowledged_at = %(now)s, acknowledged_by = %(by)s, ack_note = %(note)s, updated_at = %(now)s
where id = %(alert_id)s and not resolved and acknowledged_at is null
returning id, alert_type, severity, source_id, acknowledged_at, acknowledged_by, ack_note;

-- silence_insert --
-- A silence: by category, alert type and/or severity, from a start to an end, with a comment.
insert into alert_silence (category_id, alert_type, severity, starts_at, ends_at, comment, created_by, created_at)
values (%(category_id)s, %(alert_type)s, %(severity)s, %(starts_at)s, %(ends_at)s, %(comment)s, %(by)s, %(now)s)
returning *;

-- silence_list --
-- Silences not removed, newest first; those already over only with include_ended.
select *, starts_at <= %(now)s and %(now)s < ends_at as active
from alert_silence
where removed_at is null and (%(include_ended)s or ends_at > %(now)s)
order by id desc
limit %(limit)s;

-- silence_remove --
-- End a silence by hand (kept, marked removed).
update alert_silence
set removed_at = %(now)s, removed_by = %(by)s
where id = %(silence_id)s and removed_at is null
returning id;

-- mass_change_fold --
-- The per-learner CHANGED alerts this run raised for a cohort, folded into its one 대량 변경 alert.
update alert a
set resolved = true, resolved_at = %(now)s, resolved_by = 'mass change alert ' || %(into_id)s::text,
    detail = a.detail || jsonb_build_object('folded_into', %(into_id)s::bigint), updated_at = %(now)s
where a.alert_type = 'CHANGED' and a.source_type = 'enrolment_status' and a.run_id = %(run_id)s
  and (a.detail ->> 'category_id') = %(category_id)s::text and not a.resolved
returning a.id;

-- outbox_alert_state --
-- One alert with what decides whether its notice goes out now: resolved, acknowledged, an active silence, and
-- for a STALE alert an open job-wide FAILED alert (HTTP_5XX, TIMEOUT) whose failed runs include its category.
select a.id, a.alert_type, a.severity, a.source_type, a.source_id, a.message, a.detail, a.run_id, a.occurrences,
       a.created_at, a.resolved, a.resolved_at, a.resolved_by, a.acknowledged_at is not null as acknowledged,
       coalesce(a.silence_id, enrolment_sync_alert_silence(a, now())) as active_silence_id,
       (select f.id
        from alert f
        where a.alert_type = 'STALE' and f.alert_type = 'FAILED' and f.source_type = 'run_log' and not f.resolved
          and f.detail ->> 'error_group' in ('HTTP_5XX', 'TIMEOUT')
          and f.source_id = (a.detail ->> 'job_name') || ':' || (f.detail ->> 'error_group')
          and exists (
              select 1 from run_log r
              where r.category_id = enrolment_sync_alert_category(a) and r.status = 'FAILED'
                and r.error_group = f.detail ->> 'error_group'
                and (r.id = f.run_id or r.finished_at >= f.created_at))
        order by f.id
        limit 1) as inhibited_by
from alert a
where a.id = %(alert_id)s;

-- outbox_mass_change_enqueue --
-- One notification per 대량 변경 alert of the lookback window (high: sent at once, also in quiet hours).
insert into notification_outbox (kind, dedupe_key, severity, run_id, category_id, alert_id, payload)
select 'MASS_CHANGE_ALERT', 'mass-change-alert:' || a.id, a.severity, a.run_id, (a.detail ->> 'category_id')::bigint,
       a.id, jsonb_build_object('alert_id', a.id)
from alert a
where a.alert_type = 'CHANGED' and a.source_type = 'mass_change' and not a.resolved and a.silence_id is null
  and a.created_at >= now() - make_interval(secs => %(lookback_s)s)
order by a.id
on conflict (dedupe_key) do nothing
returning id;

-- outbox_recovery_enqueue --
-- A 복구 notice for each alert resolved in the lookback window whose notices reached a channel, once every
-- notice of it has settled; it goes to exactly the channels they reached (escalation channels included).
insert into notification_outbox (kind, dedupe_key, severity, run_id, category_id, alert_id, payload)
select 'ALERT_RECOVERY', 'recovery:' || a.id, a.severity, a.run_id, n.category_id, a.id,
       jsonb_build_object('alert_id', a.id, 'channels', n.channels)
from alert a
cross join lateral (
    select array_agg(distinct c) as channels, max(o.category_id) as category_id
    from notification_outbox o cross join unnest(o.delivered_to) as c
    where o.alert_id = a.id and o.kind <> 'ALERT_RECOVERY'
) n
where a.resolved and a.resolved_at >= now() - make_interval(secs => %(lookback_s)s)
  and n.channels is not null
  and not exists (
      select 1 from notification_outbox p
      where p.alert_id = a.id and p.kind <> 'ALERT_RECOVERY' and p.status in ('PENDING', 'PROCESSING'))
order by a.id
on conflict (dedupe_key) do nothing
returning id;

-- outbox_escalation_enqueue --
-- A high alert neither acknowledged nor resolved ESCALATE_AFTER_MINUTES after it was raised, whose notice
-- went out: sent again, once, to NOTIFY_URLS_ESCALATE.
insert into notification_outbox (kind, dedupe_key, severity, run_id, category_id, alert_id, payload)
select 'ESCALATION', 'escalation:' || a.id, 'high', a.run_id, max(o.category_id), a.id,
       jsonb_build_object('alert_id', a.id)
from alert a
join notification_outbox o on o.alert_id = a.id and o.kind <> 'ALERT_RECOVERY' and cardinality(o.delivered_to) > 0
where not a.resolved and a.severity = 'high' and a.acknowledged_at is null and a.silence_id is null
  and a.created_at <= now() - make_interval(secs => %(after_s)s)
  and a.created_at >= now() - make_interval(secs => %(lookback_s)s)
group by a.id
order by a.id
on conflict (dedupe_key) do nothing
returning id;

-- outbox_notification_skipped --
-- A notice that is not sent, and why (resolved, silenced, inhibited, acknowledged): kept, never retried.
update notification_outbox
set skipped = %(why)s, updated_at = now()
where id = %(id)s and locked_by = %(consumer)s and status = 'PROCESSING';

-- outbox_notification_hold --
-- Held back by quiet hours: marked, so the first delivery after the window sends it in the overnight digest.
update notification_outbox
set quiet_held = true, updated_at = now()
where id = any(%(ids)s::bigint[]) and locked_by = %(consumer)s and status = 'PROCESSING';
