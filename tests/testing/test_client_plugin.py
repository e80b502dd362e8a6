"""The pytest plugin, as a user's suite sees it: installed by the entry point, its fixtures,
and ``--trioworker-broker`` sending every ``trioworker_client`` to a real RabbitMQ."""

from __future__ import annotations

import pytest

from trioworker import App, Message
from trioworker.testing import MemoryBroker, TestClient

pytest_plugins = ["pytester"]

INNER = """
from trioworker import App, Message, Queue


async def test_the_client_runs_where_the_option_says(trioworker_client, trioworker_broker_url):
    app = App(name="inner")
    seen = []

    @app.amqp.consume([Queue("tw-plugin-inner-{token}", auto_delete=True)], declare=True)
    async def handle(messages):
        seen.extend(m.json() for m in messages)

    client = await trioworker_client(app)
    assert trioworker_broker_url == {expected!r}
    assert (client.broker is None) == (trioworker_broker_url is not None)
    await client.publish({{"n": 1}}, routing_key="tw-plugin-inner-{token}")
    await client.drain()
    assert seen == [{{"n": 1}}]
"""


def run_inner(pytester: pytest.Pytester, expected: str | None, *args: str) -> None:
    pytester.makepyfile(test_inner=INNER.format(expected=expected, token=pytester.path.name))
    result = pytester.runpytest("-o", "trio_mode=true", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)


def test_the_plugin_runs_clients_on_a_memory_broker_by_default(pytester: pytest.Pytester) -> None:
    run_inner(pytester, None)


@pytest.mark.broker
def test_trioworker_broker_sends_every_client_to_rabbitmq(
    pytester: pytest.Pytester, amqp_url: str
) -> None:
    run_inner(pytester, amqp_url, f"--trioworker-broker={amqp_url}")


async def test_a_failing_app_fails_the_test_that_started_it(
    trioworker_client: object, memory_broker: MemoryBroker
) -> None:
    assert isinstance(memory_broker, MemoryBroker) and memory_broker.connections == 0
    app = App(name="failing")

    @app.on_startup
    async def broken(app: App) -> None:
        raise RuntimeError("no config")

    with pytest.raises(Exception, match="no config"):
        await trioworker_client(app)  # type: ignore[operator]


async def test_the_fixture_s_clients_are_test_clients(trioworker_client: object) -> None:
    app = App(name="plain")

    @app.amqp.consume("plain", declare=True)
    async def handle(messages: list[Message]) -> None:
        pass

    client = await trioworker_client(app)  # type: ignore[operator]
    assert isinstance(client, TestClient) and app.running
