"""examples/service.py (the README's example with a route of every kind) as a real process:
an HTTP request becomes an AMQP message handled by the bulk route, an RPC call is answered,
SSE events from a real server are handled, the timer ticks, /health and /metrics answer, and
SIGTERM stops it with exit code 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from tests.backends.sse._server import running_server
from trioworker.amqp import connect, rpc_client

ROOT = Path(__file__).resolve().parent.parent
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"

pytestmark = pytest.mark.broker


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_for(predicate: object, what: str, within: float = 20.0) -> None:
    assert callable(predicate)
    with trio.move_on_after(within):
        while not await predicate():  # noqa: ASYNC110 - polling another process over HTTP
            await trio.sleep(0.1)
        return
    raise AssertionError(f"timed out waiting for {what}")


async def test_service_example_runs_every_kind_of_route() -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with running_server() as sse, trio.open_nursery() as nursery:
        sse.publish("a", "b", "c")
        process: trio.Process = await nursery.start(
            partial(
                trio.run_process,
                [
                    sys.executable,
                    str(ROOT / "examples" / "service.py"),
                    "--url",
                    AMQP_URL,
                    "--http-port",
                    str(port),
                    "--sse-url",
                    sse.url,
                ],
                env={**os.environ, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                check=False,
            )
        )
        output = bytearray()

        async def read_output() -> None:
            assert process.stdout is not None
            async for chunk in process.stdout:
                output.extend(chunk)

        nursery.start_soon(read_output)
        try:
            async with httpx.AsyncClient(base_url=base, timeout=5) as http:

                async def healthy() -> bool:
                    try:
                        return (await http.get("/health")).status_code == 200
                    except httpx.TransportError:
                        return False

                await wait_for(healthy, "GET /health to answer 200")
                for qty in (1, 2, 0):
                    reply = await http.post("/orders", json={"qty": qty})
                    assert reply.status_code == 200, reply.text
                assert (await http.post("/orders", content=b"{not json")).status_code == 400

                async def settled() -> bool:
                    stats = (await http.get("/stats")).json()
                    return bool(
                        stats["orders"] == 2
                        and stats["rejected"] == 1
                        and stats["events"] == 3
                        and stats["ticks"] >= 2
                    )

                await wait_for(settled, "orders, events and ticks to be handled")
                async with rpc_client(AMQP_URL) as client:
                    with trio.fail_after(10):
                        assert await client.call("service.add", [1, 2, 3]) == {"sum": 6}
                metrics = (await http.get("/metrics")).text
                acked = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith("trioworker_amqp_messages_acked_total{")
                    and 'route="handle_orders"' in line
                ]
                assert acked and float(acked[0].rsplit(" ", 1)[1]) == 2.0, metrics
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(30):
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
        text = output.decode(errors="replace")
        assert code == 0, text
        assert "stopped {'orders': 2, 'rejected': 1, 'events': 3" in text, text
        nursery.cancel_scope.cancel()
    # Nothing handled twice or left behind: the orders queue is empty.
    async with connect(AMQP_URL) as conn, conn.channel() as channel:
        declared = await channel.queue_declare("service.orders", passive=True)
        assert declared.message_count == 0
