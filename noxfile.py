"""nox sessions: tests, lint, typecheck (benchmark sessions are appended at the end)."""

import shutil

import nox

nox.options.default_venv_backend = "uv" if shutil.which("uv") else "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "typecheck", "tests"]

LINT_PATHS = ["trioworker", "tests", "benchmarks", "noxfile.py"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run pytest against the real RabbitMQ on 127.0.0.1:5672 (started if needed)."""
    session.install("-e", ".[test]")
    session.run("bash", "scripts/ensure-rabbitmq.sh", external=True)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.5")
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the package."""
    # The optional imports are typed too: watchfiles (--reload), trio-parallel (process
    # pools), pytest (trioworker.testing's plugin).
    session.install("-e", ".[reload,process,test]", "mypy>=1.10")
    session.run("mypy", "--strict", "trioworker")


# --- bench sessions below ---

# Peers for `nox -s bench`, each in its own virtualenv under .nox/bench-peers/ (built once;
# delete that folder to pick up newer releases within these ranges).
BENCH_PEERS = {
    "aio-pika": "aio-pika>=9,<10",
    "pika": "pika>=1.3,<1.4",
    "asyncworker": "async-worker==0.20.2",  # imported as `asyncworker`
    "faststream": "faststream[rabbit,cli]>=0.7,<0.8",  # cli: `faststream run` (startup)
}


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Benchmarks vs the peers: `nox -s bench -- [SCENARIO ...]` (default: all).

    Client: consume, publish, publish-persistent, rss (vs aio-pika, pika). Framework:
    route-bulk (vs asyncworker, aio-pika), route-each (vs FastStream, aio-pika), route-rss,
    stream-consume (a route reading a RabbitMQ stream vs pika's stream consumer).
    CLI: cli-workers (`trioworker run --workers 2` vs `--workers 1`), startup (first
    message and idle RSS of `trioworker run` vs `faststream run`). Nameko: nameko-rpc
    (`@app.nameko.rpc` and `app.nameko.call` vs Nameko 2.14.1; the script builds the
    Nameko venv `.venv-nameko/` of tests/nameko/venv.py on first use). WebSocket:
    websocket-echo (`@app.http.websocket` echo vs a raw ASGI echo app on the same hypercorn,
    1 and 100 clients; messages/s, p50/p99, server CPU per message; --ws-count 20000).
    Cluster: cluster (a private 3-node RabbitMQ cluster started by the script: the bulk
    route on a quorum queue vs a classic queue on one node, and node kill -9 to the first
    message a worker handles on a surviving node, p50/max over 6 kills).
    Other options go to benchmarks/run.py: --rounds 3, --count 100000, --rss-count 1000000,
    --fill-with pika|trioworker, --exact-count, --check (exit 1 unless every goal is met).
    """
    import os
    from pathlib import Path

    # route-pool: trio-parallel; websocket-echo: the websockets client (the load process);
    # cluster: pytest, imported by tests/support/cluster.py (the cluster the script starts)
    session.install("-e", ".[process]", "websockets>=13", "pytest>=8.0")
    session.run("bash", "scripts/ensure-rabbitmq.sh", external=True)
    bindir = "Scripts" if os.name == "nt" else "bin"
    pythons = {"trioworker": str(Path(session.bin) / "python")}
    for name, requirement in BENCH_PEERS.items():
        venv = Path(".nox", "bench-peers", name).resolve()
        python = venv / bindir / "python"
        if not python.exists():
            session.run("python", "-m", "venv", str(venv))
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        session.run(*pip, requirement, external=True)
        pythons[name] = str(python)
    args = [f"--python={name}={python}" for name, python in pythons.items()]
    session.run("python", "benchmarks/run.py", *args, *session.posargs)
