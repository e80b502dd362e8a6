"""RabbitMQ administration through ``rabbitmqctl``, for inspecting state and injecting faults.

We shell out to ``rabbitmqctl`` (the management HTTP API is not enabled on the test broker) so
that faults are real broker-side actions, not simulations. Every call starts an Erlang VM and
takes roughly 0.5-1 s: keep calls out of tight loops and prefer the batched helpers.

The functions are synchronous (``subprocess.run``); inside trio tests use the ``*_async``
wrappers, which run them in a worker thread so the event loop (and the client under test, e.g.
its heartbeats) keeps running meanwhile.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple, ParamSpec, TypeVar

import trio

RABBITMQCTL = os.environ.get("TRIOWORKER_RABBITMQCTL", "rabbitmqctl")
#: The node to control (``rabbitmqctl -n``): set by scripts/test-broker.sh when the tests run
#: against a private node because rabbitmqctl cannot reach the broker on 5672.
NODE = os.environ.get("TRIOWORKER_RABBITMQ_NODE") or None
#: The command every call starts with.
CTL = [RABBITMQCTL, *(["-n", NODE] if NODE else [])]
DEFAULT_TIMEOUT = 60.0
# The CLI is an Erlang node: a crash of it writes MnesiaCore.* / erl_crash.dump to its cwd,
# which must not be the checkout.
_CWD = tempfile.gettempdir()

P = ParamSpec("P")
T = TypeVar("T")


class RabbitmqctlError(RuntimeError):
    """``rabbitmqctl`` exited non-zero; carries its output so the failure explains itself."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.args_used = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"{' '.join(args)!s} exited with {returncode}\n"
            f"stdout: {stdout.strip()}\nstderr: {stderr.strip()}"
        )


class QueueStats(NamedTuple):
    """``messages`` is ready + unacknowledged; -1 means the broker did not report a number."""

    messages: int
    consumers: int


@dataclass(frozen=True)
class ConnectionInfo:
    pid: str
    """Erlang pid as ``close_connection`` wants it, e.g. ``<rabbit@host.1795428954.1031.0>``."""
    name: str
    """Broker-side name: ``"127.0.0.1:54528 -> 127.0.0.1:5672"``."""
    user: str = ""
    vhost: str = ""
    peer_port: int | None = None
    state: str = ""
    client_properties: dict[str, Any] = field(default_factory=dict)

    @property
    def connection_name(self) -> str | None:
        """The client-chosen name (client property ``connection_name``), if any."""
        value = self.client_properties.get("connection_name")
        return value if isinstance(value, str) else None


def run(*args: str, timeout: float = DEFAULT_TIMEOUT) -> str:
    """Run ``rabbitmqctl ARGS``; return stdout, raise :class:`RabbitmqctlError` on failure."""
    cmd = [*CTL, *args]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd=_CWD
    )
    if proc.returncode != 0:
        raise RabbitmqctlError(cmd, proc.returncode, proc.stdout, proc.stderr)
    return proc.stdout


def _is_not_found(err: RabbitmqctlError) -> bool:
    text = (err.stderr + err.stdout).lower()
    return "not found" in text or "not_found" in text


def _as_int(value: Any) -> int:
    return value if isinstance(value, int) else -1


def list_queues(vhost: str = "/") -> dict[str, QueueStats]:
    """All queues of ``vhost``: ``{name: QueueStats(messages, consumers)}`` (a plain tuple too).

    The counts come from the queue processes themselves, so they are current, not sampled
    statistics. One rabbitmqctl call (~0.5-1 s).
    """
    out = run("list_queues", "-p", vhost, "name", "messages", "consumers", "--formatter", "json")
    rows: list[dict[str, Any]] = json.loads(out)
    return {
        row["name"]: QueueStats(_as_int(row.get("messages")), _as_int(row.get("consumers")))
        for row in rows
    }


def _properties_to_dict(raw: Any) -> dict[str, Any]:
    # rabbitmqctl's JSON renders an AMQP table as [[key, type, value], ...].
    if isinstance(raw, dict):
        return raw
    result: dict[str, Any] = {}
    for entry in raw or []:
        if isinstance(entry, list) and len(entry) == 3:
            key, kind, value = entry
            result[key] = _properties_to_dict(value) if kind == "table" else value
    return result


