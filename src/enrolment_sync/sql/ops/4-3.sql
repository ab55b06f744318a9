-- 4-3. 실패 그룹별 집계(24시간)
select
  detail->>'error_group' as error_group,
  severity,
  count(*) as cnt
from alert
where alert_type = 'FAILED'
  and created_at >= now() - interval '24 hours'
group by 1, 2
order by 3 desc, 1;
