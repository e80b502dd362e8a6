#!/usr/bin/env bash
# Run the test suite: bootstrap (venv, package, test deps, RabbitMQ), then pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k batcher -x`.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/bootstrap.sh"

cd "$root"
# A broker the tests can also control with rabbitmqctl (a private node when the one on
# 5672 is out of rabbitmqctl's reach, e.g. in a container): see scripts/test-broker.sh.
if [[ "${TRIOWORKER_SKIP_BROKER:-}" != 1 ]]; then
    broker_env="$(bash "$root/scripts/test-broker.sh")"
    eval "$broker_env"
fi
rc=0
"${TRIOWORKER_VENV:-$root/.venv}/bin/python" -m pytest "$@" || rc=$?

# pytest exits 5 when it collected nothing; a test run that ran no test is a failure.
if [[ $rc -eq 5 ]]; then
    echo "test.sh: pytest collected no tests; treating that as a failure" >&2
    exit 1
fi
exit "$rc"
