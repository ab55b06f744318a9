-- UPSTREAM_DATA alerts: an answer of KVCA the sync did not take as it came (a learner's row it cannot store,
-- skipped alone; an empty course list for a category that has stored records, left alone).
alter table alert drop constraint alert_alert_type_check;
alter table alert add constraint alert_alert_type_check
    check (alert_type in ('CHANGED', 'FAILED', 'STALE', 'DEAD_LETTER', 'UPSTREAM_DATA'));
