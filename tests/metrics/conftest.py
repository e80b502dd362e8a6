"""The framework suite's fixtures (``broker`` helper connection, ``make_app``), reused."""

from tests.framework.conftest import broker, broker_host_port, make_app

__all__ = ["broker", "broker_host_port", "make_app"]
