-- 0005_status_history: one row per version of an enrolment status record that matters (new, changed, marked
-- missing, back again), written by the sync in the same statement as the record (docs/history.md).
-- new_status is null exactly when the learner is no longer listed (change = MISSING).
create table status_history (
    id              bigint generated always as identity primary key,
    source_id       text        not null,
    category_id     bigint      not null,
    course_id       bigint      not null,
    user_id         text        not null,
    change          text        not null check (change in ('NEW', 'CHANGED', 'MISSING', 'RETURNED')),
    old_status      text check (old_status in ('ENROLLED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED')),
    new_status      text check (new_status in ('ENROLLED', 'IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED')),
    old_status_msg  text,
    new_status_msg  text,
    old_gc_date     date,
    new_gc_date     date,
    old_sjc_date    date,
    new_sjc_date    date,
    update_time     timestamptz,
    run_id          bigint,
    changed_at      timestamptz not null,
    backfill        text check (backfill in ('alert', 'alert_latest', 'record')),
    alert_id        bigint,
    constraint status_history_missing_has_no_status check ((change = 'MISSING') = (new_status is null)),
    constraint status_history_backfill_once unique (alert_id, backfill)
);
create index status_history_category_user_idx on status_history (category_id, user_id, changed_at);
alter table status_history enable row level security;

-- Backfill, so that history starts out agreeing with the stored records (docs/history.md):
-- 1. the before/after of every CHANGED alert on a status record becomes a CHANGED row at the alert's creation,
--    and its last repeat (detail.latest) one at last_seen_at; repeats in between were never stored;
-- 2. every status record gets a NEW row at its first sighting, with the values before its first alerted change;
-- 3. where the last history row still differs from the record (a change whose alert was absorbed), a CHANGED
--    row brings it up to date at the record's last write; a record marked missing gets its MISSING row.
-- It runs only while the sync has written no history row itself, and running it again creates nothing.
do $backfill$
declare
    a record;
    from_alerts integer := 0;
    alerts integer := 0;
    undated integer := 0;
    firsts integer := 0;
    catch_ups integer := 0;
    missing integer := 0;
    n integer;
