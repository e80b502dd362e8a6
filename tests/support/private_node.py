"""A private RabbitMQ node for tests that need broker settings the shared broker must keep.

Memory alarms, a short ``consumer_timeout``, a TLS listener, a second cluster member: things
a test may not do to the shared broker on 127.0.0.1:5672 (other tests run against it). A
:class:`PrivateNode` is its own Erlang node (``tw-<tag>-<pid>@localhost``) with its own
ports, data and log directories, no plugins, and its own Erlang cookie (``HOME`` points into
its directory), so nothing it does reaches the shared node.

Use the session fixture ``private_node`` (register the module as a pytest plugin, e.g.
``pytest_plugins = ["tests.support.private_node"]``, or import the fixture), or build one
with extra configuration::

    node = PrivateNode("tls", config="listeners.ssl.default = 5671\\n...")
    node.start()          # blocks until the broker accepts AMQP connections
    try:
        node.amqp_url     # "amqp://guest:guest@127.0.0.1:<port>/%2F"
        node.ctl("list_queues")
        node.set_env("consumer_timeout", 2000)   # application env, for new channels
        with node.memory_alarm(): ...             # publishers blocked meanwhile
        node.kill(); node.start()                 # a crash (kill -9), then back on its data
        node.halt(); node.start()                 # a graceful stop, then back
    finally:
        node.stop()       # always: kills the node and removes its directory
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

RABBITMQ_BIN = Path(os.environ.get("TRIOWORKER_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
START_TIMEOUT = 120.0
CTL_TIMEOUT = 60.0

__all__ = ["PrivateNode", "free_port", "private_node"]


def free_port() -> int:
    """A TCP port nothing listens on right now (on 127.0.0.1)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateNode:
    """One RabbitMQ node of our own: start, administer, stop (see the module docstring).

    ``config`` is appended to the node's ``rabbitmq.conf`` (new-style ``key = value``
    lines); ``advanced`` is the body of ``advanced.config`` (an Erlang term list, e.g.
    ``"[{rabbit, [{channel_tick_interval, 500}]}]."``). ``home`` is where ``HOME`` points
    (the Erlang cookie is ``home/.erlang.cookie``): nodes of one cluster share it; by
    default each node has its own, in its directory.
    """

    def __init__(
        self,
        tag: str = "private",
        *,
        config: str = "",
        advanced: str = "",
        home: Path | None = None,
    ) -> None:
        self.nodename = f"tw-{tag}-{os.getpid()}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        self.base = Path(tempfile.mkdtemp(prefix=f"tw-rabbit-{tag}-"))
        self.home = home or self.base
        (self.base / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\n"
            "loopback_users = none\n"
            # Our own alarms only: the machine's free disk must not block the node.
            "disk_free_limit.absolute = 1MB\n" + config
        )
        (self.base / "advanced.config").write_text(advanced or "[].")
        (self.base / "enabled_plugins").write_text("[].")
        self.started = False
        self._process: subprocess.Popen[bytes]

    # ------------------------------------------------------------- location

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            HOME=str(self.home),  # the Erlang cookie: the node's own, or its cluster's
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_PID_FILE=str(self.base / "node.pid"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_ENABLED_PLUGINS="",
        )
        return env

    # ------------------------------------------------------------ lifecycle

    @property
    def running(self) -> bool:
        """True from :meth:`start` until the node's process ended (stopped or killed)."""
        return self.started and self._process.poll() is None

    def start(self, *, wait: bool = True) -> None:
        """Start the node and (unless ``wait=False``: call :meth:`wait_started`) wait until
        it has booted. A node that was killed starts again on its data: a cluster member
        rejoins its cluster."""
        self.launch()
        if wait:
            self.wait_started()

    def launch(self) -> None:
        """Start the node's process without waiting for it to boot."""
        # In the foreground of a process of our own (``-detached`` loses the node's early
        # errors): its output goes to ``server.out`` in the node's directory.
        with open(self.base / "server.out", "ab") as out:
            self._process = subprocess.Popen(
                [str(RABBITMQ_BIN / "rabbitmq-server")],
                env=self.env(),
                cwd=self.base,  # Erlang writes its crash dumps (MnesiaCore.*) to the cwd
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started = True

    def wait_started(self) -> None:
        """Wait until the launched node has booted (raise, with its output, if it did not)."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.ctl("await_startup", "--timeout", "30", timeout=40)
                return
            except subprocess.CalledProcessError as exc:
                # Not registered with epmd yet (await_startup needs the node to exist).
                if self._process.poll() is not None or time.monotonic() > deadline:
                    output = (self.base / "server.out").read_text(errors="replace")
                    self.stop()
                    why = f"private RabbitMQ node did not start:\n{output[-4000:]}"
                    raise RuntimeError(why) from exc
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop the node (killing it if it does not stop) and remove its directory."""
        if self.started:
            if self.running:
                try:
                    self.ctl("stop", timeout=CTL_TIMEOUT)
                    self._process.wait(timeout=CTL_TIMEOUT)
                except (subprocess.SubprocessError, OSError):
                    pass
            self._kill()  # what did not stop, and any helper left in its process group
            self.started = False
        shutil.rmtree(self.base, ignore_errors=True)

    def halt(self) -> None:
        """Stop the node gracefully (``rabbitmqctl stop``: clients get ``CONNECTION_FORCED``,
        quorum queues hand their leadership over), keeping its data: :meth:`start` brings
        it back."""
        self.ctl("stop", timeout=CTL_TIMEOUT)
        self._process.wait(timeout=CTL_TIMEOUT)

    def kill(self) -> None:
        """``kill -9`` the node (its own process group only), keeping its data: a crash.
        :meth:`start` brings it back."""
        if self.started:
            self._kill()

    def _kill(self) -> None:
        # The node runs in a session of its own (start_new_session): its process group is
        # the beam and its helpers (erl_child_setup, inet_gethost, the disk monitor), and
        # nothing else. epmd daemonizes itself out of it, so other nodes keep their names.
        with contextlib.suppress(OSError):
            os.killpg(self._process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.SubprocessError):
            self._process.wait(timeout=10)

    # -------------------------------------------------------- administration

    def ctl(self, *args: str, timeout: float = CTL_TIMEOUT) -> str:
        """Run ``rabbitmqctl -n <node> args...`` and return its output (raise on failure)."""
        proc = subprocess.run(
            [str(RABBITMQ_BIN / "rabbitmqctl"), "-n", self.nodename, *args],
            env=self.env(),
            cwd=self.base if self.base.is_dir() else None,  # crash dumps out of the checkout
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(
                proc.returncode, proc.args, proc.stdout, proc.stderr
            )
        return proc.stdout

    def eval(self, expression: str) -> str:
        """Evaluate an Erlang expression on the node (``rabbitmqctl eval``)."""
        return self.ctl("eval", expression).strip()

    def set_env(self, key: str, value: int | str) -> None:
        """Set the ``rabbit`` application's env ``key`` (read by channels opened later)."""
        self.eval(f"application:set_env(rabbit, {key}, {value}).")

    def unset_env(self, key: str) -> None:
        self.eval(f"application:unset_env(rabbit, {key}).")

    @contextlib.contextmanager
    def app_env(self, **values: int | str) -> Iterator[None]:
        """Set ``rabbit`` application env keys for the ``with`` block (channels opened in
        it read them: ``consumer_timeout``, ``channel_tick_interval``, ...), then put the
        previous values back."""
        before = {key: self.eval(f"application:get_env(rabbit, {key}).") for key in values}
        try:
            for key, value in values.items():
                self.set_env(key, value)
            yield
        finally:
            for key, old in before.items():
                if old == "undefined":
                    self.unset_env(key)
                else:  # "{ok,Value}"
                    self.set_env(key, old[len("{ok,") : -1])

    def set_memory_alarm(self, on: bool) -> None:
        """Raise or clear a real memory alarm (the high watermark far below, or back at
        RabbitMQ's default 0.4): the broker blocks the connections that publish."""
        self.ctl("set_vm_memory_high_watermark", "0.0000001" if on else "0.4")

    def alarms(self) -> str:
        """The node's alarms, as Erlang prints them (``[]``: none)."""
        return self.eval("rabbit_alarm:get_alarms().")

    @contextlib.contextmanager
    def memory_alarm(self) -> Iterator[None]:
        """A memory alarm for the ``with`` block, cleared however it ends."""
        self.set_memory_alarm(True)
        try:
            yield
        finally:
            self.set_memory_alarm(False)


@pytest.fixture(scope="session")
def private_node() -> Iterator[PrivateNode]:
    """A private RabbitMQ node for the session, stopped at the end whatever happens.

    Tests may raise alarms or change application env on it; they restore what they change
    (other tests of the session share the node).
    """
    node = PrivateNode("session")
    try:
        node.start()
        yield node
    finally:
        node.stop()
