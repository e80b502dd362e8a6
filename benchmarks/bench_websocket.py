"""WebSocket echo benchmark (``websocket-echo``): an ``@app.http.websocket`` route vs raw hypercorn.

Run from the trioworker virtualenv:
    python benchmarks/bench_websocket.py trioworker|hypercorn QUEUE COUNT [--clients 100]
        [--size 64] [--warmup-messages 1000] [--compression none|deflate]
Prints one JSON line (see ``_common.Result``). QUEUE is the driver's and stays unused: no
broker is involved.

The server runs in its own process, started by this one and stopped by closing its stdin:

- ``trioworker``: an :class:`trioworker.App` (no AMQP route, so it never dials the broker)
  with ``@app.http.websocket("/echo")`` whose handler sends back every message it receives
  (``async for data in socket: await socket.send(data)``), served by ``open_app`` on
  ``127.0.0.1``, port 0 (``python bench_websocket.py serve``);
- ``hypercorn``: the same hypercorn serving a raw ASGI echo app (``websocket_peer.py``).

This process is the load: the ``websockets`` library's asyncio client (asyncio is fine in
a benchmark's client, never in the runtime; it is C-accelerated where it matters and costs
less CPU per message than either server). Every message is the same ``--size``-byte text
frame; each client has one message in flight: it sends, awaits the echo, checks it, sends
the next. No compression unless ``--compression deflate`` (the client then offers
permessage-deflate, as browsers do). Two phases, each after ``--warmup-messages`` echoes
on its own connections (not measured):

1. one client sends COUNT messages; ``one_*`` figures, and ``p50_ms``/``p99_ms``;
2. ``--clients`` clients (connected before the clock starts) share COUNT messages;
   ``conc_*`` figures, and the driver's own ``seconds``, ``msg_per_s`` (messages/s) and
   ``cpu_us_per_msg`` (this client process's CPU per message).

Per phase: messages/s (from the first send to the last echo), p50/p99 round trip, and the
CPU per message of the server process (``utime + stime`` of ``/proc/PID/stat`` before and
after the phase: 10 ms ticks, so ~1 % over a phase of 20,000 messages) and of the client
process. ``server_rss_mib`` is the server's RSS with the ``--clients`` sockets open.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any

from _common import Result, cpu, now, parse_args, rss_mb

HERE = Path(__file__).resolve().parent
SERVERS = {  # the server process of each system
    "trioworker": [sys.executable, str(HERE / "bench_websocket.py"), "serve"],
    "hypercorn": [sys.executable, str(HERE / "websocket_peer.py")],
}
PATH = "/echo"
#: The server's start (interpreter, imports) on a busy machine.
STARTUP_TIMEOUT = 60.0
#: An echo that does not come back within this fails the run (lost, not slow).
ECHO_TIMEOUT = 60.0
TICKS = os.sysconf("SC_CLK_TCK")


# --- the trioworker server (its own process: ``python bench_websocket.py serve``) ---


def serve_trioworker() -> None:
    import trio
    from websocket_peer import announce, stdin_closed

    from trioworker import App, WebSocket, open_app

    app = App(name="bench-websocket", http_host="127.0.0.1", http_port=0)

    @app.http.websocket(PATH)
    async def echo(socket: WebSocket) -> None:
        async for data in socket:
            await socket.send(data)

    async def main() -> None:
        async with open_app(app):
            announce(app.http.url)
            await stdin_closed()

    trio.run(main)


# --- the load (this process) ---


class Server:
    """The server process: started, read from ``/proc``, stopped by closing its stdin."""

    def __init__(self, system: str, log: IO[bytes]) -> None:
        self.log = log  # the server's stderr, shown when it fails
        self.proc = subprocess.Popen(
            SERVERS[system], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log
        )
        self.url = ""

    def report(self, what: str) -> str:
        """``what`` went wrong, with the end of the server's stderr."""
        self.log.seek(0)
        return f"{what}; server stderr:\n{self.log.read().decode()[-3000:]}"

    async def started(self) -> str:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), STARTUP_TIMEOUT)
        if not line:
            raise RuntimeError(self.report(f"the server exited ({self.proc.wait()}) early"))
        self.url = json.loads(line)["url"].replace("http://", "ws://", 1) + PATH
        return self.url

    def cpu(self) -> float:
        """CPU seconds the server process has used (all its threads)."""
        with open(f"/proc/{self.proc.pid}/stat", encoding="ascii") as f:
            fields = f.read().rpartition(")")[2].split()  # after the command name
        return (int(fields[11]) + int(fields[12])) / TICKS

    def rss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        raise RuntimeError("VmRSS not found")

    def stop(self) -> str | None:
        """Close stdin (the server stops gracefully) and wait for it, killing it if it
        hangs: None if it exited with status 0, else what went wrong and its stderr."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return self.report("the server did not stop within 30 s")
        return None if code == 0 else self.report(f"the server exited with status {code}")


def percentile(values: list[float], q: float) -> float:
    """The ``q``-quantile (0..1) of ``values``, nearest rank (as bench_rpc.py)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def shares(total: int, clients: int) -> list[int]:
    """``total`` messages split over ``clients`` as evenly as whole messages allow."""
    base, extra = divmod(total, clients)
    return [base + (1 if i < extra else 0) for i in range(clients)]


