-- 4-1. 최근 실패 실행
select
  id, trigger_type, status, created_alerts, error_message, started_at, finished_at
from run_log
where status = 'FAILED'
order by id desc
limit 30;
