-- 3-2. 실패 실행만 보기 (최신순)
select
  id, trigger_type, status, error_message, started_at, finished_at
from run_log
where status = 'FAILED'
order by id desc
limit 20;
