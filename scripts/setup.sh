# Sourced by scripts/run and scripts/test: installs what is missing, nothing else.
# - redis-server and curl (Debian packages) when absent
# - a virtualenv in .venv with the package and its dev tools, refreshed when pyproject changes

ensure_packages() {
  # redis-server for the product and the suite; curl for the run command's health waits.
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  [ ${#missing[@]} -eq 0 ] && return
  echo "setup: installing ${missing[*]} (apt-get)" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
  # Debian starts a system redis on 6379; the product runs its own, so leave it be.
}

ensure_venv() {
  local python="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv" >&2
    "$python" -m venv .venv
  fi
  if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    echo "setup: installing the package and dev tools into .venv" >&2
    .venv/bin/python -m pip install -q --upgrade pip >&2
    .venv/bin/python -m pip install -q -e '.[dev]' >&2
    touch .venv/.installed
  fi
}

ensure_packages
ensure_venv
