#!/usr/bin/env bash
# Entrypoint modelled on the official redis image's: `IMAGE --flag` or `IMAGE x.conf` means
# redis-server; runs as user redis; protected mode off unless a config file sets it.
set -euo pipefail

if [[ ${1:-} == -* || ${1:-} == *.conf ]]; then
  set -- redis-server "$@"
fi

if [[ ${1:-} == redis-server && $(id -u) == 0 ]]; then
  find . \! -user redis -exec chown redis '{}' +
  exec setpriv --reuid=redis --regid=redis --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [[ ${1:-} == redis-server ]]; then
  # Published ports are explicit in Docker; protected mode would refuse every remote client
  # of a password-less server.
  protected=1
  if [[ -f ${2:-} ]] && grep -q '^protected-mode' "$2"; then
    protected=
  fi
  for arg in "$@"; do
    [[ $arg == --protected-mode ]] && protected=
  done
  if [[ -n $protected ]]; then
    set -- "$@" --protected-mode no
  fi
  umask 0077
fi

exec "$@"
