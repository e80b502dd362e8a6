"""A virtualenv holding Nameko 2.14.1, for the interop tests to run real Nameko in.

Nameko needs eventlet, which monkey-patches the standard library: it must never enter our
own environment. So the tests run Nameko as subprocesses of an interpreter of its own,
built here once and reused: ``.venv-nameko/`` at the top of the checkout (git-ignored;
``TRIOWORKER_NAMEKO_VENV`` puts it elsewhere). A stamp file holding the pinned requirements
marks a finished build; a build that was interrupted, or one of other pins, is thrown away
and made again. A lock keeps two test sessions from building it at once.

The pins are the set checked to install and run on Python 3.11 and 3.12 (nameko 2.14.1
was released in 2021; its open-ended dependencies have moved on since, and an untested mix
is a test failure waiting for the day PyPI changes). Run it by hand with
``python tests/nameko/venv.py``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_ENV = "TRIOWORKER_NAMEKO_VENV"
PYTHON_ENV = "TRIOWORKER_NAMEKO_PYTHON"

#: Nameko 2.14.1 and what it pulls, pinned to versions known to work together on 3.11.
REQUIREMENTS = (
    "nameko==2.14.1",
    "eventlet==0.41.3",
    "greenlet==3.5.6",
    "dnspython==2.9.2",
    "kombu==5.7.0",
    "amqp==5.4.2",
    "vine==5.1.0",
    "Werkzeug==3.1.9",
    "MarkupSafe==3.0.4",
    "PyYAML==6.0.4",
    "mock==5.2.0",
    "path==17.1.1",
    "path.py==12.5.0",
    "six==1.17.0",
    "wrapt==2.5.2",
    "requests==2.34.2",
    "charset-normalizer==3.5.3",
    "idna==3.20",
    "urllib3==2.8.0",
    "certifi==2026.10.19.post1",
    "packaging==26.4",
    # nameko's CLI imports pkg_resources: a venv of Python 3.12+ comes without setuptools.
    "setuptools==75.8.2",
)


class NamekoVenvError(RuntimeError):
    """The Nameko virtualenv could not be built (the tests fail with this, never skip)."""


def venv_dir() -> Path:
    return Path(os.environ.get(VENV_ENV) or ROOT / ".venv-nameko")


def _base_python() -> str:
    """Python 3.11 if there is one (what the pins were checked on), else ours."""
    return os.environ.get(PYTHON_ENV) or shutil.which("python3.11") or sys.executable


def _run(command: list[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-4000:]
        raise NamekoVenvError(f"{what} failed ({' '.join(command)}):\n{tail}")


def ensure_venv() -> Path:
    """The Nameko venv's python, building the venv first if needed."""
    target = venv_dir()
    python = target / "bin" / "python"
    stamp = target / ".trioworker-stamp"
    wanted = "\n".join(REQUIREMENTS)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.with_name(target.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another session may be building it right now
        if stamp.is_file() and stamp.read_text() == wanted and python.exists():
            return python
        shutil.rmtree(target, ignore_errors=True)
        _run([_base_python(), "-m", "venv", str(target)], "creating the Nameko venv")
        _run(
            [str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
            "installing Nameko 2.14.1 into its venv",
        )
        _run(
            [str(python), "-c", "import nameko, eventlet, kombu; import nameko.standalone.rpc"],
            "importing Nameko in its venv",
        )
        stamp.write_text(wanted)
    return python


if __name__ == "__main__":
    print(ensure_venv())
