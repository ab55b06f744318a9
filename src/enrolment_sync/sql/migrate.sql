-- The migrator's own bookkeeping (db.migrate): schema_migration, one row per applied migration file with the
-- sha256 of its text. Every block runs under migrate_lock, so two migrators never collide.

-- migrate_lock --
-- Serialise migrators (transaction-scoped: released at commit, pooler-safe).
select pg_advisory_xact_lock(%(key)s);

-- migrate_create_table --
-- The migrator's table, created under the lock (two migrators could otherwise both try to create it).
create table if not exists schema_migration (
    name text primary key,
    applied_at timestamptz not null default now(),
    checksum text
);

-- migrate_table_state --
-- Whether schema_migration already has its checksum column and row level security (altered only if not).
select exists (select 1 from pg_attribute
               where attrelid = 'schema_migration'::regclass and attname = 'checksum' and not attisdropped)
           as has_checksum,
       (select relrowsecurity from pg_class where oid = 'schema_migration'::regclass) as has_rls;

-- migrate_add_checksum --
-- Databases migrated before checksums were kept get the column (their rows are filled on this run).
alter table schema_migration add column if not exists checksum text;

-- migrate_enable_rls --
-- Like every table: row level security on, no policy.
alter table schema_migration enable row level security;

-- migrate_applied --
-- Every applied migration with its recorded checksum (null: applied before checksums were kept).
select name, checksum from schema_migration order by name;

-- migrate_record_checksum --
-- Record the checksum of a migration applied before checksums were kept.
update schema_migration set checksum = %(checksum)s where name = %(name)s and checksum is null;

-- migrate_record --
-- One applied migration.
insert into schema_migration (name, checksum) values (%(name)s, %(checksum)s);

-- migrate_is_applied --
-- Whether one migration has been applied.
select 1 from schema_migration where name = %(name)s;
