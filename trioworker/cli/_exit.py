"""Exit statuses of ``trioworker run``, shared by the worker and the supervisor.

They are part of the contract with process managers (systemd, Kubernetes, the supervisor
itself): 1 and 2 before a worker was ever ready mean "starting again will fail the same
way", so nobody should restart-loop on them.
"""

from __future__ import annotations

import signal
from typing import Final

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "describe_status"]

#: A graceful stop.
EXIT_OK: Final = 0
#: The app could not start (:class:`~trioworker.StartupError`), or it failed unexpectedly.
EXIT_FAILURE: Final = 1
#: Bad command line: bad ``MODULE:ATTR``, the module does not import, ATTR is not an App.
EXIT_USAGE: Final = 2


def describe_status(returncode: int) -> str:
    """``"exit status 1"`` or ``"signal SIGKILL"`` (subprocess reports a signal as -N)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"
