-- 0001_initial: every table of the worker. Postgres 15 features only; works through Supabase's
-- transaction pooler (no session state is relied on). RLS is enabled with no policy on every table:
-- Supabase's Data API (anon/authenticated roles) sees nothing; the worker connects as the owner.

create table run_log (
    id               bigint generated always as identity primary key,
    job_name         text        not null default 'enrolment_sync',
    trigger_type     text        not null check (trigger_type in ('MANUAL', 'SCHEDULER', 'RETRY')),
    status           text        not null check (status in ('RUNNING', 'SUCCESS', 'FAILED')),
    category_id      bigint,
    params           jsonb       not null default '{}'::jsonb,
    total_records    integer     not null default 0 check (total_records >= 0),
    new_records      integer     not null default 0 check (new_records >= 0),
    changed_records  integer     not null default 0 check (changed_records >= 0),
    created_alerts   integer     not null default 0 check (created_alerts >= 0),
    summary          jsonb,
    error_message    text,
    error_group      text check (error_group in
                         ('LOCK_CONFLICT', 'HTTP_409', 'HTTP_5XX', 'HTTP_4XX', 'TIMEOUT', 'UNKNOWN')),
    http_status_code integer,
    worker_id        text,
    started_at       timestamptz not null default now(),
    finished_at      timestamptz,
    updated_at       timestamptz not null default now(),
    constraint run_log_finished_unless_running check ((status = 'RUNNING') = (finished_at is null)),
    constraint run_log_failed_has_message check (status <> 'FAILED' or error_message is not null)
);
create index run_log_status_id_idx on run_log (status, id desc);
create index run_log_job_category_success_idx on run_log (job_name, category_id, finished_at desc)
    where status = 'SUCCESS';

create table job_lock (
    job_name        text        primary key,
    locked_by       text        not null,
    run_id          bigint,
    locked_at       timestamptz not null default now(),
    lock_expires_at timestamptz not null,
    renewed_at      timestamptz not null default now()
);

create table source_record (
    id                  bigint generated always as identity primary key,
    source_type         text        not null check (source_type in ('enrolment_status', 'enrolment_detail')),
    source_id           text        not null,
    category_id         bigint      not null,
    course_id           bigint,
    user_id             text,
    status              text check (status in ('ENROLLED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED')),
    status_msg          text,
    gc_date             date,
    sjc_date            date,
    update_time         timestamptz,
    payload             jsonb       not null,
    content_hash        text        not null,
    first_seen_run_id   bigint,
    last_changed_run_id bigint,
    missing_since       timestamptz,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    unique (source_type, source_id)
);
create index source_record_category_type_updated_idx
    on source_record (category_id, source_type, updated_at desc);
create index source_record_category_course_idx on source_record (category_id, course_id);

create table alert (
    id           bigint generated always as identity primary key,
    alert_type   text        not null check (alert_type in ('CHANGED', 'FAILED', 'STALE', 'DEAD_LETTER')),
    severity     text        not null check (severity in ('low', 'medium', 'high')),
    source_type  text        not null,
    source_id    text        not null,
    message      text        not null,
    detail       jsonb       not null default '{}'::jsonb,
    run_id       bigint,
    occurrences  integer     not null default 1 check (occurrences >= 1),
    last_seen_at timestamptz not null default now(),
    last_run_id  bigint,
    resolved     boolean     not null default false,
    resolved_at  timestamptz,
    resolved_by  text,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    constraint alert_resolved_has_time check (resolved = (resolved_at is not null))
);
create index alert_open_key_idx on alert (alert_type, source_type, source_id, created_at desc)
    where not resolved;
create index alert_open_severity_idx on alert (severity, created_at desc) where not resolved;
create index alert_created_idx on alert (created_at);
create index alert_failed_run_idx on alert ((detail ->> 'run_id')) where alert_type = 'FAILED';

create table sheet_outbox (
    id              bigint generated always as identity primary key,
    run_id          bigint,
    category_id     bigint      not null,
    source_id       text        not null,
    payload         jsonb       not null,
    status          text        not null default 'PENDING'
                        check (status in ('PENDING', 'PROCESSING', 'DONE', 'DEAD')),
    attempts        integer     not null default 0 check (attempts >= 0),
    next_attempt_at timestamptz not null default now(),
    locked_by       text,
    locked_until    timestamptz,
    last_error      text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    processed_at    timestamptz
);
create index sheet_outbox_claim_idx on sheet_outbox (next_attempt_at, id)
    where status in ('PENDING', 'PROCESSING');
create index sheet_outbox_dead_idx on sheet_outbox (id) where status = 'DEAD';

create table notification_outbox (
    id              bigint generated always as identity primary key,
    kind            text        not null check (kind in ('CHANGE_DIGEST', 'FAILED_ALERT', 'DEAD_MESSAGE', 'STALE_ALERT')),
    dedupe_key      text        not null unique,
    severity        text        not null default 'low' check (severity in ('low', 'medium', 'high')),
    run_id          bigint,
    category_id     bigint,
    alert_id        bigint,
    payload         jsonb       not null,
    status          text        not null default 'PENDING'
                        check (status in ('PENDING', 'PROCESSING', 'DONE', 'DEAD')),
    attempts        integer     not null default 0 check (attempts >= 0),
    next_attempt_at timestamptz not null default now(),
    locked_by       text,
    locked_until    timestamptz,
    last_error      text,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    processed_at    timestamptz
);
create index notification_outbox_claim_idx on notification_outbox (next_attempt_at, id)
    where status in ('PENDING', 'PROCESSING');
create index notification_outbox_dead_idx on notification_outbox (id) where status = 'DEAD';

alter table run_log             enable row level security;
alter table job_lock            enable row level security;
alter table source_record       enable row level security;
alter table alert               enable row level security;
alter table sheet_outbox        enable row level security;
alter table notification_outbox enable row level security;
