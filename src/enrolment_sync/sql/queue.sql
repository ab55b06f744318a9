-- The one queue implementation (queue.py): every statement runs over a table that follows the queue contract
-- (docs/outbox.md, "Queue contract"). {table}, {key}, {columns}, {group}, {extra} and {key_order} are filled by queue.py
-- with psycopg.sql identifiers, never by string formatting. Every statement is one short transaction's worth:
-- no session state, no session advisory locks, no LISTEN (Supabase transaction pooler). A claimed message is
-- PROCESSING with its lease end in both locked_until and next_attempt_at, so "ready" is one condition (status
-- open and next_attempt_at <= now()) served by the table's claim index. Every time is the database's now().

-- queue_claim --
-- Claim ready messages, oldest first, counting the attempt; {key_order} is empty or queue_claim_key_order,
-- {columns} is id, attempts and the queue's own columns.
with picked as (
    select m.id
    from {table} m
    where m.status in ('PENDING', 'PROCESSING') and m.next_attempt_at <= now()
      and m.attempts < %(max_attempts)s
      {key_order}
    order by m.next_attempt_at, m.id
    limit %(batch)s
    for update of m skip locked
)
update {table} m
set status = 'PROCESSING', attempts = m.attempts + 1, locked_by = %(consumer)s,
    locked_until = now() + make_interval(secs => %(lease_s)s),
    next_attempt_at = now() + make_interval(secs => %(lease_s)s), updated_at = now()
from picked
where m.id = picked.id
returning {columns};

-- queue_claim_key_order --
-- Claim option: a message waits while an older message with the same key is open (one writer per key).
and not exists (
    select 1 from {table} o
    where o.{key} = m.{key} and o.id < m.id and o.status in ('PENDING', 'PROCESSING'))

-- queue_renew --
-- Extend our lease on claimed messages; returns the ids still ours (a missing id was taken over).
update {table}
set locked_until = now() + make_interval(secs => %(lease_s)s),
    next_attempt_at = now() + make_interval(secs => %(lease_s)s), updated_at = now()
where id = any(%(ids)s) and locked_by = %(consumer)s and status = 'PROCESSING'
returning id;

-- queue_done --
-- Mark handled messages done (only those still leased to us).
update {table}
set status = 'DONE', processed_at = now(), locked_by = null, locked_until = null, last_error = null,
    updated_at = now()
where id = any(%(ids)s) and locked_by = %(consumer)s and status = 'PROCESSING'
returning id;

-- queue_retry --
-- A failed attempt: back to PENDING after its backoff, or DEAD when it was the last allowed attempt.
update {table} m
set status = case when r.dead then 'DEAD' else 'PENDING' end,
    next_attempt_at = now() + make_interval(secs => r.delay_s),
    locked_by = null, locked_until = null, last_error = %(error)s, updated_at = now()
from jsonb_to_recordset(%(rows)s::jsonb) as r(id bigint, delay_s double precision, dead boolean)
where m.id = r.id and m.locked_by = %(consumer)s and m.status = 'PROCESSING'
returning m.id, m.status, m.attempts;

-- queue_release --
-- Give claimed messages back untried, ready again after delay_s (shutdown, not ready yet): no attempt counted.
update {table}
set status = 'PENDING', attempts = greatest(attempts - 1, 0),
    next_attempt_at = now() + make_interval(secs => %(delay_s)s),
    locked_by = null, locked_until = null, updated_at = now()
where id = any(%(ids)s) and locked_by = %(consumer)s and status = 'PROCESSING';

-- queue_park_expired --
-- Messages with no attempt left: the lease ran out on the last one (their consumer kept dying), or
-- OUTBOX_MAX_ATTEMPTS was lowered below what they had used. Park them as dead.
update {table}
set status = 'DEAD', locked_by = null, locked_until = null, updated_at = now(),
    last_error = case when status = 'PROCESSING'
        then 'lease expired on attempt ' || attempts || ' (consumer ' || coalesce(locked_by, '?')
             || ' stopped answering)' || coalesce('; before: ' || last_error, '')
        else 'no attempt left (OUTBOX_MAX_ATTEMPTS is ' || %(max_attempts)s || ')'
             || coalesce('; before: ' || last_error, '') end
where ((status = 'PROCESSING' and next_attempt_at <= now()) or status = 'PENDING') and attempts >= %(max_attempts)s
returning id, attempts, last_error;

-- queue_prune_done --
-- Housekeeping: delete DONE messages processed longer ago than the retention, oldest first, at most %(limit)s
-- (one bounded transaction; DEAD messages stay until handled). Served by the table's done index.
delete from {table} d
using (
    select id from {table}
    where status = 'DONE' and processed_at < now() - make_interval(secs => %(retention_s)s)
    order by processed_at
    limit %(limit)s
    for update skip locked
) old
where d.id = old.id
returning d.id;

-- queue_dead_unalerted --
-- Dead messages not announced yet, with the value they are announced by (and the queue's dead_columns, {extra}),
-- locked for the sweep that announces them.
select id, {group}::text as what, last_error, attempts{extra}
from {table}
where status = 'DEAD' and not dead_alerted
order by id
limit %(limit)s
for update skip locked;

-- queue_dead_alerted --
-- Mark dead messages as announced.
update {table} set dead_alerted = true, updated_at = now() where id = any(%(ids)s);

-- queue_status --
-- Backlog, oldest open message and dead messages of one queue (the README's operations check).
select %(queue)s::text as queue,
       count(*) filter (where status = 'PENDING') as pending,
       count(*) filter (where status = 'PROCESSING') as processing,
       count(*) filter (where status in ('PENDING', 'PROCESSING') and next_attempt_at <= now()) as ready,
       (select count(*) from {table} where status = 'DEAD') as dead,
       extract(epoch from now() - min(created_at))::bigint as oldest_open_age_s,
       max(attempts) as max_attempts_so_far
from {table}
where status in ('PENDING', 'PROCESSING');

-- queue_now --
-- The database's clock: queue and alert times never come from a worker's clock.
select now() as now;

-- queue_contract --
-- The contract columns a queue table lacks or has with another type (empty: the table follows the contract).
select c.name, c.type
from (values ('id', 'bigint'), ('status', 'text'), ('attempts', 'integer'),
             ('next_attempt_at', 'timestamp with time zone'), ('locked_by', 'text'),
             ('locked_until', 'timestamp with time zone'), ('last_error', 'text'),
             ('created_at', 'timestamp with time zone'), ('updated_at', 'timestamp with time zone'),
             ('processed_at', 'timestamp with time zone'), ('dead_alerted', 'boolean')) as c(name, type)
where not exists (
    select 1 from information_schema.columns i
    where i.table_schema = current_schema() and i.table_name = %(table)s
      and i.column_name = c.name and i.data_type = c.type);
