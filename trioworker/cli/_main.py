"""``trioworker run MODULE:ATTR``: the command line, and which runner it picks.

- ``--workers 1`` (the default) serves the app in this process — nothing between the app
  and the signals of a process manager (systemd, Kubernetes) that already supervises it;
- ``--workers N`` starts a supervisor (:mod:`._supervisor`) with N children;
- ``--reload`` runs one child under the supervisor and restarts it on code changes.

App settings are not flags: they come from ``App(...)`` or the ``TRIOWORKER_*`` environment
variables (docs/configuration.md), which reach the children unchanged.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

import trio

from .. import _settings
from .._version import __version__
from ._discovery import DiscoveryError, parse_target
from ._exit import EXIT_FAILURE, EXIT_USAGE
from ._logging import LOG_FORMATS, LOG_LEVELS, configure_logging
from ._reload import ReloadUnavailable, check_watchfiles, run_with_reload
from ._supervisor import Supervisor
from ._worker import run_worker

__all__ = ["build_parser", "main"]

log = logging.getLogger("trioworker.cli")


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trioworker", description="Run trioworker apps (docs/cli.md)."
    )
    parser.add_argument("--version", action="version", version=f"trioworker {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    run = commands.add_parser(
        "run",
        help="serve an app until SIGINT/SIGTERM",
        description="Serve the App named MODULE:ATTR until SIGINT/SIGTERM, then stop "
        "gracefully. App settings come from the TRIOWORKER_* environment variables.",
    )
    run.add_argument("target", metavar="MODULE:ATTR", help="where the App is, e.g. myservice:app")
    run.add_argument(
        "--workers", type=_workers, default=1, metavar="N",
        help="worker processes (default 1: serve in this process, no supervisor)",
    )  # fmt: skip
    run.add_argument(
        "--reload", action="store_true",
        help="restart the worker when a .py file under --app-dir changes (development only; "
        "needs trioworker[reload])",
    )  # fmt: skip
    run.add_argument("--log-level", choices=LOG_LEVELS, default="info", type=str.lower)
    run.add_argument("--log-format", choices=LOG_FORMATS, default="text")
    run.add_argument(
        "--app-dir", metavar="DIR", default=None,
        help="directory put first on sys.path to import MODULE from (default: the current one)",
    )  # fmt: skip
    run.add_argument(
        "--factory", action="store_true", help="ATTR is a callable that returns the App"
    )
    # Internal: the supervisor's end of the link to this worker (see _worker.py).
    run.add_argument("--supervisor-fd", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``trioworker`` console script and ``python -m trioworker``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    if args.reload and args.workers > 1:
        print(
            "trioworker run: error: --reload runs a single worker; "
            "it cannot be combined with --workers > 1",
            file=sys.stderr,
        )
        return EXIT_USAGE
    configure_logging(args.log_level, args.log_format)
    app_dir = os.path.abspath(args.app_dir if args.app_dir is not None else os.getcwd())
    try:
        if args.workers == 1 and not args.reload:
            return run_worker(
                args.target, factory=args.factory, app_dir=app_dir,
                supervisor_fd=args.supervisor_fd,
            )  # fmt: skip
        return _supervise(args, app_dir)
    except Exception:
        log.critical("trioworker run failed unexpectedly", exc_info=True)
        return EXIT_FAILURE


def _supervise(args: argparse.Namespace, app_dir: str) -> int:
    try:
        parse_target(args.target)  # fail fast; the children do the import
        grace_period = _settings.grace_period()
        if args.reload:
            check_watchfiles()
    except (DiscoveryError, ReloadUnavailable, ValueError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    argv = [
        sys.executable, "-m", "trioworker", "run", args.target, "--workers", "1",
        "--app-dir", app_dir, "--log-level", args.log_level, "--log-format", args.log_format,
        *(["--factory"] if args.factory else []),
    ]  # fmt: skip
    supervisor = Supervisor(
        argv, 1 if args.reload else args.workers, default_grace_period=grace_period,
        reload=args.reload,
    )  # fmt: skip
    if args.reload:
        return trio.run(run_with_reload, supervisor, app_dir)
    return trio.run(supervisor.run)
