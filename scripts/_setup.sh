# Shared set-up for scripts/run and scripts/test: a project virtualenv in .venv,
# reinstalled only when setup.cfg changes, and Debian packages when missing.
# Sourced, not run.

PYTHON=${PYTHON:-python3}

ensure_venv() {
    local extras=$1
    if ! "$PYTHON" -c 'import sys; raise SystemExit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "stockcache needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
        exit 2
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "==> creating .venv" >&2
        "$PYTHON" -m venv .venv
    fi
    local stamp=".venv/.installed-${extras:-base}"
    local want
    want=$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "==> installing stockcache${extras:+[$extras]} into .venv" >&2
        .venv/bin/python -m pip install -q --disable-pip-version-check -e ".${extras:+[$extras]}"
        echo "$want" > "$stamp"
    fi
}

# PostgreSQL for the store's tests: Debian keeps initdb and pg_ctl off PATH, under
# /usr/lib/postgresql/<version>/bin, so look there rather than with command -v.
ensure_postgresql() {
    if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
        return 0
    fi
    ensure_debian_packages __stockcache_no_such_command__ postgresql
}

# ensure_debian_packages COMMAND PACKAGE [COMMAND PACKAGE ...]
ensure_debian_packages() {
    local missing=()
    while [ $# -gt 0 ]; do
        command -v "$1" >/dev/null 2>&1 || missing+=("$2")
        shift 2
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "==> installing Debian packages: ${missing[*]}" >&2
    $sudo apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
