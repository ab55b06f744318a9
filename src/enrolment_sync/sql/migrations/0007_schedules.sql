-- 0007_schedules: unattended operation (issue 12). Schedules live in the database, each slot fired once
-- (sync_slot's primary key), requests wait in a queue (sync_request) that the always-on worker claims, and
-- enrolment_sync_request() lets SQL (pg_cron / Supabase Cron) queue one with no URL, secret or timeout.

create table sync_schedule (
    id                   bigint generated always as identity primary key,
    category_id          bigint      not null check (category_id > 0),
    max_categories       integer     not null default 1 check (max_categories between 1 and 100),
    max_users_per_course integer     not null default 500 check (max_users_per_course between 1 and 100000),
    cron_expr            text,
    timezone             text        not null default 'Asia/Seoul',
    every_seconds        double precision check (every_seconds > 0),
    enabled              boolean     not null default true,
    enabled_since        timestamptz not null default now(),  -- slots before it are neither fired nor watched
    paused_at            timestamptz,
    paused_reason        text,
    paused_auto          boolean     not null default false,  -- paused by repeated failures (a manual success resumes)
    last_slot_at         timestamptz,                          -- the latest slot fired
    stale_slot_at        timestamptz,                          -- the latest slot the watchdog raised STALE for
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now(),
    constraint sync_schedule_cron_or_every check ((cron_expr is null) <> (every_seconds is null)),
    constraint sync_schedule_paused_has_time check (enabled = (paused_at is null))
);
create index sync_schedule_category_idx on sync_schedule (category_id);

-- One row per fired slot: the primary key is what makes a slot fire once across processes and hosts.
create table sync_slot (
    schedule_id bigint      not null references sync_schedule (id) on delete cascade,
    slot_at     timestamptz not null,
    request_id  bigint,
    fired_at    timestamptz not null default now(),
    fired_by    text,
    primary key (schedule_id, slot_at)
);

-- The queue columns (status ... processed_at) follow the one queue implementation's contract, as the outbox
-- tables do; the rest is the request: Step 1's parameters, where it came from, and what its run answered.
create table sync_request (
    id                   bigint generated always as identity primary key,
    category_id          bigint      not null check (category_id > 0),
    trigger_type         text        not null check (trigger_type in ('MANUAL', 'SCHEDULER', 'RETRY')),
    max_categories       integer     not null default 1 check (max_categories between 1 and 100),
    max_users_per_course integer     not null default 500 check (max_users_per_course between 1 and 100000),
    schedule_id          bigint      references sync_schedule (id) on delete set null,
    retry_of_run_id      bigint,
    retry_number         integer     not null default 0 check (retry_number >= 0),
    coalesced            integer     not null default 0 check (coalesced >= 0),
    requested_by         text,
    run_id               bigint,
    http_status          integer,
    result               jsonb,
    status               text        not null default 'PENDING'
                             check (status in ('PENDING', 'PROCESSING', 'DONE', 'DEAD')),
    attempts             integer     not null default 0 check (attempts >= 0),
    next_attempt_at      timestamptz not null default now(),
    locked_by            text,
    locked_until         timestamptz,
    last_error           text,
    dead_alerted         boolean     not null default false,
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now(),
    processed_at         timestamptz
);
create index sync_request_claim_idx on sync_request (next_attempt_at, id) where status in ('PENDING', 'PROCESSING');
create index sync_request_queued_key_idx on sync_request (category_id, max_categories, max_users_per_course)
    where status = 'PENDING';
create index sync_request_dead_unalerted_idx on sync_request (id) where status = 'DEAD' and not dead_alerted;

-- The always-on loop of each process beats here; /healthz and `schedule list` read it.
create table scheduler_heartbeat (
    worker_id  text        primary key,
    started_at timestamptz not null default now(),
    beat_at    timestamptz not null default now(),
    stopped_at timestamptz,
    state      jsonb       not null default '{}'::jsonb
);

-- A run says which request it served and which failed run it retries.
alter table run_log add column request_id bigint, add column retry_of_run_id bigint;
create index run_log_retry_of_idx on run_log (retry_of_run_id) where retry_of_run_id is not null;
create index run_log_category_id_idx on run_log (category_id, id desc);

alter table sync_schedule       enable row level security;
alter table sync_slot           enable row level security;
alter table sync_request        enable row level security;
alter table scheduler_heartbeat enable row level security;

-- Queue one sync request and return its id. A request for the same category and parameters already waiting
-- in the queue absorbs this one (its `coalesced` count goes up; it runs at the earlier of the two times).
create function enrolment_sync_request(
    category_id          bigint,
    trigger_type         text        default 'MANUAL',
    max_categories       integer     default 1,
    max_users_per_course integer     default 500,
    not_before           timestamptz default null,
    retry_of_run_id      bigint      default null,
    retry_number         integer     default 0,
    schedule_id          bigint      default null,
    requested_by         text        default null
) returns bigint
language plpgsql
set search_path from current
as $fn$
#variable_conflict use_column
declare
    ready_at timestamptz := greatest(coalesce(enrolment_sync_request.not_before, now()), now());
    queued   bigint;
begin
    if enrolment_sync_request.category_id is null or enrolment_sync_request.category_id <= 0 then
        raise exception 'enrolment_sync_request: category_id must be a positive integer, not %',
            coalesce(enrolment_sync_request.category_id::text, 'null') using errcode = '22023';
    end if;
    if enrolment_sync_request.trigger_type is null
       or enrolment_sync_request.trigger_type not in ('MANUAL', 'SCHEDULER', 'RETRY') then
        raise exception 'enrolment_sync_request: trigger_type must be MANUAL, SCHEDULER or RETRY, not %',
            coalesce(quote_literal(enrolment_sync_request.trigger_type), 'null') using errcode = '22023';
    end if;
    if enrolment_sync_request.max_categories is null or enrolment_sync_request.max_categories not between 1 and 100 then
        raise exception 'enrolment_sync_request: max_categories must be between 1 and 100, not %',
            coalesce(enrolment_sync_request.max_categories::text, 'null') using errcode = '22023';
    end if;
    if enrolment_sync_request.max_users_per_course is null
       or enrolment_sync_request.max_users_per_course not between 1 and 100000 then
        raise exception 'enrolment_sync_request: max_users_per_course must be between 1 and 100000, not %',
            coalesce(enrolment_sync_request.max_users_per_course::text, 'null') using errcode = '22023';
    end if;
    -- Serialise requests of one category (transaction-scoped: safe behind a transaction pooler).
    perform pg_advisory_xact_lock(hashtextextended('enrolment_sync_request:' || enrolment_sync_request.category_id, 0));
    select r.id into queued
    from sync_request r
    where r.status = 'PENDING' and r.category_id = enrolment_sync_request.category_id
      and r.max_categories = enrolment_sync_request.max_categories
      and r.max_users_per_course = enrolment_sync_request.max_users_per_course
    order by r.id
    limit 1
    for update;
    if queued is not null then
        update sync_request r
        set coalesced = r.coalesced + 1, next_attempt_at = least(r.next_attempt_at, ready_at),
            retry_of_run_id = coalesce(r.retry_of_run_id, enrolment_sync_request.retry_of_run_id), updated_at = now()
        where r.id = queued;
        return queued;
    end if;
    insert into sync_request as r (category_id, trigger_type, max_categories, max_users_per_course, schedule_id,
                                   retry_of_run_id, retry_number, requested_by, next_attempt_at)
    values (enrolment_sync_request.category_id, enrolment_sync_request.trigger_type,
            enrolment_sync_request.max_categories, enrolment_sync_request.max_users_per_course,
            enrolment_sync_request.schedule_id, enrolment_sync_request.retry_of_run_id,
            coalesce(enrolment_sync_request.retry_number, 0), enrolment_sync_request.requested_by, ready_at)
    returning r.id into queued;
    return queued;
end
$fn$;

-- Only the owner (the worker, pg_cron's job owner) may queue syncs: never Supabase's Data API roles.
revoke execute on function enrolment_sync_request(bigint, text, integer, integer, timestamptz, bigint, integer, bigint,
                                                  text) from public;
do $$
declare
    role_name text;
begin
    foreach role_name in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = role_name) then
            execute format('revoke execute on function enrolment_sync_request(bigint, text, integer, integer, '
                           'timestamptz, bigint, integer, bigint, text) from %I', role_name);
        end if;
    end loop;
end
$$;
