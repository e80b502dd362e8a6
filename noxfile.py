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
    session.install("-e", ".", "mypy>=1.10")
    session.run("mypy", "--strict", "trioworker")


# --- bench sessions below ---
