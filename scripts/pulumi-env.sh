# shellcheck shell=bash
# Environment for running Pulumi with the toolchain that scripts/install-pulumi builds.
# Source it (from bash or zsh, also under `set -u`):   . scripts/pulumi-env.sh
#
# - puts ${AI_MEETING_CACHE:-$HOME/.cache/ai-meeting}/toolchain/bin first on PATH
# - PULUMI_SKIP_UPDATE_CHECK=true, PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
#   (a missing plugin fails at once instead of trying a download site)
# - PULUMI_BACKEND_URL defaults to file://<repo>/.pulumi-state (created, mode 0700)
# - passphrase: when neither PULUMI_CONFIG_PASSPHRASE nor PULUMI_CONFIG_PASSPHRASE_FILE is set,
#   one is generated once into ${XDG_CONFIG_HOME:-$HOME/.config}/ai-meeting/passphrase (0600)
#   and PULUMI_CONFIG_PASSPHRASE_FILE points at it. The passphrase is never printed.

_ai_meeting_env() {
  local script_dir repo bin state conf_dir pass_file
  if [ -n "${BASH_SOURCE:-}" ]; then
    script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  elif [ -n "${ZSH_VERSION:-}" ]; then
    # shellcheck disable=SC2296 # zsh-only expansion
    script_dir=$(cd "$(dirname "${(%):-%x}")" && pwd)
  else
    script_dir=$(pwd)/scripts
  fi
  repo=$(cd "$script_dir/.." && pwd)

  bin=${AI_MEETING_CACHE:-$HOME/.cache/ai-meeting}/toolchain/bin
  case ":${PATH:-}:" in
    *":$bin:"*) ;;
    *) export PATH="$bin${PATH:+:$PATH}" ;;
  esac

  export PULUMI_SKIP_UPDATE_CHECK=true
  export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true

  if [ -z "${PULUMI_BACKEND_URL:-}" ]; then
    state=$repo/.pulumi-state
    mkdir -p "$state"
    chmod 0700 "$state"
    export PULUMI_BACKEND_URL="file://$state"
  fi

  if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
    conf_dir=${XDG_CONFIG_HOME:-$HOME/.config}/ai-meeting
    pass_file=$conf_dir/passphrase
    if [ ! -s "$pass_file" ]; then
      (
        umask 077
        mkdir -p "$conf_dir"
        # 32 random bytes, base64: no newline inside, nothing echoed.
        head -c 32 /dev/urandom | base64 | tr -d '\n' >"$pass_file.tmp.$$"
        mv "$pass_file.tmp.$$" "$pass_file"
      ) || return 1
    fi
    chmod 0600 "$pass_file"
    export PULUMI_CONFIG_PASSPHRASE_FILE="$pass_file"
  fi
}

_ai_meeting_env
unset -f _ai_meeting_env
