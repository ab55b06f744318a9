-- The read side of status_history and the export of current records (issue 15). Named blocks as in
-- queries.sql; loaded by db.queries(). Day boundaries (KST midnights) are computed in Python and passed in.

-- history_timeline --
-- Every history row of one learner in one category (all their courses), oldest first.
select id, source_id, course_id, change, old_status, new_status, old_status_msg, new_status_msg,
       old_gc_date, new_gc_date, old_sjc_date, new_sjc_date, update_time, run_id, changed_at, backfill
from status_history
where category_id = %(category_id)s and user_id = %(user_id)s
order by changed_at, id;

-- history_first_change --
-- When a category's history begins (the report's default first day).
select min(changed_at) as first_changed_at from status_history where category_id = %(category_id)s;

-- history_daily_counts --
-- Per day, the enrolments in each status at the end of that day: each history row holds from its changed_at
-- until the enrolment's next row. An enrolment whose row at the day's end is MISSING is counted as MISSING.
-- Enrolments are told apart by (course_id, user_id), not by key: rows under an old key (see migrate-keys) and
-- the final key are one enrolment.
with spans as (
    select coalesce(new_status, 'MISSING') as status, changed_at as since,
           lead(changed_at) over (partition by course_id, user_id order by changed_at, id) as until
    from status_history
    where category_id = %(category_id)s
), days as (
    select * from unnest(%(days)s::date[], %(day_ends)s::timestamptz[]) as d(day, day_end)
)
select days.day, spans.status, count(*)::integer as records
from days
join spans on spans.since < days.day_end and (spans.until is null or spans.until >= days.day_end)
group by days.day, spans.status
order by days.day, spans.status;

-- export_records --
-- A category's current status records with their details' figures, in course and learner order.
select s.category_id, s.course_id, s.user_id, s.status, s.status_msg, s.gc_date, s.sjc_date,
       d.payload -> 'progress_rate' as progress_rate, d.payload -> 'attendance_rate' as attendance_rate,
       d.payload -> 'exam_score' as exam_score, d.payload -> 'completed' as completed,
       d.payload ->> 'completion_date' as completion_date, s.update_time, s.missing_since, s.source_id
from source_record s
left join source_record d on d.source_type = 'enrolment_detail' and d.source_id = s.source_id
where s.source_type = 'enrolment_status' and s.category_id = %(category_id)s
order by s.course_id, s.user_id;

-- history_insert --
-- The history rows a sync's diff built for the status records it writes (same transaction as the records).
insert into status_history (source_id, category_id, course_id, user_id, change, old_status, new_status,
                            old_status_msg, new_status_msg, old_gc_date, new_gc_date, old_sjc_date, new_sjc_date,
                            update_time, run_id, changed_at)
select h.source_id, h.category_id, h.course_id, h.user_id, h.change, h.old_status, h.new_status, h.old_status_msg,
       h.new_status_msg, h.old_gc_date, h.new_gc_date, h.old_sjc_date, h.new_sjc_date, h.update_time,
       %(run_id)s, %(now)s
from jsonb_to_recordset(%(rows)s::jsonb) as h(
    source_id text, category_id bigint, course_id bigint, user_id text, change text, old_status text,
    new_status text, old_status_msg text, new_status_msg text, old_gc_date date, new_gc_date date,
    old_sjc_date date, new_sjc_date date, update_time timestamptz);
