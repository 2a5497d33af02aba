# Sourced by scripts/run and scripts/test: installs what is missing, nothing else.
# - redis-server, redis-cli, curl, nginx, promtool and openssl (Debian packages) when absent
# - a virtualenv in .venv with the package (SETUP_EXTRAS=dev adds the test and lint tools),
#   at the versions of constraints.txt, refreshed when pyproject or constraints change

ensure_packages() {
  # redis-server for the product and the suite; redis-cli (Debian's redis-tools, which
  # redis-server depends on, checked apart for hosts that have the server from elsewhere) for
  # the suite's cluster (TEST_REDIS=cluster); curl for the run command's health waits.
  local missing=()
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  # nginx for the front door (scripts/run --proxy, tests/system/test_proxy.py); promtool (Debian's
  # prometheus package) for the deploy/ checks; openssl for the throwaway certificates.
  # The plain demo needs none of them, so it does not wait for them (SETUP_FRONT_DOOR=1:
  # nginx and openssl for scripts/run --proxy; SETUP_EXTRAS=dev: all three for the suite).
  if [ -n "${SETUP_EXTRAS:-}" ] || [ -n "${SETUP_FRONT_DOOR:-}" ]; then
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  fi
  if [ -n "${SETUP_EXTRAS:-}" ]; then
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
  fi
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
  local extras="${SETUP_EXTRAS:-}" target="." stamp=.venv/.installed-runtime
  if [ -n "$extras" ]; then target=".[$extras]"; stamp=".venv/.installed-$extras"; fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
    echo "setup: installing ${target} into .venv (versions from constraints.txt)" >&2
    # The known-good versions the suite passed with; scripts/lock refreshes them.
    .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt \
      -e "$target" >&2
    touch "$stamp"
  fi
}

ensure_packages
ensure_venv
