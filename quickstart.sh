#!/usr/bin/env bash
# One entry point for a fresh Debian machine, as root. Idempotent.
#   bash quickstart.sh demo   # install what is needed, then run `damond demo`
#   bash quickstart.sh test   # install what is needed, then ruff, mypy and the default test suite
set -euo pipefail
cd "$(dirname "$0")"
what=${1:-demo}; shift || true

need_apt=()
# fuse3: fusermount3 and libfuse3; gcc + python3-dev: the optional compiled spe_feed parser
# gawk: the RFC's scripts (damon_spe_ctl.sh) run under `damond exec` need its strtonum (mawk has none)
for pkg in fuse3 libfuse3-3 gcc python3-dev util-linux gawk; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

VENV=${DAMOND_VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
stamp="$VENV/.damond-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q -e '.[test,cluster]'
  touch "$stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH"

case "$what" in
  demo) exec damond demo "$@" ;;
  test)
    if [ $# -eq 0 ]; then      # the whole suite: the static checks first (configured in pyproject.toml)
      ruff check .
      mypy damond fs_layout
    fi
    exec python -m pytest -q "$@" ;;
  *) echo "usage: bash quickstart.sh demo|test [args...]" >&2; exit 2 ;;
esac
