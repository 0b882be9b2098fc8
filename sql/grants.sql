-- The grants the sink needs once its tables exist: DML only, no DDL, no ownership.
-- Run it as the tables' owner (or a superuser), after sql/001 and sql/002, with psql:
--
--   psql -v sink_role=txn_sink -f sql/grants.sql            -- the default table names
--   psql -v sink_role=txn_sink -v table=ledger.payments -f sql/grants.sql
--
-- sink_role (required) must exist (CREATE ROLE txn_sink LOGIN PASSWORD '…').
-- table (default transactions_sink, schema.table allowed) is the sink's --table; its
-- state tables are <table>_offsets and <table>_dead_letters.
--
--   <table>               SELECT, INSERT           rows (SELECT: conflict detection)
--   <table>_offsets       SELECT, INSERT, UPDATE   each partition's next offset
--   <table>_dead_letters  SELECT, INSERT, UPDATE   parked messages (UPDATE: attempts, replay)
--   their id sequence     USAGE                    new dead letters
--   the tables' schema    USAGE
\set ON_ERROR_STOP on
\if :{?sink_role}
\else
  -- fails (psql exits 3) rather than \quit, which exits 0 as if the grants were made
  DO $$ BEGIN RAISE EXCEPTION 'grants.sql: no role to grant to: run psql -v sink_role=NAME -f sql/grants.sql'; END $$;
\endif
\if :{?table}
\else
  \set table transactions_sink
\endif
\set offsets :table '_offsets'
\set dead_letters :table '_dead_letters'

SELECT format('GRANT USAGE ON SCHEMA %I TO %I', n.nspname, :'sink_role')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.oid = :'table'::regclass \gexec
SELECT format('GRANT SELECT, INSERT ON %s TO %I', :'table'::regclass, :'sink_role') \gexec
SELECT format('GRANT SELECT, INSERT, UPDATE ON %s TO %I', :'offsets'::regclass, :'sink_role') \gexec
SELECT format('GRANT SELECT, INSERT, UPDATE ON %s TO %I', :'dead_letters'::regclass, :'sink_role') \gexec
SELECT format('GRANT USAGE ON SEQUENCE %s TO %I', pg_get_serial_sequence(:'dead_letters', 'id'), :'sink_role') \gexec
