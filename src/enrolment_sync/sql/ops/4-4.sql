-- 4-4. run_log와 실패 알림 교차 확인
select
  r.id as run_id,
  r.status,
  r.error_message,
  a.id as alert_id,
  a.severity,
  a.detail->>'error_group' as error_group,
  a.created_at as alert_created_at
from run_log r
left join alert a
  on a.alert_type = 'FAILED'
 and a.detail->>'run_id' = r.id::text
where r.status = 'FAILED'
order by r.id desc
limit 30;
