-- 3-3. 실패 유형 요약 (409/5xx/기타)
select
  case
    when error_message ilike '% 409 %' then 'HTTP_409'
    when error_message ilike '% 5__ %' then 'HTTP_5XX'
    when error_message ilike '%timeout%' then 'TIMEOUT'
    when error_message ilike '%job_lock active%' then 'LOCK_CONFLICT'
    else 'OTHER'
  end as error_group,
  count(*) as cnt
from run_log
where status = 'FAILED'
group by 1
order by 2 desc;
