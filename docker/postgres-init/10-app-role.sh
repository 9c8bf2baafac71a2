#!/bin/sh
# The app's own PostgreSQL role, created once when the postgres container initialises an empty
# data volume (docker-entrypoint-initdb.d). It owns nothing: `wellpanel db upgrade` (the compose
# `migrate` service, as the owner POSTGRES_USER) creates the tables and then grants this role
# only what the app needs (SELECT and INSERT on the ledger and the consent tables, ordinary DML on
# the rest; see app/privileges.py). An existing data volume skips this script: run the same SQL
# by hand (README, "Running on PostgreSQL").
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     -v app_user="${APP_DB_USER:-wellpanel_app}" -v app_password="$APP_DB_PASSWORD" <<'SQL'
CREATE ROLE :"app_user" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT
    PASSWORD :'app_password';
-- PostgreSQL 15 already keeps PUBLIC from creating in schema public; older servers do not.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
SQL
