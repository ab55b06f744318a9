-- 3-4. 최근 24시간 알림 타입/등급 분포
select
  alert_type,
  severity,
  count(*) as cnt
from alert
where created_at >= now() - interval '24 hours'
group by 1, 2
order by 1, 2;
