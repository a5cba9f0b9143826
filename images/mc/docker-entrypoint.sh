#!/usr/bin/env bash
# Like the official minio/mc image (ENTRYPOINT mc): `IMAGE ls alias/` runs `mc ls alias/`.
# Additionally `IMAGE sh -c "mc alias set ... && mc mb ..."` runs the shell, so one-shot
# bucket jobs need no entrypoint override. Only mc, shells and absolute paths pass through:
# mc subcommands such as ls/cp/cat share names with ordinary programs.
set -euo pipefail

case ${1:-} in
  mc | sh | bash | /*) ;;
  *) set -- mc "$@" ;;
esac

exec "$@"
