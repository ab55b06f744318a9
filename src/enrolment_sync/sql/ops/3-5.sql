-- 3-5. 미해결 high 알림 확인
select
  id, alert_type, severity, source_id, message, created_at
from alert
where resolved = false
  and severity = 'high'
order by created_at desc
limit 50;
