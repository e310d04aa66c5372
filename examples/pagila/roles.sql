-- examples/pagila/roles.sql - the roles of a Supabase-like destination.
--
-- Run once per destination database, as a role that may create roles (a superuser, or
-- one with CREATEROLE), connected to that database:
--
--   psql -X -v ON_ERROR_STOP=1 -v app_owner_password='...' -d modern -f examples/pagila/roles.sql
--
-- It creates (or leaves in place) three cluster-wide roles:
--
--   app_owner      LOGIN, NOT a superuser: it creates and owns the application's tables
--                  (modern.sql is run as app_owner) and is the role dm connects as. As in
--                  Supabase, where "postgres" is not a superuser, dm may not rely on
--                  superuser powers: it needs to own the tables (to switch their
--                  updated_at triggers off inside its load transactions) and CREATE on
--                  the database (for its own schema "dm", made on first use).
--   authenticated  NOLOGIN: the role a signed-in API user's requests run as.
--   anon           NOLOGIN: the role anonymous API requests run as.
--
-- and, in the current database, the grants app_owner needs plus a small "auth" schema
-- with auth.uid(), the function Supabase's row level security policies call (here it
-- reads the request.jwt.claim.sub setting, as PostgREST sets it).
--
-- The password comes from the psql variable app_owner_password, so it never appears in
-- this file; it is set again on every run. Re-running the script is harmless.

\set ON_ERROR_STOP on
SET client_min_messages = warning;

\if :{?app_owner_password}
\else
\echo 'roles.sql: give the password of app_owner: psql -v app_owner_password=... -f roles.sql'
DO $$ BEGIN RAISE EXCEPTION 'roles.sql: app_owner_password is not set (psql -v app_owner_password=...)'; END $$;
\endif

-- Roles are shared by every database of the cluster: create them only if missing.
SELECT 'CREATE ROLE app_owner LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_owner') \gexec
SELECT 'CREATE ROLE authenticated NOLOGIN NOINHERIT'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') \gexec
SELECT 'CREATE ROLE anon NOLOGIN NOINHERIT'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') \gexec

-- Set (or reset) the password; format() quotes it, psql's :'...' quotes the variable.
SELECT format('ALTER ROLE app_owner WITH LOGIN PASSWORD %L', :'app_owner_password') \gexec

-- Like Supabase's "authenticator", app_owner may switch to the API roles (SET ROLE) to
-- try the policies out: SET ROLE anon; SELECT ... ; RESET ROLE.
GRANT anon, authenticated TO app_owner;

-- This database: connect, and create schemas (dm-load and dm-ckpt create "dm" there).
SELECT format('GRANT CONNECT, CREATE, TEMPORARY ON DATABASE %I TO app_owner', current_database()) \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO anon, authenticated', current_database()) \gexec

-- Schema public: app_owner creates the tables in it; the API roles only use it.
-- (PostgreSQL 15 no longer lets every role create objects in public.)
GRANT USAGE, CREATE ON SCHEMA public TO app_owner;
GRANT USAGE ON SCHEMA public TO anon, authenticated;

-- auth.uid(): the signed-in user's id, or NULL for anonymous requests.
CREATE SCHEMA IF NOT EXISTS auth;
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
GRANT USAGE ON SCHEMA auth TO app_owner, anon, authenticated;
GRANT EXECUTE ON FUNCTION auth.uid() TO app_owner, anon, authenticated;
