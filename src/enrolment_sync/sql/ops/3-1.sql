-- 3-1. 최근 실행 상태
select
  id, trigger_type, status,
  total_records, changed_records, created_alerts,
  error_message, started_at, finished_at, updated_at
from run_log
order by id desc
limit 20;