begin
    if exists (select 1 from status_history where backfill is null) then
        raise notice 'status_history backfill: skipped, the sync already writes history';
        return;
    end if;
    for a in
        select al.id, p.part, p.d, p.at, p.run, al.source_id,
               al.detail ->> 'category_id' as category_id, al.detail ->> 'course_id' as course_id,
               al.detail ->> 'user_id' as user_id
        from alert al
        cross join lateral (values ('alert', al.detail, al.created_at, al.run_id),
                                   ('alert_latest', al.detail -> 'latest', al.last_seen_at, al.last_run_id))
            as p(part, d, at, run)
        where al.alert_type = 'CHANGED' and al.source_type = 'enrolment_status'
          and al.detail ?& array['category_id', 'course_id', 'user_id']
          and jsonb_typeof(p.d -> 'before') = 'object' and p.d -> 'after' ->> 'status' is not null
        order by al.id, p.part
    loop
        alerts := alerts + (a.part = 'alert')::integer;
        begin
            insert into status_history (source_id, category_id, course_id, user_id, change,
                                        old_status, new_status, old_status_msg, new_status_msg,
                                        old_gc_date, new_gc_date, old_sjc_date, new_sjc_date, update_time,
                                        run_id, changed_at, backfill, alert_id)
            values (a.source_id, a.category_id::bigint, a.course_id::bigint, a.user_id, 'CHANGED',
                    a.d -> 'before' ->> 'status', a.d -> 'after' ->> 'status',
                    a.d -> 'before' ->> 'status_msg', a.d -> 'after' ->> 'status_msg',
                    (a.d -> 'before' ->> 'gc_date')::date, (a.d -> 'after' ->> 'gc_date')::date,
                    (a.d -> 'before' ->> 'sjc_date')::date, (a.d -> 'after' ->> 'sjc_date')::date,
                    (a.d -> 'after' ->> 'update_time')::timestamptz, a.run, a.at, a.part, a.id)
            on conflict (alert_id, backfill) do nothing;
            get diagnostics n = row_count;
        exception when invalid_datetime_format or datetime_field_overflow then
            -- a date as the upstream wrote it that Postgres cannot read: keep the status change, drop the dates
            insert into status_history (source_id, category_id, course_id, user_id, change,
                                        old_status, new_status, old_status_msg, new_status_msg,
                                        run_id, changed_at, backfill, alert_id)
            values (a.source_id, a.category_id::bigint, a.course_id::bigint, a.user_id, 'CHANGED',
                    a.d -> 'before' ->> 'status', a.d -> 'after' ->> 'status',
                    a.d -> 'before' ->> 'status_msg', a.d -> 'after' ->> 'status_msg',
                    a.run, a.at, a.part, a.id)
            on conflict (alert_id, backfill) do nothing;
            get diagnostics n = row_count;
            undated := undated + n;
        end;
        from_alerts := from_alerts + n;
    end loop;

    insert into status_history (source_id, category_id, course_id, user_id, change, new_status, new_status_msg,
                                new_gc_date, new_sjc_date, update_time, run_id, changed_at, backfill)
    select s.source_id, s.category_id, s.course_id, s.user_id, 'NEW',
           coalesce(f.old_status, s.status),
           case when f.id is null then s.status_msg else f.old_status_msg end,
           case when f.id is null then s.gc_date else f.old_gc_date end,
           case when f.id is null then s.sjc_date else f.old_sjc_date end,
           case when f.id is null then s.update_time end,
           s.first_seen_run_id, least(s.created_at, f.changed_at - interval '1 microsecond'), 'record'
    from source_record s
    left join lateral (
        select h.* from status_history h
        where h.source_id = s.source_id and h.category_id = s.category_id
        order by h.changed_at, h.id limit 1
    ) f on true
    where s.source_type = 'enrolment_status' and s.status is not null
      and s.course_id is not null and s.user_id is not null
      and not exists (select 1 from status_history h
                      where h.source_id = s.source_id and h.category_id = s.category_id and h.change = 'NEW');
    get diagnostics firsts = row_count;

    insert into status_history (source_id, category_id, course_id, user_id, change, old_status, new_status,
                                old_status_msg, new_status_msg, old_gc_date, new_gc_date, old_sjc_date,
                                new_sjc_date, update_time, run_id, changed_at, backfill)
    select s.source_id, s.category_id, s.course_id, s.user_id, 'CHANGED', l.new_status, s.status,
           l.new_status_msg, s.status_msg, l.new_gc_date, s.gc_date, l.new_sjc_date, s.sjc_date, s.update_time,
           s.last_changed_run_id, greatest(s.updated_at, l.changed_at), 'record'
    from source_record s
    join lateral (
        select h.* from status_history h
        where h.source_id = s.source_id and h.category_id = s.category_id
        order by h.changed_at desc, h.id desc limit 1
    ) l on true
    where s.source_type = 'enrolment_status' and s.status is not null and l.change <> 'MISSING'
      and (l.new_status, l.new_status_msg, l.new_gc_date, l.new_sjc_date)
          is distinct from (s.status, s.status_msg, s.gc_date, s.sjc_date);
    get diagnostics catch_ups = row_count;

    insert into status_history (source_id, category_id, course_id, user_id, change, old_status, old_status_msg,
                                old_gc_date, old_sjc_date, update_time, run_id, changed_at, backfill)
    select s.source_id, s.category_id, s.course_id, s.user_id, 'MISSING', s.status, s.status_msg, s.gc_date,
           s.sjc_date, s.update_time, null, s.missing_since, 'record'
    from source_record s
    where s.source_type = 'enrolment_status' and s.status is not null and s.missing_since is not null
      and (select h.change from status_history h where h.source_id = s.source_id and h.category_id = s.category_id
           order by h.changed_at desc, h.id desc limit 1) is distinct from 'MISSING';
    get diagnostics missing = row_count;

    raise notice 'status_history backfill: % rows from % CHANGED alerts (% of them without dates: unreadable date text), % first-seen rows for stored records, % catch-up rows, % missing rows',
        from_alerts, alerts, undated, firsts, catch_ups, missing;
end
$backfill$;
