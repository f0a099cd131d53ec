-- The workers' role on the catalog: rows only, no DDL. Run by the one-shot db-setup
-- service of infra/docker-compose.yml at every `up` (idempotent), as the owner
-- (POSTGRES_USER), with psql variables worker_user, worker_password and db:
--   psql -v ON_ERROR_STOP=1 -v worker_user=... -v worker_password=... -v db=... -f this
-- The owner creates the catalog's tables (the gateway does on its first start); the
-- default privileges below give the workers rights on those tables too.

SELECT format('CREATE ROLE %I LOGIN', :'worker_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'worker_user')
\gexec

SELECT format(
    'ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION '
    'NOBYPASSRLS CONNECTION LIMIT 200 PASSWORD %L',
    :'worker_user', :'worker_password')
\gexec

-- No DDL anywhere: PUBLIC (every role) may not create in the schema (PostgreSQL 15 and
-- later already start so; said again for databases made by older versions).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SELECT format('REVOKE CREATE, TEMPORARY ON DATABASE %I FROM PUBLIC', :'db')
\gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'worker_user')
\gexec
SELECT format('GRANT USAGE ON SCHEMA public TO %I', :'worker_user')
\gexec

-- The tables that exist now, and those the owner creates later.
SELECT format(
    'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO %I',
    :'worker_user')
\gexec
SELECT format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO %I', :'worker_user')
\gexec
SELECT format(
    'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE '
    'ON TABLES TO %I', :'worker_user')
\gexec
SELECT format(
    'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO %I',
    :'worker_user')
\gexec
