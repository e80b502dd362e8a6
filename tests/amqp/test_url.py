"""AMQP URL parsing (pure: no broker needed)."""

from __future__ import annotations

import pytest

from trioworker.amqp import ConnectionParameters, URLError, default_url, parse_url


def test_full_url() -> None:
    params = parse_url("amqp://alice:s3cret@rabbit.example:5673/prod")
    assert params == ConnectionParameters(
        host="rabbit.example",
        port=5673,
        username="alice",
        password="s3cret",
        virtual_host="prod",
        tls=False,
    )


def test_user_and_password_are_percent_decoded() -> None:
    params = parse_url("amqp://us%40er%3Aname:p%40ss%3Aw%2Frd%25@host/%2F")
    assert params.username == "us@er:name"
    assert params.password == "p@ss:w/rd%"
    assert params.host == "host"


def test_missing_credentials_default_to_guest() -> None:
    params = parse_url("amqp://host")
    assert (params.username, params.password) == ("guest", "guest")
    assert parse_url("amqp://").host == "127.0.0.1"


@pytest.mark.parametrize(
    ("url", "vhost"),
    [
        ("amqp://host/%2F", "/"),
        ("amqp://host/%2f", "/"),
        ("amqp://host", "/"),
        ("amqp://host/", "/"),
        ("amqp://host/prod", "prod"),
        ("amqp://host/%2Fprod", "/prod"),
        ("amqp://host/a%20b", "a b"),
    ],
)
def test_vhost(url: str, vhost: str) -> None:
    assert parse_url(url).virtual_host == vhost


def test_unencoded_slash_in_vhost_is_refused() -> None:
    with pytest.raises(URLError, match="percent-encoded"):
        parse_url("amqp://host/a/b")


@pytest.mark.parametrize(
    ("url", "port", "tls"),
    [
        ("amqp://host", 5672, False),
        ("amqp://host/%2F", 5672, False),
        ("amqps://host", 5671, True),
        ("amqps://host/%2F", 5671, True),
        ("amqps://host:6000/%2F", 6000, True),
        ("amqp://host:1", 1, False),
    ],
)
def test_default_ports(url: str, port: int, tls: bool) -> None:
    params = parse_url(url)
    assert (params.port, params.tls) == (port, tls)


def test_defaults_without_options() -> None:
    params = parse_url("amqp://host/%2F")
    assert params.heartbeat is None  # accept the broker's proposal
    assert params.frame_max == 131072
    assert params.channel_max == 2047
    assert params.connection_name is None
    assert params.connection_timeout == 10.0


def test_query_options() -> None:
    params = parse_url(
        "amqp://host/%2F?heartbeat=5&frame_max=8192&channel_max=10"
        "&connection_name=worker%201&connection_timeout=2.5"
    )
    assert params.heartbeat == 5
    assert params.frame_max == 8192
    assert params.channel_max == 10
    assert params.connection_name == "worker 1"
    assert params.connection_timeout == 2.5


def test_heartbeat_zero_is_kept() -> None:
    assert parse_url("amqp://host?heartbeat=0").heartbeat == 0


def test_unknown_option() -> None:
    with pytest.raises(URLError, match="unknown option 'hearbeat'"):
        parse_url("amqp://host/%2F?hearbeat=5")


@pytest.mark.parametrize(
    "query",
    [
        "heartbeat=abc",
        "heartbeat=-1",
        "frame_max=1.5",
        "channel_max=",
        "connection_timeout=0",
        "connection_timeout=-3",
        "connection_timeout=soon",
    ],
)
def test_bad_option_values(query: str) -> None:
    with pytest.raises(URLError, match="invalid"):
        parse_url(f"amqp://host/%2F?{query}")


@pytest.mark.parametrize(
    "url",
    [
        "http://guest:guest@host/%2F",
        "amqpx://host",
        "guest:guest@host:5672",
        "host:5672",
        "",
    ],
)
def test_bad_scheme(url: str) -> None:
    with pytest.raises(URLError, match="amqp:// or amqps://"):
        parse_url(url)


@pytest.mark.parametrize("url", ["amqp://host:99999/", "amqp://host:port/"])
def test_bad_port(url: str) -> None:
    with pytest.raises(URLError):
        parse_url(url)


def test_url_error_is_a_value_error() -> None:
    assert issubclass(URLError, ValueError)


def test_safe_url_hides_the_password() -> None:
    params = parse_url("amqps://alice:topsecret@host/%2F")
    assert "topsecret" not in params.safe_url()
    assert "topsecret" not in repr(params)
    assert params.safe_url() == "amqps://alice@host:5671/%2F"


def test_default_url_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRIOWORKER_AMQP_URL", raising=False)
    assert default_url() == "amqp://guest:guest@127.0.0.1:5672/%2F"
    monkeypatch.setenv("TRIOWORKER_AMQP_URL", "amqp://other/%2F")
    assert default_url() == "amqp://other/%2F"


def test_default_url_is_the_first_of_a_comma_separated_list(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``$TRIOWORKER_AMQP_URL`` may list a cluster's nodes (the framework fails over across
    them); ``connect()`` without a URL goes to the first, and a comma in a password is not
    a separator."""
    from trioworker.amqp import default_url, default_urls

    first = "amqp://u:p,w@node1:5672/"
    monkeypatch.setenv("TRIOWORKER_AMQP_URL", f"{first}, amqp://u:p,w@node2:5672/")
    assert default_urls() == [first, "amqp://u:p,w@node2:5672/"]
    assert default_url() == first
    monkeypatch.delenv("TRIOWORKER_AMQP_URL")
    assert default_url() == "amqp://guest:guest@127.0.0.1:5672/%2F"
