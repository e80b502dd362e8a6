"""A connection's URL list, without the cluster: parsing, the environment, order or shuffle,
rounds with backoff, and which node logs, ``/health`` and metrics report.

The units run without a broker; the few that connect use the suite's broker as the one
live node of a "cluster" whose other nodes are ports nothing listens on.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import pytest

from tests.conftest import broker_address
from tests.metrics._scrape import scrape, value
from tests.support.private_node import free_port
from trioworker import App, StartupError, open_app
from trioworker.amqp import URLError, split_urls
from trioworker.backends.amqp._failover import STABLE_AFTER, Failover, node_label

from ._helpers import wait_for

A = "amqp://guest:guest@10.0.0.1:5672/%2F"
B = "amqp://guest:guest@10.0.0.2:5673/%2F"
C = "amqps://guest:guest@node-c.example/prod"
SECRET = "s3cr:et"
BAD = f"amqp://guest:{SECRET}@10.0.0.9:notaport/%2F"


# ------------------------------------------------------------------ parsing


def test_the_env_var_takes_comma_separated_urls_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIOWORKER_AMQP_URL", f" {A} ,{B},  {C}, ")
    app = App()
    assert app.amqp.urls == (A, B, C)
    assert app.amqp.url == A
    assert not app.amqp.shuffle


def test_a_list_and_a_comma_separated_string_are_the_same() -> None:
    assert App(amqp_url=[A, B, C]).amqp.urls == App(amqp_url=f"{A},{B},{C}").amqp.urls


def test_a_comma_in_a_password_does_not_cut_the_url() -> None:
    with_comma = "amqp://guest:pa,ss@10.0.0.1:5672/%2F"
    assert split_urls(f"{with_comma},{B}") == [with_comma, B]
    assert App(amqp_url=with_comma).amqp.urls == (with_comma,)


def test_a_bad_url_in_the_list_fails_at_construction_naming_which(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(URLError) as caught:
        App(amqp_url=[A, BAD, C])
    message = str(caught.value)
    assert message.startswith("amqp_url: URL 2 of 3 is invalid:"), message
    assert "10.0.0.9" in message and "guest:***@" in message
    assert SECRET not in message and "s3cr" not in message
    assert caught.value.__context__ is None and caught.value.__cause__ is None

    monkeypatch.setenv("TRIOWORKER_AMQP_URL", f"{A},{B},{BAD}")
    with pytest.raises(URLError, match=r"^\$TRIOWORKER_AMQP_URL: URL 3 of 3 is invalid") as env:
        App()
    assert "s3cr" not in str(env.value)


def test_named_connections_take_lists_and_are_checked_the_same_way() -> None:
    app = App(amqp_url=A)
    app.amqp.add_connection("audit", [B, C], shuffle=True)
    app.amqp.add_connection("audit", [B, C], shuffle=True)  # the same again: fine
    with pytest.raises(ValueError, match="already defined"):
        app.amqp.add_connection("audit", [C, B])
    with pytest.raises(URLError, match=r"^connection 'other': URL 2 of 2 is invalid") as bad:
        app.amqp.add_connection("other", [A, BAD])
    assert "s3cr" not in str(bad.value)

    @app.amqp.consume("q", connection="audit", vhost="billing")
    async def handle(messages: list[object]) -> None: ...

    (sup,) = [s for s in app.amqp.supervisors if s.key == ("audit", "billing")]
    # Every node of the list, on the route's vhost, in a shuffled order.
    assert sorted(sup.failover.urls) == sorted(
        [B.replace("/%2F", "/billing"), C.replace("/prod", "/billing")]
    )
    assert sup.nodes == tuple(node_label(url) for url in sup.failover.urls)
    # Consumers and publishers start on the same node and go round in the same order.
    assert sup.publishing.failover.urls == sup.failover.urls


@pytest.mark.parametrize(
    ("urls", "error", "match"),
    [
        ([], ValueError, "no AMQP URL given"),
        ([A, A], ValueError, r"'amqp://guest:\*\*\*@10.0.0.1:5672/%2F' is listed twice"),
        ([A, 42], TypeError, "AMQP URLs must be str, got int"),
    ],
)
def test_a_list_must_hold_distinct_urls(urls: list[object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        App(amqp_url=urls)  # type: ignore[arg-type]


def test_shuffle_comes_from_the_argument_or_the_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRIOWORKER_AMQP_SHUFFLE", "1")
    assert App(amqp_url=[A, B]).amqp.shuffle
    assert not App(amqp_url=[A, B], amqp_shuffle=False).amqp.shuffle
    monkeypatch.setenv("TRIOWORKER_AMQP_SHUFFLE", "off")
    assert not App(amqp_url=[A, B]).amqp.shuffle
    monkeypatch.setenv("TRIOWORKER_AMQP_SHUFFLE", "sometimes")
    with pytest.raises(ValueError, match=r"\$TRIOWORKER_AMQP_SHUFFLE must be 1 or 0"):
        App(amqp_url=[A, B])


def test_node_labels_are_host_and_port_without_credentials() -> None:
    assert node_label(A) == "10.0.0.1:5672"
    assert node_label(C) == "node-c.example:5671"
    assert node_label("amqp://u:p@[::1]:5673/%2F") == "[::1]:5673"


# ------------------------------------------------------------- the walk


def attempts(failover: Failover, count: int, now: float = 0.0) -> list[tuple[str, float]]:
    """The node tried and the wait after its failure, for ``count`` failed attempts."""
    seen = []
    for _ in range(count):
        url = failover.url
        seen.append((url, failover.failed(now)))
    return seen


def test_nodes_are_tried_in_order_with_backoff_only_between_full_rounds() -> None:
    failover = Failover([A, B, C])
    walk = attempts(failover, 9)
    assert [url for url, _ in walk] == [A, B, C] * 3
    delays = [delay for _, delay in walk]
    assert delays[0:2] == delays[3:5] == delays[6:8] == [0.0, 0.0]  # within a round: at once
    # After each full round: 0.1 s doubling, times a jitter in [0.5, 1).
    for round_, delay in enumerate(delays[2::3]):
        assert 0.1 * 2**round_ * 0.5 <= delay < 0.1 * 2**round_, (round_, delay)


def test_a_loss_moves_on_to_the_next_node_at_once() -> None:
    failover = Failover([A, B, C])
    failover.opened(0.0)
    assert failover.failed(STABLE_AFTER + 60) == 0.0  # A died after a long life
    assert failover.url == B
    failover.opened(100.0)
    assert failover.failed(200.0) == 0.0
    assert failover.url == C


def test_the_backoff_starts_over_only_after_a_connection_that_lasted() -> None:
    single = Failover([A])
    for _ in range(4):  # refused four times: the waits grow
        last = single.failed(0.0)
    assert last >= 0.4
    single.opened(10.0)  # then a connection that dies at once: no fresh start
    assert single.failed(10.5) >= 0.8
    single.opened(20.0)  # one that lived: back to the first step
    assert single.failed(20.0 + STABLE_AFTER) < 0.1


def test_shuffle_draws_one_order_per_connection_spreading_them_over_the_nodes() -> None:
    orders = [Failover([A, B, C], shuffle=True, rng=random.Random(seed)).urls for seed in range(30)]
    assert all(sorted(order) == sorted([A, B, C]) for order in orders)
    assert {order[0] for order in orders} == {A, B, C}, "some node never comes first"
    failover = Failover([A, B, C], shuffle=True, rng=random.Random(7))
    order = failover.urls
    assert [url for url, _ in attempts(failover, 6)] == [*order, *order]  # kept, round after round


# -------------------------------------------- against the suite's broker


def live_and_dead(amqp_url: str) -> tuple[str, str, str]:
    """A dead node's URL (nothing listens on its port), and the live broker's label."""
    host, port = broker_address(amqp_url)
    dead = amqp_url.replace(f"{host}:{port}", f"127.0.0.1:{free_port()}", 1)
    return amqp_url, dead, f"{host}:{port}"


@pytest.mark.broker
async def test_an_unreachable_node_is_skipped_and_the_node_in_use_is_reported(
    amqp_url: str, make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    live, dead, label = live_and_dead(amqp_url)
    caplog.set_level(logging.INFO, "trioworker.amqp")
    app = make_app(amqp_url=[dead, live])
    app.amqp.enable()
    async with open_app(app):
        await wait_for(lambda: app.amqp.health().ok, "healthy")
        assert app.amqp.health().detail == f"connection 'default' on {label}"
        await app.amqp.publish(b"x", routing_key="tw-test-nobody")  # the publishing side too
        samples = scrape(app)
        for connection in ("default", "default:publish"):
            on = {"connection": connection, "node": label}
            off = {"connection": connection, "node": node_label(dead)}
            assert value(samples, "trioworker_amqp_connected_node", **on) == 1
            assert value(samples, "trioworker_amqp_connected_node", **off) == 0
    text = caplog.text
    assert f"to node {node_label(dead)} lost or refused" in text
    assert f"failing over to node {label} now" in text
    assert f"AMQP connection 'default' open on node {label}" in text
    assert "guest:guest" not in text


@pytest.mark.broker
async def test_when_every_node_is_down_the_app_starts_and_backs_off_between_rounds(
    make_app: Callable[..., App], caplog: pytest.LogCaptureFixture
) -> None:
    dead = [f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F" for _ in range(2)]
    app = make_app(amqp_url=dead)
    app.amqp.enable()

    def consumer_lines(text: str) -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.getMessage().startswith("AMQP connection 'default'") and text in r.getMessage()
        ]

    async with open_app(app):  # unreachable is no startup error: it may be starting
        await wait_for(lambda: len(consumer_lines("every node failed")) >= 2, "two rounds")
        health = app.amqp.health()
        assert not health.ok
        tried = ", ".join(node_label(url) for url in dead)
        assert f"connection 'default' is down (every node tried: {tried})" in health.detail
    # Node 1 fails over to node 2 at once; node 2's failure ends the round: a backoff.
    assert consumer_lines("failing over to node")[0].startswith(
        f"AMQP connection 'default' to node {node_label(dead[0])} lost or refused"
    )
    rounds = consumer_lines("every node failed")
    assert all(f"to node {node_label(dead[1])} lost" in line for line in rounds)
    assert all(f"to node {node_label(dead[0])}" in line.split(";")[-1] for line in rounds)


@pytest.mark.broker
async def test_credentials_refused_by_a_reachable_node_are_a_startup_error(
    amqp_url: str, make_app: Callable[..., App]
) -> None:
    live, dead, _ = live_and_dead(amqp_url)
    wrong = live.replace("guest:guest@", f"guest:{SECRET.replace(':', '%3A')}@", 1)
    app = make_app(amqp_url=[dead, wrong, live])

    @app.amqp.consume("tw-test-never")
    async def handle(messages: list[object]) -> None: ...

    with pytest.raises(StartupError, match="refused the credentials of user 'guest'") as caught:
        async with open_app(app):
            pass
    assert "s3cr" not in str(caught.value)
