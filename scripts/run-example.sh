#!/usr/bin/env bash
# Run the example: bootstrap (venv, package, test deps, RabbitMQ), then serve
# examples/worker.py with the command line, as a service is run:
#     trioworker run worker:app --app-dir examples
# Extra arguments go to `trioworker run` (e.g. --log-format json); settings come from
# the environment (TRIOWORKER_AMQP_URL; EXAMPLE_ORDERS, the number of orders, 2000).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"

cd "$root"
exec "${TRIOWORKER_VENV:-$root/.venv}/bin/trioworker" run worker:app --app-dir examples "$@"
