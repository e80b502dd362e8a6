#!/usr/bin/env bash
# Which broker the test suite uses, and how the tests control it. Prints `export` lines for
# scripts/test.sh to eval; prints nothing when the default is right.
#
# The fault-injection tests need `rabbitmqctl` to reach the broker they talk to (close its
# connections, count its queues). Three cases (docs/testing.md):
#   (a) no broker at all: scripts/ensure-rabbitmq.sh already installed and started one;
#       `rabbitmqctl` reaches it -> the default (127.0.0.1:5672) is right.
#   (b) a broker on 5672 that `rabbitmqctl` reaches (this project's machines) -> default.
#   (c) a broker answers on 5672 but `rabbitmqctl` is missing or reaches another node (a
#       broker in a container): start a private node we control on another port
#       (installing Debian's rabbitmq-server first if needed, without letting its package
#       start a node on the taken port), and point the tests at it:
#       TRIOWORKER_TEST_AMQP_URL and TRIOWORKER_RABBITMQ_NODE (`rabbitmqctl -n`).
#
# Environment:
#   TRIOWORKER_TEST_AMQP_URL     set by the user: used as it is, nothing is checked here
#   TRIOWORKER_RABBITMQCTL       the rabbitmqctl to use (default: rabbitmqctl)
#   TRIOWORKER_BROKER_PORT       the shared broker's port (default 5672)
#   TRIOWORKER_PRIVATE_PORT      the private node's AMQP port (default 5673; dist port +20000)
set -euo pipefail

if [[ -n "${TRIOWORKER_TEST_AMQP_URL:-}" ]]; then
    exit 0
fi

PORT="${TRIOWORKER_BROKER_PORT:-5672}"
CTL="${TRIOWORKER_RABBITMQCTL:-rabbitmqctl}"
NODE="trioworker-test@localhost"
PRIVATE_PORT="${TRIOWORKER_PRIVATE_PORT:-5673}"
BASE="${TMPDIR:-/tmp}/trioworker-test-broker"
WAIT_SECONDS="${TRIOWORKER_BROKER_TIMEOUT:-120}"
PATH="$PATH:/usr/sbin:/sbin"

log() { printf 'test-broker: %s\n' "$*" >&2; }
bounded() { if command -v timeout >/dev/null 2>&1; then timeout 30 "$@"; else "$@"; fi; }

# (b): rabbitmqctl answers, and the node it reaches is the one listening on our port.
if command -v "$CTL" >/dev/null 2>&1 \
    && bounded "$CTL" -q status 2>/dev/null | grep -Eq "port: $PORT, protocol: amqp\b"; then
    exit 0
fi

log "a broker answers on port $PORT but $CTL cannot control it; using a private node"
log "($NODE on port $PRIVATE_PORT) for the tests"

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        log "cannot install rabbitmq-server here (needs root and apt-get)."
        log "install it, or set TRIOWORKER_TEST_AMQP_URL and TRIOWORKER_RABBITMQCTL to a"
        log "broker and a rabbitmqctl that controls it."
        exit 1
    fi
    log "installing Debian's rabbitmq-server (its own service is not started)"
    # policy-rc.d exit 101 tells invoke-rc.d not to start services: the package's default
    # node would fight the existing broker for port 5672.
    policy=/usr/sbin/policy-rc.d
    had_policy=0
    [[ -e $policy ]] && had_policy=1
    [[ $had_policy == 1 ]] || printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    [[ $had_policy == 1 ]] || rm -f "$policy"
fi

ctl_node() { bounded rabbitmqctl -n "$NODE" "$@"; }

if ! ctl_node -q status >/dev/null 2>&1; then
    mkdir -p "$BASE/mnesia" "$BASE/log"
    echo "[]." >"$BASE/enabled_plugins"
    # Our own config: the system's (/etc/rabbitmq/rabbitmq.conf) names the taken port.
    printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users.guest = true\n' \
        "$PRIVATE_PORT" >"$BASE/rabbitmq.conf"
    # Debian's wrappers run the node as the rabbitmq user when called by root.
    if id rabbitmq >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        chown -R rabbitmq: "$BASE"
    fi
    log "starting $NODE (data in $BASE)"
    env RABBITMQ_NODENAME="$NODE" RABBITMQ_NODE_PORT="$PRIVATE_PORT" \
        RABBITMQ_DIST_PORT="$((PRIVATE_PORT + 20000))" \
        RABBITMQ_MNESIA_BASE="$BASE/mnesia" RABBITMQ_LOG_BASE="$BASE/log" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/enabled_plugins" \
        RABBITMQ_CONFIG_FILE="$BASE/rabbitmq.conf" \
        RABBITMQ_ADVANCED_CONFIG_FILE="$BASE/advanced.config" \
        RABBITMQ_PID_FILE="$BASE/node.pid" \
        rabbitmq-server -detached >/dev/null 2>&1 || log "rabbitmq-server -detached exited with $?"
fi

deadline=$((SECONDS + WAIT_SECONDS))
until ctl_node -q await_startup >/dev/null 2>&1 \
    && bash -c ">/dev/tcp/127.0.0.1/$PRIVATE_PORT" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
        log "$NODE did not come up within ${WAIT_SECONDS}s; see $BASE/log"
        exit 1
    fi
    sleep 1
done
log "$NODE is up on port $PRIVATE_PORT"
echo "export TRIOWORKER_TEST_AMQP_URL='amqp://guest:guest@127.0.0.1:$PRIVATE_PORT/%2F'"
echo "export TRIOWORKER_RABBITMQ_NODE='$NODE'"
echo "export TRIOWORKER_RABBITMQCTL='rabbitmqctl'"
