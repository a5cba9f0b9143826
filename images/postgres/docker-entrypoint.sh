#!/usr/bin/env bash
# Entrypoint modelled on the official postgres image's docker-entrypoint.sh:
# POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB / PGDATA / POSTGRES_INITDB_ARGS /
# POSTGRES_HOST_AUTH_METHOD (and *_FILE variants), /docker-entrypoint-initdb.d/* run once on
# first init, `docker run IMAGE -c key=value` passes options to postgres.
set -Eeuo pipefail

# file_env VAR [DEFAULT]: VAR or VAR_FILE (contents of the file), not both.
file_env() {
  local var=$1 fileVar="${1}_FILE" def=${2:-} val
  if [[ -n ${!var:-} && -n ${!fileVar:-} ]]; then
    echo >&2 "error: both $var and $fileVar are set (but are exclusive)"
    exit 1
  fi
  val=$def
  if [[ -n ${!var:-} ]]; then
    val=${!var}
  elif [[ -n ${!fileVar:-} ]]; then
    val=$(<"${!fileVar}")
  fi
  export "$var"="$val"
  unset "$fileVar"
}

docker_setup_env() {
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=}"
  export PGDATA=${PGDATA:-/var/lib/postgresql/data}
  DATABASE_ALREADY_EXISTS=
  if [[ -s $PGDATA/PG_VERSION ]]; then
    DATABASE_ALREADY_EXISTS=true
  fi
}

docker_create_db_directories() {
  local user
  user=$(id -u)
  mkdir -p "$PGDATA"
  chmod 00700 "$PGDATA" || :
  mkdir -p /var/run/postgresql || :
  chmod 03775 /var/run/postgresql || :
  if [[ $user == 0 ]]; then
    find "$PGDATA" \! -user postgres -exec chown postgres: '{}' +
    find /var/run/postgresql \! -user postgres -exec chown postgres: '{}' +
  fi
}

docker_verify_minimum_env() {
  if [[ -z $POSTGRES_PASSWORD && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
    cat >&2 <<'MSG'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
       (or POSTGRES_HOST_AUTH_METHOD=trust to allow all connections without a password:
       NOT recommended)
MSG
    exit 1
  fi
}

docker_init_database_dir() {
  # shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words, as in the official image
  initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --encoding=UTF8 --locale=C.UTF-8 $POSTGRES_INITDB_ARGS
}

pg_setup_hba_conf() {
  local auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
  {
    echo
    if [[ $auth == trust ]]; then
      echo '# warning trust is enabled for all connections'
    fi
    echo "host all all all $auth"
  } >>"$PGDATA/pg_hba.conf"
}

docker_temp_server_start() {
  # Unix socket only while initialising, so nothing can connect half-way.
  PGUSER=$POSTGRES_USER pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start
}

docker_temp_server_stop() {
  PGUSER=$POSTGRES_USER pg_ctl -D "$PGDATA" -m fast -w stop
}

# docker_process_sql ARGS: psql on the Unix socket; SQL_DBNAME overrides the database.
docker_process_sql() {
  local dbname=${SQL_DBNAME:-$POSTGRES_DB}
  PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password \
    --no-psqlrc --dbname "$dbname" "$@"
}

docker_setup_db() {
  local exists
  if [[ $POSTGRES_DB != postgres ]]; then
    exists=$(SQL_DBNAME=postgres docker_process_sql --set db="$POSTGRES_DB" \
      --tuples-only <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")
    if [[ -z ${exists// /} ]]; then
      SQL_DBNAME=postgres docker_process_sql --set db="$POSTGRES_DB" \
        <<<'CREATE DATABASE :"db";'
      echo
    fi
  fi
}

docker_process_init_files() {
  local f
  echo
  for f in "$@"; do
    case $f in
      *.sh)
        if [[ -x $f ]]; then
          echo "$0: running $f"
          "$f"
        else
          echo "$0: sourcing $f"
          # shellcheck disable=SC1090
          . "$f"
        fi
        ;;
      *.sql) echo "$0: running $f"; docker_process_sql -f "$f"; echo ;;
      *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | docker_process_sql; echo ;;
      *.sql.xz) echo "$0: running $f"; xzcat "$f" | docker_process_sql; echo ;;
      *) echo "$0: ignoring $f" ;;
    esac
  done
}

_main() {
  # `docker run IMAGE -c foo=bar` means `postgres -c foo=bar`.
  if [[ ${1:0:1} == - ]]; then
    set -- postgres "$@"
  fi

  if [[ $1 == postgres ]]; then
    docker_setup_env
    docker_create_db_directories
    if [[ $(id -u) == 0 ]]; then
      # Re-run this script as postgres (setpriv is in util-linux, part of every Debian system).
      exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
    fi

    if [[ -z $DATABASE_ALREADY_EXISTS ]]; then
      docker_verify_minimum_env
      ls /docker-entrypoint-initdb.d/ >/dev/null
      docker_init_database_dir
      pg_setup_hba_conf
      export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
      docker_temp_server_start
      docker_setup_db
      shopt -s nullglob
      docker_process_init_files /docker-entrypoint-initdb.d/*
      shopt -u nullglob
      docker_temp_server_stop
      unset PGPASSWORD
      echo
      echo 'PostgreSQL init process complete; ready for start up.'
      echo
    else
      echo
      echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
      echo
    fi
  fi

  exec "$@"
}

_main "$@"
