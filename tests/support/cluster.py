"""A private 3-node RabbitMQ cluster for the failover tests (``tests/cluster/``).

Three :class:`~tests.support.private_node.PrivateNode`\\ s (``tw-cN-<pid>@localhost``), each
on its own AMQP and distribution ports with its own config, data and log directories and no
plugins, share one Erlang cookie (``HOME`` points at the cluster's directory for the nodes
and for the CLI, so the CLI sends that cookie, not the ``rabbitmq`` user's); nodes 2 and 3
``join_cluster`` node 1. The shared broker on 5672 is never touched, and only the
processes started here are ever killed (each node runs in a process group of its own).

Measured on a 2-core machine: a cold start of three nodes takes 16-20 s (about 0.5 GB for
all three), a new quorum leader is elected 0.5-1.3 s after a ``kill -9``, and a restart with
rejoin takes 6-9 s. So the cluster starts once per session (the ``cluster`` fixture), and
tests poll progress over AMQP or files, not through the CLI (each call costs ~0.5 s).

Where ``rabbitmq-server`` is not installed the fixture fails with the reason (it is never
skipped): ``scripts/test-broker.sh`` installs it where the shared broker is out of reach.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.private_node import RABBITMQ_BIN, PrivateNode

__all__ = ["Cluster", "cluster"]

#: Time the cluster gets to elect a leader, replicate, come back (generous: shared cores).
SETTLE_TIMEOUT = 60.0


class Cluster:
    """``size`` private nodes joined into one cluster: start, kill, restart, stop."""

    def __init__(self, size: int = 3) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="tw-cluster-"))
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(20))
        cookie.chmod(0o400)  # erl refuses a cookie file others can read
        self.nodes = [PrivateNode(f"c{i + 1}", home=self.home) for i in range(size)]

    # ------------------------------------------------------------- location

    @property
    def urls(self) -> list[str]:
        """Every node's AMQP URL, in node order."""
        return [node.amqp_url for node in self.nodes]

    def node_on_port(self, port: int) -> PrivateNode:
        """The node whose AMQP listener is ``port``."""
        for node in self.nodes:
            if node.port == port:
                return node
        raise LookupError(f"no node of the cluster listens on port {port}")

    def node_named(self, nodename: str) -> PrivateNode:
        for node in self.nodes:
            if node.nodename == nodename:
                return node
        raise LookupError(f"no node {nodename!r} in the cluster")

    def running(self) -> list[PrivateNode]:
        return [node for node in self.nodes if node.running]

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Boot every node at once, then join the others to the first."""
        if not (RABBITMQ_BIN / "rabbitmq-server").exists():
            raise RuntimeError(
                f"rabbitmq-server is not installed in {RABBITMQ_BIN} (set "
                "TRIOWORKER_RABBITMQ_BIN to its directory): the cluster tests need it"
            )
        try:
            for node in self.nodes:
                node.launch()
            self._each(PrivateNode.wait_started, self.nodes)
            # One at a time: two nodes joining at once race on the cluster's schema (seen:
            # start_app failing with 69 on one of them).
            for node in self.nodes[1:]:
                _join(node, self.nodes[0].nodename)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every node (killing what does not stop) and remove the cluster's files."""
        self._each(PrivateNode.stop, self.nodes)
        shutil.rmtree(self.home, ignore_errors=True)

    def kill(self, node: PrivateNode) -> None:
        """``kill -9`` one node: its connections drop, its replicas go away."""
        node.kill()

    def restart(self, node: PrivateNode) -> None:
        """Start a killed node again on its data; it rejoins the cluster as it boots."""
        node.start()

    def heal(self) -> None:
        """Restart every node that is down (tests leave the cluster whole for the next)."""
        self._each(self.restart, [node for node in self.nodes if not node.running])

    @staticmethod
    def _each(action: object, nodes: list[PrivateNode]) -> None:
        """Run ``action(node)`` for every node at once (each CLI call costs ~0.5 s)."""
        if not nodes:
            return
        with ThreadPoolExecutor(len(nodes)) as pool:
            for future in [pool.submit(action, node) for node in nodes]:  # type: ignore[arg-type]
                future.result()

    # -------------------------------------------------------------- queries

    def ctl(self, *args: str) -> str:
        """``rabbitmqctl`` on any running node (with the cluster's cookie)."""
        running = self.running()
        if not running:
            raise RuntimeError("no node of the cluster is running")
        return running[0].ctl(*args)

    def leader(self, queue: str, vhost: str = "/") -> PrivateNode:
        """The node that leads quorum queue ``queue`` (waits while it is being elected)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while True:
            out = self.ctl("list_queues", "-q", "-p", vhost, "name", "leader")
            for line in out.splitlines():
                fields = line.split()
                if len(fields) == 2 and fields[0] == queue:
                    try:
                        node = self.node_named(fields[1])
                    except LookupError:
                        break  # no leader yet ("" or a node being elected)
                    if node.running:
                        return node
            if time.monotonic() > deadline:
                raise AssertionError(f"quorum queue {queue!r} has no leader:\n{out}")
            time.sleep(0.5)


def _join(node: PrivateNode, first: str) -> None:
    try:
        node.ctl("stop_app")
        node.ctl("join_cluster", first)
        node.ctl("start_app")
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(
            f"{node.nodename} could not join {first}: {exc}\n{exc.stdout}\n{exc.stderr}"
        ) from exc


@pytest.fixture(scope="package")
def cluster() -> Iterator[Cluster]:
    """A 3-node cluster for the tests of the package that uses it (``tests/cluster``),
    stopped once they are done whatever happens: three idle nodes (~0.5 GB, some CPU) would
    otherwise share the machine with the rest of the suite.

    Tests may kill nodes; each starts with :meth:`Cluster.heal` (or the ``healthy_cluster``
    fixture of ``tests/cluster``), so a test finds every node up.
    """
    nodes = Cluster()
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.stop()
