-- Runs once, when the postgres container initialises an empty data volume, as POSTGRES_USER
-- (`switchyard`, a superuser in the official image). Development credentials only.

-- Read-only analytics role, subject to row-level security.
CREATE ROLE switchyard_analytics LOGIN PASSWORD 'switchyard_analytics' NOBYPASSRLS;
-- Lets the server (connected as `switchyard`) SET ROLE switchyard_analytics.
GRANT switchyard_analytics TO switchyard;
