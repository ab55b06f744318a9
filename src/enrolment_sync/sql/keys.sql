-- The record-key migration (docs/decisions/record-key.md): from the old `category_id:user_id` key to the final
-- `category_id:course_id:user_id`. Run in this order inside one transaction by keymigration.migrate_keys:
-- lock, plan, report, merge, re-point, move, delete. Set-based: every statement works on the whole plan.

-- keys_lock --
-- Keep syncs from writing records while the keys move (reads go on; released at commit or rollback).
lock table source_record in share row exclusive mode;

-- keys_plan --
-- Every record under a two-part key, with its new key, or the reason it cannot have one (left untouched).
create temp table key_plan on commit drop as
with old as (
    select id, source_type, source_id, category_id, course_id, user_id, payload, updated_at,
           split_part(source_id, ':', 1) as key_category, split_part(source_id, ':', 2) as key_user
    from source_record
    where source_id ~ '^[^:]+:[^:]+$'
), classified as (
    select o.*,
           case
               when o.course_id is null then 'no_course_id'
               when o.key_category <> o.category_id::text then 'category_mismatch'
               when o.user_id is not null and o.user_id <> o.key_user then 'user_mismatch'
               when o.payload ->> 'course_id' is not null and o.payload ->> 'course_id' <> o.course_id::text
                   then 'payload_course_mismatch'
           end as problem
    from old o
)
select c.id, c.source_type, c.source_id as old_key,
       case when c.problem is null then c.category_id || ':' || c.course_id || ':' || c.key_user end as new_key,
       c.problem,
       case
           when c.problem = 'no_course_id' then 'course_id is null'
           when c.problem = 'category_mismatch' then 'key category ' || c.key_category || ', column ' || c.category_id
           when c.problem = 'user_mismatch' then 'key user ' || c.key_user || ', column ' || c.user_id
           when c.problem = 'payload_course_mismatch'
               then 'column course_id ' || c.course_id || ', payload course_id ' || (c.payload ->> 'course_id')
       end as problem_detail,
       n.id as target_id,
       n.id is not null and c.updated_at > n.updated_at as old_wins
from classified c
left join source_record n
    on c.problem is null and n.source_type = c.source_type
   and n.source_id = c.category_id || ':' || c.course_id || ':' || c.key_user;

-- keys_plan_counts --
-- What the plan will do, in numbers.
select count(*) filter (where new_key is not null and target_id is null) as moved,
       count(*) filter (where target_id is not null) as merged,
       count(*) filter (where target_id is not null and old_wins) as merged_kept_old_content,
       count(*) filter (where problem is not null) as left_untouched
from key_plan;

-- keys_plan_left --
-- The records the plan leaves under their old key, and why.
select source_type, old_key as source_id, problem, problem_detail
from key_plan
where problem is not null
order by problem, old_key, source_type;

-- keys_merge_content --
-- A merge keeps the content of the row updated last (a tie keeps the new-key row), and the earliest history.
update source_record t
set payload             = case when p.old_wins then o.payload else t.payload end,
    content_hash        = case when p.old_wins then o.content_hash else t.content_hash end,
    user_id             = case when p.old_wins then coalesce(o.user_id, t.user_id) else t.user_id end,
    status              = case when p.old_wins then o.status else t.status end,
    status_msg          = case when p.old_wins then o.status_msg else t.status_msg end,
    gc_date             = case when p.old_wins then o.gc_date else t.gc_date end,
    sjc_date            = case when p.old_wins then o.sjc_date else t.sjc_date end,
    update_time         = case when p.old_wins then o.update_time else t.update_time end,
    missing_since       = case when p.old_wins then o.missing_since else t.missing_since end,
    last_changed_run_id = case when p.old_wins then o.last_changed_run_id else t.last_changed_run_id end,
    updated_at          = case when p.old_wins then o.updated_at else t.updated_at end,
    first_seen_run_id   = least(t.first_seen_run_id, o.first_seen_run_id),
    created_at          = least(t.created_at, o.created_at)
from key_plan p
join source_record o on o.id = p.id
where t.id = p.target_id;

-- keys_repoint_alerts --
-- CHANGED alerts under a two-part key move to the full key of the course they were raised for (their detail
-- names it), else to their record's new key. Alerts of a record left untouched stay with it.
update alert a
set source_id = split_part(a.source_id, ':', 1) || ':' || m.course_id || ':' || split_part(a.source_id, ':', 2)
from (
    select a2.id,
           coalesce(case when a2.detail ->> 'course_id' ~ '^[0-9]+$' then a2.detail ->> 'course_id' end,
                    split_part(p.new_key, ':', 2)) as course_id
    from alert a2
    left join key_plan p on p.source_type = 'enrolment_status' and p.old_key = a2.source_id
    where a2.alert_type = 'CHANGED' and a2.source_type = 'enrolment_status'
      and a2.source_id ~ '^[^:]+:[^:]+$'
      and p.problem is null
) m
where a.id = m.id and m.course_id is not null
returning a.id;

-- keys_repoint_sheet --
-- Sheet messages not yet delivered (and not held by a live consumer) move to the full key of the course their payload describes, else to their
-- record's new key. Delivered and dead messages are history and keep the key they were sent under.
update sheet_outbox s
set source_id = split_part(s.source_id, ':', 1) || ':' || m.course_id || ':' || split_part(s.source_id, ':', 2)
from (
    select s2.id,
           coalesce(case when s2.payload ->> 'course_id' ~ '^[0-9]+$' then s2.payload ->> 'course_id' end,
                    split_part(p.new_key, ':', 2)) as course_id
    from sheet_outbox s2
    left join key_plan p on p.source_type = 'enrolment_status' and p.old_key = s2.source_id
    where (s2.status = 'PENDING'  -- not in a live consumer's hands
           or (s2.status = 'PROCESSING' and coalesce(s2.locked_until, '-infinity') < now()))
      and s2.source_id ~ '^[^:]+:[^:]+$'
      and p.problem is null
) m
where s.id = m.id and m.course_id is not null
returning s.id;

-- keys_supersede_sheet --
-- A re-pointed message older than a message already queued under its new key would overwrite newer content
-- when delivered after it: it is closed as superseded instead.
update sheet_outbox o
set status = 'DONE', processed_at = now(), locked_by = null, locked_until = null, updated_at = now(),
    last_error = 'superseded by a newer message for the same enrolment (migrate-keys)'
where o.id = any(%(ids)s)
  and exists (select 1 from sheet_outbox n where n.source_id = o.source_id and n.id > o.id)
returning o.id;

-- keys_move --
-- Records whose new key is free take it in place.
update source_record s
set source_id = p.new_key
from key_plan p
where s.id = p.id and p.new_key is not null and p.target_id is null;

-- keys_delete_merged --
-- The old-key rows merged into a new-key row go, last, once everything pointing at them has moved.
delete from source_record s
using key_plan p
where s.id = p.id and p.target_id is not null;

-- keys_left_references --
-- What still carries a two-part key after the moves: CHANGED alerts and undelivered sheet messages.
select (select count(*) from alert
        where alert_type = 'CHANGED' and source_type = 'enrolment_status' and source_id ~ '^[^:]+:[^:]+$')
           as alerts_left,
       (select count(*) from sheet_outbox
        where status in ('PENDING', 'PROCESSING') and source_id ~ '^[^:]+:[^:]+$') as sheet_messages_left;
