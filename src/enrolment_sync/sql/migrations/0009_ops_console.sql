-- 0009_ops_console: the operations console (/ops): its audit table, and the indexes its pages read through so
-- that none of them scans a large table whole (docs/console.md; `python -m bench ops` checks the plans).

-- Every console action, allowed or refused: who (the login's user name, or the API token), when, what, on
-- which target, and the outcome. Passwords and tokens are never written here.
create table ops_audit (
    id          bigint generated always as identity primary key,
    at          timestamptz not null default now(),
    actor       text        not null,
    role        text        not null check (role in ('admin', 'readonly', 'token')),
    action      text        not null,
    target      text        not null,
    outcome     text        not null check (outcome in ('OK', 'NOOP', 'DENIED', 'FAILED')),
    detail      jsonb       not null default '{}'::jsonb,
    remote_addr text
);
create index ops_audit_target_idx on ops_audit (target, id desc);
alter table ops_audit enable row level security;

-- Cohorts on the overview (a skip scan over the categories) and a cohort's runs, newest first, read through
-- run_log_category_id_idx (category_id, id desc), which 0007 creates.

-- Open alerts newest first, and the FAILED alert list (4-2), without walking every alert.
create index alert_open_id_idx on alert (id desc) where not resolved;
create index alert_failed_id_idx on alert (id desc) where alert_type = 'FAILED';
-- The changes seen for one learner: the alerts of their record keys, resolved or not.
create index alert_source_id_idx on alert (source_id, id desc);

-- The notifications a run produced.
create index notification_outbox_run_idx on notification_outbox (run_id) where run_id is not null;

-- A learner's records in one cohort, by exact id or id prefix.
create index source_record_category_user_idx on source_record (category_id, user_id text_pattern_ops);

-- Re-queuing a dead sheet message checks that no newer message exists for the same enrolment (an older row
-- delivered after a newer one would overwrite it on the sheet).
create index sheet_outbox_source_idx on sheet_outbox (source_id, id);

-- Dead sync requests counted on the queues page.
create index sync_request_dead_idx on sync_request (id) where status = 'DEAD';
