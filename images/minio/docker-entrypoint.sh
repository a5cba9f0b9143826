#!/usr/bin/env bash
# Like the official minio image: `IMAGE server /data` runs `minio server /data`. minio, shells,
# curl and absolute paths run as given (e.g. `IMAGE sh -c ...`).
set -euo pipefail

case ${1:-} in
  minio | sh | bash | curl | /*) ;;
  *) set -- minio "$@" ;;
esac

exec "$@"
