-- 3-6. 특정 category 상태 샘플 확인
select
  source_id, user_id, course_id, status, status_msg, gc_date, sjc_date, update_time, updated_at
from source_record
where source_type = 'enrolment_status'
  and category_id = 303
order by updated_at desc
limit 100;
