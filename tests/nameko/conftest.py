"""Fixtures for the Nameko interop tests: the Nameko venv, a running Nameko service.

Nameko runs for real: ``nameko run peer --config cfg.yaml`` in its own virtualenv (see
``venv.py``), against the suite's broker (``amqp_url``: a private node in CI's container
mode). One Nameko process serves a whole test module; its service name and the name of
our service are unique per module, and every queue and exchange either side declared is
deleted when the module is done.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from tests.nameko.venv import NamekoVenvError, ensure_venv
from trioworker.amqp import AMQPError, NotFoundError, connect

HERE = Path(__file__).resolve().parent
#: Nameko's startup (eventlet, kombu, declaring its queues) on a slow CI machine.
STARTUP_TIMEOUT = 60.0
#: A standalone script's whole run (its proxies time out their calls sooner).
SCRIPT_TIMEOUT = 90.0


@pytest.fixture(scope="session")
def nameko_python() -> Path:
    """The Nameko venv's python, built on first use. A venv that cannot be built fails
    the tests that need it, saying why: interop tests never skip."""
    try:
        return ensure_venv()
    except NamekoVenvError as exc:
        pytest.fail(f"cannot build the Nameko 2.14.1 virtualenv: {exc}", pytrace=False)


@dataclass
class NamekoPeer:
    """A running ``tests/nameko/peer.py`` service: its name, ours, and what to clean."""

    name: str
    our: str
    url: str
    python: Path
    workdir: Path
    queues: list[str] = field(default_factory=list)
    exchanges: list[str] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {**os.environ, "NK_SERVICE": self.name, "OUR_SERVICE": self.our}

    def config(self) -> Path:
        """A Nameko config file pointing at the suite's broker."""
        path = self.workdir / "nameko.yaml"
        path.write_text(f"AMQP_URI: '{self.url}'\n")
        return path

    async def run_script(self, source: str, *args: str) -> str:
        """Run ``source`` with the Nameko venv's python (AMQP_URI in the environment);
        return its stdout, failing with its stderr if it fails."""
        script = self.workdir / f"script_{secrets.token_hex(3)}.py"
        script.write_text(source)
        env = {**self.env(), "AMQP_URI": self.url}
        with trio.fail_after(SCRIPT_TIMEOUT):
            result = await trio.run_process(
                [str(self.python), str(script), *args],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=env,
                cwd=self.workdir,
            )
        if result.returncode != 0:
            raise AssertionError(f"Nameko script failed:\n{result.stderr.decode()[-3000:]}")
        return result.stdout.decode()


async def _wait_consumed(url: str, queues: list[str], within: float) -> None:
    """Wait until each queue exists and has a consumer (Nameko's consumers are up)."""
    with trio.fail_after(within):
        async with connect(url) as conn:
            for queue in queues:
                while True:
                    try:
                        async with conn.channel() as channel:
                            reply = await channel.queue_declare(queue, passive=True)
                        if reply.consumer_count:
                            break
                    except NotFoundError:
                        pass
                    await trio.sleep(0.2)


async def _delete(url: str, queues: list[str], exchanges: list[str]) -> None:
    with trio.move_on_after(20):
        async with connect(url) as conn:
            for name in queues:
                try:
                    async with conn.channel() as channel:
                        await channel.queue_delete(name)
                except AMQPError:
                    pass
            for name in exchanges:
                try:
                    async with conn.channel() as channel:
                        await channel.exchange_delete(name)
                except AMQPError:
                    pass


@pytest.fixture(scope="module")
def nameko_peer(
    nameko_python: Path, amqp_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NamekoPeer]:
    """``nameko run peer`` for this module, up once its RPC and event queues are consumed."""
    token = secrets.token_hex(3)
    peer = NamekoPeer(
        name=f"nk{token}",
        our=f"tw{token}",
        url=amqp_url,
        python=nameko_python,
        workdir=tmp_path_factory.mktemp("nameko"),
    )
    log_path = peer.workdir / "nameko.log"
    own_queues = [
        f"rpc-{peer.name}",
        f"evt-{peer.our}-hello--{peer.name}.on_hello",
        f"evt-{peer.our}-pong--{peer.name}.on_pong",
    ]
    peer.queues += [*own_queues, f"rpc-{peer.our}"]
    peer.exchanges += [f"{peer.name}.events", f"{peer.our}.events"]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            [str(nameko_python), "-m", "nameko", "run", "peer", "--config", str(peer.config())],
            cwd=HERE,
            env=peer.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            trio.run(_wait_consumed, amqp_url, own_queues, STARTUP_TIMEOUT)
        except trio.TooSlowError:
            process.kill()
            process.wait()
            pytest.fail(
                f"Nameko did not start within {STARTUP_TIMEOUT} s:\n{log_path.read_text()[-3000:]}",
                pytrace=False,
            )
        if process.poll() is not None:
            pytest.fail(f"Nameko exited:\n{log_path.read_text()[-3000:]}", pytrace=False)
        yield peer
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        trio.run(_delete, amqp_url, peer.queues, peer.exchanges)