async def echoes(ws: Any, n: int, payload: str, latencies: list[float] | None) -> None:
    """``n`` round trips, one in flight; each echo must be the message sent."""
    for _ in range(n):
        t0 = now()
        async with asyncio.timeout(ECHO_TIMEOUT):  # a timer handle, not a task per call
            await ws.send(payload)
            echo = await ws.recv()
        if latencies is not None:
            latencies.append(now() - t0)
        if echo != payload:
            raise RuntimeError(f"wrong echo: {echo!r:.80}")


async def phase(name: str, server: Server, clients: int, count: int, args: Any) -> dict[str, Any]:
    """Connect ``clients``, warm up, then ``count`` messages shared by them, timed."""
    from websockets.asyncio.client import connect

    compression = None if args.compression == "none" else "deflate"
    payload = "x" * args.size
    sockets = [
        await connect(server.url, compression=compression, ping_interval=None, max_size=None)
        for _ in range(clients)
    ]
    try:
        async with asyncio.TaskGroup() as tasks:
            for ws, n in zip(sockets, shares(args.warmup_messages, clients), strict=True):
                tasks.create_task(echoes(ws, n, payload, None))
        per_client: list[list[float]] = [[] for _ in sockets]
        server_cpu, client_cpu = server.cpu(), cpu()
        started = now()
        async with asyncio.TaskGroup() as tasks:
            for ws, n, lat in zip(sockets, shares(count, clients), per_client, strict=True):
                tasks.create_task(echoes(ws, n, payload, lat))
        seconds = now() - started
        server_cpu, client_cpu = server.cpu() - server_cpu, cpu() - client_cpu
        rss = server.rss_mib()
    finally:
        for ws in sockets:
            await ws.close()
    latencies = [x for lat in per_client for x in lat]
    return {
        f"{name}_clients": clients,
        f"{name}_seconds": round(seconds, 4),
        f"{name}_msg_per_s": round(count / seconds, 1),
        f"{name}_p50_ms": round(statistics.median(latencies) * 1000, 3),
        f"{name}_p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        f"{name}_server_cpu_us": round(server_cpu / count * 1e6, 1),
        f"{name}_client_cpu_us": round(client_cpu / count * 1e6, 1),
        f"{name}_server_rss_mib": round(rss, 1),
        f"{name}_client_cpu_seconds": client_cpu,
    }


async def run(args: Any) -> Result:
    with tempfile.TemporaryFile() as log:
        server = Server(args.mode, log)
        try:
            await server.started()
            rss_start = rss_mb()
            one = await phase("one", server, 1, args.count, args)
            conc = await phase("conc", server, args.clients, args.count, args)
        except BaseException as exc:
            # The load's error first (a closed connection, a wrong echo); the server's
            # fate and stderr as a note: they often say why.
            exc.add_note(server.stop() or "the server stopped cleanly")
            raise
        failed = server.stop()
        if failed:
            raise RuntimeError(failed)
    figures = {**one, **conc}
    client_cpu = figures.pop("conc_client_cpu_seconds")
    del figures["one_client_cpu_seconds"]
    note = (
        f"1 client {one['one_msg_per_s']:,.0f} msg/s; "
        f"{args.clients} clients p50 {conc['conc_p50_ms']:.2f} ms, "
        f"p99 {conc['conc_p99_ms']:.2f} ms; server CPU {one['one_server_cpu_us']:.0f} / "
        f"{conc['conc_server_cpu_us']:.0f} us/msg (1 / {args.clients} clients)"
    )
    return Result(
        system=args.mode,
        version=version("trioworker" if args.mode == "trioworker" else "hypercorn"),
        scenario="websocket-echo",
        messages=args.count,
        seconds=conc["conc_seconds"],
        rss_start_mb=rss_start,
        rss_end_mb=rss_mb(),
        cpu_seconds=client_cpu,
        extra={
            **figures,
            "p50_ms": one["one_p50_ms"],
            "p99_ms": one["one_p99_ms"],
            "callers": args.clients,
            "size": args.size,
            "compression": args.compression,
            "hypercorn": version("hypercorn"),
            "websockets": version("websockets"),
            "note": note,
        },
    )


def main() -> None:
    if sys.argv[1:2] == ["serve"]:
        serve_trioworker()
        return

    def configure(parser: Any) -> None:
        parser.add_argument("--clients", type=int, default=100, help="phase 2's clients")
        parser.add_argument("--size", type=int, default=64, help="bytes per text message")
        parser.add_argument(
            "--warmup-messages", type=int, default=1000, help="echoes before each phase"
        )
        parser.add_argument("--compression", choices=("none", "deflate"), default="none")

    args = parse_args(__doc__.split("\n\n")[0], tuple(SERVERS), configure)
    if args.clients < 1 or args.size < 1 or args.warmup_messages < 0:
        raise SystemExit("--clients and --size must be positive, --warmup-messages >= 0")
    asyncio.run(run(args)).emit()


if __name__ == "__main__":
    main()
