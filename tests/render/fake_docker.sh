#!/usr/bin/env bash
# Test-only stand-in for the docker CLI, enough for backup.sh/restore.sh: each "container" is
# a directory $FAKE_ROOT/<name>/ whose data/ is its /data mount. Postgres commands run against
# the real test cluster; Redis is a real redis-server (appendonly yes) on $FAKE_REDIS_PORT.
set -euo pipefail
cmd=$1; shift
root=$FAKE_ROOT
echo "docker $cmd $*" >>"$root/calls.log"

redis_start() {
  [ ! -f "$root/redis.pid" ] || ! kill -0 "$(cat "$root/redis.pid")" 2>/dev/null || return 0
  REDIS_PASSWORD=$FAKE_REDIS_PASSWORD sh -c "$FAKE_REDIS_CMD" redis-server --dir "$root/$FAKE_REDIS/data" \
    --port "$FAKE_REDIS_PORT" --bind 127.0.0.1 --daemonize yes --pidfile "$root/redis.pid" --logfile "$root/redis.log"
  for _ in $(seq 1 100); do
    [ "$(REDISCLI_AUTH=$FAKE_REDIS_PASSWORD redis-cli --no-auth-warning -p "$FAKE_REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.1
  done
  echo "fake docker: redis did not start" >&2; return 1
}
redis_stop() {
  [ -f "$root/redis.pid" ] || return 0
  local pid; pid=$(cat "$root/redis.pid")
  REDISCLI_AUTH=$FAKE_REDIS_PASSWORD redis-cli --no-auth-warning -p "$FAKE_REDIS_PORT" shutdown >/dev/null 2>&1 || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}
map() { case "$2" in /data*) printf '%s\n' "$root/$1/data${2#/data}" ;; *) printf '%s\n' "$2" ;; esac; }

case "$cmd" in
  exec)
    [ "$1" != -i ] || shift
    c=$1; shift
    if [ "$c" = ai-meeting-nginx ]; then echo "exec $c $*" >>"$root/events.log"; exit 0; fi
    if [ "$c" = "$FAKE_PG" ]; then
      PGHOST=$FAKE_PG_SOCK PGPORT=$FAKE_PG_PORT PATH="$FAKE_PG_BIN:$PATH" exec "$@"
    elif [ "$c" = "$FAKE_REDIS" ]; then
      args=(); for a in "${@:2}"; do args+=("$(map "$c" "$a")"); done
      if [ "$1" = redis-cli ]; then
        REDISCLI_AUTH=$FAKE_REDIS_PASSWORD exec redis-cli --no-auth-warning -p "$FAKE_REDIS_PORT" "${args[@]}"
      fi
      exec "$1" "${args[@]}"
    fi
    echo "fake docker: exec in $c not supported" >&2; exit 1 ;;
  cp)
    src=$1 dest=$2
    c=${src%%:*} path=${src#*:}
    if [ "$dest" = - ]; then
      tar -C "$(dirname "$(map "$c" "$path")")" -c "$(basename "$path")"
    else
      cp "$(map "$c" "$path")" "$dest"
    fi ;;
  inspect)
    fmt=$2 c=$3
    case "$fmt" in
      *Mounts*) printf '%s\n' "$root/$c/data" ;;
      *State.Running*) echo true ;;
      *State.Health*) echo healthy ;;
    esac ;;
  ps)  # the API containers found by label: $FAKE_APPS
    for c in ${FAKE_APPS:-}; do echo "$c"; done ;;
  stop|start)
    for c in "$@"; do
      echo "$cmd $c" >>"$root/events.log"
      if [ "$c" = "$FAKE_REDIS" ]; then "redis_$cmd"; fi
      echo "$c"
    done ;;
  *) echo "fake docker: $cmd not supported" >&2; exit 1 ;;
esac
