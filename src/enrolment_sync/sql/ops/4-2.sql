-- 4-2. 실패 알림 목록
select
  id, source_id, alert_type, severity,
  detail->>'error_group' as error_group,
  detail->>'http_status_code' as http_status_code,
  detail->>'run_id' as run_id,
  created_at
from alert
where alert_type = 'FAILED'
order by id desc
limit 50;
