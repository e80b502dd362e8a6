"""Read an app's metrics the way Prometheus does: render, then parse the text exposition."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from trioworker import App

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(app: App) -> Samples:
    """Every sample of ``app.metrics.render()`` by (sample name, labels).

    Fails if a series appears twice: Prometheus would reject such a scrape.
    """
    body, content_type = app.metrics.render()
    assert content_type.startswith("text/plain; version=")
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in samples, f"series {key} appears twice"
            samples[key] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The value of one series; fails, listing the series that do exist, if it is missing."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        known = sorted(str(dict(lbl)) for n, lbl in samples if n == name)
        raise AssertionError(f"no series {name}{labels}; {name} has: {known}")
    return samples[key]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}
