-- 3-7. lock 잔존 확인
select job_name, locked_by, locked_at, lock_expires_at
from job_lock
order by locked_at desc;
