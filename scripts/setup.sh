# Sourced by scripts/run and scripts/test: installs what is missing, nothing else.
# - redis-server, curl, nginx, promtool and openssl (Debian packages) when absent
# - a virtualenv in .venv with the package and its dev tools, refreshed when pyproject changes

ensure_packages() {
  # redis-server for the product and the suite; curl for the run command's health waits.
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  # nginx for the front door (scripts/run --proxy, tests/test_proxy.py); promtool (Debian's
  # prometheus package) for the deploy/ checks; openssl for the throwaway certificates.
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
  command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  [ ${#missing[@]} -eq 0 ] && return
  echo "setup: installing ${missing[*]} (apt-get)" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
  # Debian starts a system redis on 6379 (and nginx, prometheus where systemd runs); the
  # product runs its own on other ports, so leave them be.
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
