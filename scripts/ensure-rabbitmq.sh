#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on 127.0.0.1:5672 (guest/guest).
#
#   1. Something already listens there: exit 0 at once, print nothing.
#   2. rabbitmq-server is installed: start it detached, wait until it is up.
#   3. Otherwise, as root (or with password-less sudo) on a system with apt-get:
#      install Debian's rabbitmq-server, then start it as in 2.
#   4. Otherwise: explain how to get a broker and exit non-zero.
#
# Environment:
#   TRIOWORKER_BROKER_HOST      host to check (default 127.0.0.1)
#   TRIOWORKER_BROKER_PORT      port to check (default 5672); rabbitmq-server itself
#                               listens where RABBITMQ_NODE_PORT says (default 5672)
#   TRIOWORKER_BROKER_TIMEOUT   seconds to wait for a started broker (default 90)
set -euo pipefail

HOST="${TRIOWORKER_BROKER_HOST:-127.0.0.1}"
PORT="${TRIOWORKER_BROKER_PORT:-5672}"
WAIT_SECONDS="${TRIOWORKER_BROKER_TIMEOUT:-90}"

log() { printf 'ensure-rabbitmq: %s\n' "$*" >&2; }

port_open() {
    # bash's /dev/tcp needs no extra tools; `timeout` guards against a black-holed port.
    if command -v timeout >/dev/null 2>&1; then
        timeout 3 bash -c ">/dev/tcp/$HOST/$PORT" 2>/dev/null
    else
        bash -c ">/dev/tcp/$HOST/$PORT" 2>/dev/null
    fi
}

if port_open; then
    exit 0
fi

# Run a command with root rights when we have them or can get them without a prompt.
# Debian's rabbitmq-server/rabbitmqctl wrappers refuse anyone but root or rabbitmq.
SUDO=()
if [[ "$(id -u)" != 0 ]] && [[ "$(id -un)" != rabbitmq ]] \
    && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
fi
can_be_root() { [[ "$(id -u)" == 0 ]] || ((${#SUDO[@]})); }

# ${SUDO[@]+...} keeps `set -u` happy on bash < 4.4 when the array is empty.
as_root() { ${SUDO[@]+"${SUDO[@]}"} "$@"; }
# rabbitmqctl, bounded in time: await_startup alone may block for minutes.
ctl() {
    if command -v timeout >/dev/null 2>&1; then
        as_root timeout 30 rabbitmqctl "$@"
    else
        as_root rabbitmqctl "$@"
    fi
}

no_broker_help() {
    cat >&2 <<EOF
ensure-rabbitmq: no RabbitMQ answers on $HOST:$PORT, and this script cannot start one here.
  Get a broker in one of these ways, then run this script again:
    - Debian/Ubuntu (as root):  apt-get install -y rabbitmq-server && rabbitmq-server -detached
    - macOS (Homebrew):         brew install rabbitmq && brew services start rabbitmq
    - Docker:                   docker run -d -p 5672:5672 rabbitmq:3
  The tests use amqp://guest:guest@127.0.0.1:5672/ (RabbitMQ's default guest user,
  which is allowed from localhost).
EOF
}

start_broker() {
    # A node that is up but not (yet) listening is left alone: starting a second
    # node of the same name would only fail.
    if ctl -q status >/dev/null 2>&1; then
        log "RabbitMQ node is running but $HOST:$PORT does not answer yet; waiting"
    else
        # Debian's wrapper refuses (or misbehaves for) anyone but root and rabbitmq.
        if ! can_be_root && [[ "$(id -un)" != rabbitmq ]] \
            && grep -q "Only root or rabbitmq" "$(command -v rabbitmq-server)" 2>/dev/null; then
            log "rabbitmq-server is installed but must be started as root or rabbitmq:"
            log "    sudo rabbitmq-server -detached"
            exit 1
        fi
        log "starting RabbitMQ (rabbitmq-server -detached)"
        # -detached returns at once; a node that fails to boot shows up as a timeout below.
        as_root rabbitmq-server -detached >/dev/null 2>&1 \
            || log "rabbitmq-server -detached exited with $?; waiting anyway"
    fi

    local deadline=$((SECONDS + WAIT_SECONDS))
    while ((SECONDS < deadline)); do
        if port_open && ctl -q await_startup >/dev/null 2>&1; then
            if ! ctl -q authenticate_user guest guest >/dev/null 2>&1; then
                log "RabbitMQ is up on $HOST:$PORT but user guest/guest does not authenticate."
                log "fix it with: rabbitmqctl add_user guest guest &&" \
                    "rabbitmqctl set_permissions -p / guest '.*' '.*' '.*'"
                exit 1
            fi
            log "RabbitMQ is up on $HOST:$PORT"
            exit 0
        fi
        sleep 1
    done
    log "RabbitMQ did not come up on $HOST:$PORT within ${WAIT_SECONDS}s."
    log "look at /var/log/rabbitmq/ (startup_err, rabbit@*.log) and try: rabbitmq-server -detached"
    exit 1
}

if command -v rabbitmq-server >/dev/null 2>&1 || [[ -x /usr/sbin/rabbitmq-server ]]; then
    PATH="$PATH:/usr/sbin:/sbin"
    start_broker
fi

if can_be_root && command -v apt-get >/dev/null 2>&1; then
    log "rabbitmq-server is not installed; installing it with apt-get"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    PATH="$PATH:/usr/sbin:/sbin"
    # The package tries to start the service through systemd / invoke-rc.d, which
    # containers lack; start_broker waits for a node that did start, or starts one.
    start_broker
fi

no_broker_help
exit 1
