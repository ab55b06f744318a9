-- 0008_alert_lifecycle: acknowledge, silences, quiet hours, recovery notices, inhibition, escalation and the
-- mass-change guard (docs/alerts.md). Alerts keep being raised as before; these decide what is sent.

-- Acknowledged: someone is on it. Repeats are still counted; no escalation follows.
alter table alert add column acknowledged_at timestamptz;
alter table alert add column acknowledged_by text;
alter table alert add column ack_note text;
-- The silence that matched the alert when it was raised (it is recorded as usual, never sent).
alter table alert add column silence_id bigint;

create table alert_silence (
    id          bigint generated always as identity primary key,
    category_id bigint,                 -- null: every category (and job-wide alerts)
    alert_type  text check (alert_type in ('CHANGED', 'FAILED', 'STALE', 'DEAD_LETTER')),
    severity    text check (severity in ('low', 'medium', 'high')),
    starts_at   timestamptz not null,
    ends_at     timestamptz not null,
    comment     text        not null,
    created_by  text        not null,
    created_at  timestamptz not null default now(),
    removed_at  timestamptz,
    removed_by  text,
    constraint alert_silence_window check (ends_at > starts_at),
    constraint alert_silence_matches_something check (
        category_id is not null or alert_type is not null or severity is not null)
);
alter table alert_silence enable row level security;
create index alert_silence_active_idx on alert_silence (ends_at) where removed_at is null;

-- The category an alert is about: its detail's, else its run's (a FAILED alert is job-wide, its run is not).
create function enrolment_sync_alert_category(a alert) returns bigint
language sql stable as $$
    select coalesce(
        case when a.detail ->> 'category_id' ~ '^[0-9]{1,18}$' then (a.detail ->> 'category_id')::bigint end,
        (select r.category_id from run_log r where r.id = a.run_id))
$$;

-- The id of an active silence that matches the alert at `at` (the oldest), or null.
create function enrolment_sync_alert_silence(a alert, at timestamptz) returns bigint
language sql stable as $$
    select s.id
    from alert_silence s
    where s.removed_at is null and s.starts_at <= at and at < s.ends_at
      and (s.alert_type is null or s.alert_type = a.alert_type)
      and (s.severity is null or s.severity = a.severity)
      and (s.category_id is null or s.category_id = enrolment_sync_alert_category(a))
    order by s.id
    limit 1
$$;

-- New notification kinds: a 복구 notice, an escalation, a mass-change alert. Notifications held back by quiet
-- hours are marked, so the first delivery after the window sends them together as one digest.
alter table notification_outbox drop constraint notification_outbox_kind_check;
alter table notification_outbox add constraint notification_outbox_kind_check check (kind in (
    'CHANGE_DIGEST', 'FAILED_ALERT', 'DEAD_MESSAGE', 'STALE_ALERT', 'MASS_CHANGE_ALERT', 'ALERT_RECOVERY',
    'ESCALATION'));
alter table notification_outbox add column quiet_held boolean not null default false;
-- What became of a notification that was not sent (resolved, silenced, inhibited, acknowledged).
alter table notification_outbox add column skipped text;
create index notification_outbox_alert_idx on notification_outbox (alert_id) where alert_id is not null;

-- Escalation looks at still open high alerts (recovery notices read 0010's alert_resolved_at_idx).
create index alert_open_high_idx on alert (created_at) where not resolved and severity = 'high';
