"""The ``trioworker`` command line: ``trioworker run MODULE:ATTR [--workers N] ...``.

Public here: :func:`main` (the console script), and the log formatters and context filter
with :func:`configure_logging`, so an app run without the CLI can log the same way
(docs/logging.md). Nothing in this package runs or configures anything on import.
"""

from ._logging import JSONFormatter, LogContextFilter, TextFormatter, configure_logging
from ._main import main

__all__ = ["JSONFormatter", "LogContextFilter", "TextFormatter", "configure_logging", "main"]
