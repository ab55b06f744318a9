-- 0003_dead_letter_alerted: a dead message is announced by a sweep that raises its DEAD_LETTER alert, queues
-- its notification and sets dead_alerted in one transaction, so no dead message goes unannounced even when a
-- consumer dies between parking it and alerting.
alter table sheet_outbox add column dead_alerted boolean not null default false;
alter table notification_outbox add column dead_alerted boolean not null default false;
create index sheet_outbox_dead_unalerted_idx on sheet_outbox (id) where status = 'DEAD' and not dead_alerted;
create index notification_outbox_dead_unalerted_idx on notification_outbox (id)
    where status = 'DEAD' and not dead_alerted;