def list_connections() -> list[ConnectionInfo]:
    """All client connections to the broker (every vhost).

    The JSON formatter prints pids in an Elixir form that ``close_connection`` rejects, so we
    run two listings concurrently (tab-separated for pid+name, JSON for the rest) and join them
    on the connection's unique broker-side name. ~0.5-1 s wall time.
    """
    cmd_text = [*CTL, "list_connections", "-q", "--no-table-headers", "pid", "name"]
    cmd_json = [
        *CTL, "list_connections", "name", "user", "vhost", "peer_port", "state",
        "client_properties", "--formatter", "json",
    ]  # fmt: skip
    text_out, json_out = _run_concurrently([cmd_text, cmd_json])
    pids: dict[str, str] = {}
    for line in text_out.splitlines():
        if "\t" in line:
            pid, name = line.split("\t", 1)
            pids[name] = pid
    result = []
    for row in json.loads(json_out):
        row_pid = pids.get(row["name"])
        if row_pid is None:  # connection opened between the two listings
            continue
        peer_port = row.get("peer_port")
        result.append(
            ConnectionInfo(
                pid=row_pid,
                name=row["name"],
                user=str(row.get("user", "")),
                vhost=str(row.get("vhost", "")),
                peer_port=peer_port if isinstance(peer_port, int) else None,
                state=str(row.get("state", "")),
                client_properties=_properties_to_dict(row.get("client_properties")),
            )
        )
    return result


def close_connection(pid: str, reason: str = "closed by test") -> None:
    """Close one connection by Erlang pid (see :func:`list_connections`).

    The broker sends Connection.Close(320 CONNECTION_FORCED, reason) and then drops the socket;
    the command returns once that is requested, not once the client has noticed.
    """
    run("close_connection", pid, reason)


def close_connection_by_name(
    connection_name: str, reason: str = "closed by test", *, missing_ok: bool = False
) -> int:
    """Close every connection whose client property ``connection_name`` equals the argument.

    Returns how many were closed. Raises :class:`LookupError` when none matched (unless
    ``missing_ok``): a fault that silently did not happen would make a test pass vacuously.
    """
    matches = [c for c in list_connections() if c.connection_name == connection_name]
    if not matches and not missing_ok:
        known = sorted(repr(c.connection_name) for c in list_connections())
        raise LookupError(f"no connection named {connection_name!r}; open: {', '.join(known)}")
    for conn in matches:
        try:
            close_connection(conn.pid, reason)
        except RabbitmqctlError as err:
            if not _is_not_found(err):
                raise
    return len(matches)


def close_all_connections(reason: str = "closed by test") -> None:
    """Close every client connection on the broker (all vhosts) with CONNECTION_FORCED."""
    run("close_all_connections", reason)


def delete_queue(name: str, vhost: str = "/") -> bool:
    """Delete a queue regardless of consumers/messages. Returns False if it did not exist."""
    try:
        run("delete_queue", "-p", vhost, name)
    except RabbitmqctlError as err:
        if _is_not_found(err):
            return False
        raise
    return True


def delete_queues(names: Iterable[str], vhost: str = "/") -> dict[str, bool]:
    """Delete several queues with concurrent rabbitmqctl processes (teardown stays ~1 s).

    Missing queues are fine (False in the result); any other failure raises after all ran.
    """
    cmds = {name: [*CTL, "delete_queue", "-p", vhost, name] for name in names}
    procs = [
        (
            name,
            cmd,
            subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=_CWD
            ),
        )
        for name, cmd in cmds.items()
    ]
    result: dict[str, bool] = {}
    errors: list[RabbitmqctlError] = []
    for name, cmd, proc in procs:
        stdout, stderr = _communicate(proc)
        if proc.returncode == 0:
            result[name] = True
            continue
        err = RabbitmqctlError(cmd, proc.returncode, stdout, stderr)
        if _is_not_found(err):
            result[name] = False
        else:
            errors.append(err)
    if errors:
        raise errors[0]
    return result


def purge_queue(name: str, vhost: str = "/") -> None:
    """Drop the ready messages of a queue. Raises :class:`RabbitmqctlError` if it is missing."""
    run("purge_queue", "-p", vhost, name)


def _communicate(proc: subprocess.Popen[str]) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=DEFAULT_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


def _run_concurrently(cmds: list[list[str]]) -> list[str]:
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=_CWD)
        for cmd in cmds
    ]
    outputs = []
    for cmd, proc in zip(cmds, procs, strict=True):
        stdout, stderr = _communicate(proc)
        if proc.returncode != 0:
            raise RabbitmqctlError(cmd, proc.returncode, stdout, stderr)
        outputs.append(stdout)
    return outputs


# --- async wrappers: same behaviour, run in a worker thread --------------------------------


def _to_thread(fn: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return await trio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    wrapper.__doc__ = f"Async (worker-thread) version of :func:`{fn.__name__}`."
    return wrapper


list_queues_async = _to_thread(list_queues)
list_connections_async = _to_thread(list_connections)
close_connection_async = _to_thread(close_connection)
close_connection_by_name_async = _to_thread(close_connection_by_name)
close_all_connections_async = _to_thread(close_all_connections)
delete_queue_async = _to_thread(delete_queue)
delete_queues_async = _to_thread(delete_queues)
purge_queue_async = _to_thread(purge_queue)
