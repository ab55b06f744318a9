-- 0011_outbox_housekeeping: DONE messages are deleted by the consumers after OUTBOX_DONE_RETENTION_HOURS, in
-- bounded batches oldest first (queue_prune_done), served by these partial indexes. A notification keeps the
-- channels a POST was sent to whose answer its consumer never recorded (it died meanwhile), by channel and
-- count, so a dead-letter notice can say "sent, not confirmed" instead of "held back".
create index sheet_outbox_done_idx on sheet_outbox (processed_at) where status = 'DONE';
create index notification_outbox_done_idx on notification_outbox (processed_at) where status = 'DONE';
alter table notification_outbox add column sent_unconfirmed jsonb not null default '{}';
