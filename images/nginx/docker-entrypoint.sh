#!/usr/bin/env bash
# As in the official nginx image: when starting nginx, run /docker-entrypoint.d/*.sh first.
set -euo pipefail

if [[ ${1:-} == nginx || ${1:-} == nginx-debug ]]; then
  shopt -s nullglob
  for f in /docker-entrypoint.d/*.sh; do
    if [[ -x $f ]]; then
      echo "$0: running $f"
      "$f"
    else
      echo "$0: ignoring $f, not executable"
    fi
  done
fi

exec "$@"
