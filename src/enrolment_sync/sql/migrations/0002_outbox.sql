-- 0002_outbox: what the outbox consumers need beyond 0001 (Step 3).

-- Per-enrolment ordering: a sheet message is claimable only when no older message of the same source_id is
-- still open, so two consumers never work on one learner's row at once (no duplicate appends, no stale
-- overwrite). This index answers that `not exists` probe.
create index sheet_outbox_source_open_idx on sheet_outbox (source_id, id)
    where status in ('PENDING', 'PROCESSING');

-- The change digest of a run and category is computed from that run's sheet messages at delivery time.
create index sheet_outbox_run_category_idx on sheet_outbox (run_id, category_id);

-- Channels a notification already reached (hashes of the Apprise URLs), so a retry only repeats the
-- channels that failed.
alter table notification_outbox add column delivered_to text[] not null default '{}';

-- High-severity FAILED alerts are picked up by the notification consumer (one message per alert).
create index alert_failed_high_created_idx on alert (created_at)
    where alert_type = 'FAILED' and severity = 'high';

-- A token bucket per API quota (Google Sheets reads / writes), shared by every consumer process and host.
-- Updated in one short statement, so it works through a transaction pooler.
create table outbox_quota (
    name         text        primary key,
    tokens       double precision not null,
    granted      boolean     not null default true,
    refreshed_at timestamptz not null default now()
);
alter table outbox_quota enable row level security;

-- The change digest lists the CHANGED alerts a run raised or repeated.
create index alert_changed_run_idx on alert (run_id) where alert_type = 'CHANGED';
create index alert_changed_last_run_idx on alert (last_run_id) where alert_type = 'CHANGED';
