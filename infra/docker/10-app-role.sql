-- docker-compose: the application role, made once when the TimescaleDB volume is new
-- (the image runs /docker-entrypoint-initdb.d/*.sql as POSTGRES_USER, the owner `rtm`).
-- `rtm db migrate` (the compose `migrate` service, as the owner) grants it its privileges:
-- every table, and on audit_log only INSERT and SELECT (streams/db/roles.py).
-- An existing volume: docker compose exec timescaledb psql -U rtm -d rtm -f /docker-entrypoint-initdb.d/10-app-role.sql
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rtm_app') THEN
        CREATE ROLE rtm_app LOGIN PASSWORD 'rtm_app';
    END IF;
END $$;
