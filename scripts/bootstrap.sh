#!/usr/bin/env bash
# Prepare everything the example and the tests need, idempotently and quietly:
#   - a virtualenv at .venv with Python >= 3.11 (installs Debian's venv module when
#     it is missing and we are root),
#   - this package installed editable with its test extras (skipped while
#     pyproject.toml is unchanged since the last install),
#   - a RabbitMQ broker on 127.0.0.1:5672 (scripts/ensure-rabbitmq.sh).
#
# Run it (`bash scripts/bootstrap.sh`), or source it to also get the venv's
# interpreter path in TRIOWORKER_PYTHON.
#
# Environment:
#   PYTHON                    interpreter to build the venv from (default: python3.11, python3, ...)
#   TRIOWORKER_VENV           venv location (default: <repo>/.venv)
#   TRIOWORKER_SKIP_BROKER=1  do not check for / start RabbitMQ

_tw_bootstrap() {
    set -euo pipefail

    local root venv stamp_file want have py=""
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="${TRIOWORKER_VENV:-$root/.venv}"
    stamp_file="$venv/.trioworker-install-stamp"

    log() { printf 'bootstrap: %s\n' "$*" >&2; }

    # Python >= 3.11 that works; prints nothing on failure.
    py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }

    find_python() {
        local cand
        for cand in ${PYTHON:-} python3.11 python3 python3.13 python3.12; do
            if command -v "$cand" >/dev/null 2>&1 && py_ok "$cand"; then
                "$cand" -c 'import sys; print(sys.executable)'
                return 0
            fi
        done
        return 1
    }

    make_venv() {
        py="$(find_python)" || {
            log "no Python >= 3.11 found (tried \$PYTHON, python3.11, python3, python3.13, python3.12)."
            log "install one (Debian/Ubuntu: apt-get install python3 python3-venv) or set PYTHON=/path/to/python3.11"
            return 1
        }
        # Debian splits venv/ensurepip into python3-venv; without it `-m venv` fails.
        if ! "$py" -c 'import venv, ensurepip' >/dev/null 2>&1; then
            local ver
            ver="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
            if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
                log "$py lacks the venv module; installing python${ver}-venv with apt-get"
                apt-get update -qq
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python${ver}-venv" >/dev/null \
                    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
            else
                log "$py cannot create virtualenvs (module venv/ensurepip missing)."
                log "on Debian/Ubuntu run: sudo apt-get install python${ver}-venv   (or python3-venv)"
                return 1
            fi
        fi
        log "creating virtualenv $venv with $py"
        rm -rf "$venv"
        "$py" -m venv "$venv" || { rm -rf "$venv"; log "could not create $venv"; return 1; }
    }

    # Reuse the venv only if its interpreter still runs and is new enough (a venv
    # built from a since-removed Python leaves a dangling bin/python behind).
    if ! py_ok "$venv/bin/python"; then
        make_venv
    fi

    # Reinstall when pyproject.toml, the venv's Python or the checkout's location
    # (editable installs point at it) changed, or the package vanished.
    want="$(
        {
            cat "$root/pyproject.toml"
            printf '%s\n' "$root"
            "$venv/bin/python" -c 'import sys; print(sys.version)'
        } | cksum
    )"
    have="$(cat "$stamp_file" 2>/dev/null || true)"
    if [[ "$want" != "$have" ]] || ! "$venv/bin/python" -m pip show -q trioworker >/dev/null 2>&1; then
        log "installing trioworker[test] into $venv (pip install -e '.[test]')"
        rm -f "$stamp_file"
        (cd "$root" && "$venv/bin/python" -m pip install -q --disable-pip-version-check -e '.[test]')
        printf '%s\n' "$want" >"$stamp_file"
    fi

    if [[ "${TRIOWORKER_SKIP_BROKER:-}" != 1 ]]; then
        bash "$root/scripts/ensure-rabbitmq.sh"
    fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    _tw_bootstrap "$@"
else
    # Sourced: do the work in a child bash so our `set -euo pipefail` and helpers
    # do not leak into the caller's shell; then hand back the interpreter path.
    bash "${BASH_SOURCE[0]}" "$@" || return 1
    TRIOWORKER_PYTHON="${TRIOWORKER_VENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv}/bin/python"
    export TRIOWORKER_PYTHON
fi
