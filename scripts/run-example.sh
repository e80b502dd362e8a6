#!/usr/bin/env bash
# Run the example: bootstrap (venv, package, test deps, RabbitMQ), then
# examples/worker.py. Extra arguments go to the example.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"

cd "$root"
exec "${TRIOWORKER_VENV:-$root/.venv}/bin/python" examples/worker.py "$@"
