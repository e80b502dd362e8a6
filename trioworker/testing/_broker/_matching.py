"""How topic and headers exchanges match, exactly as RabbitMQ 3.10 does.

Topic: routing and binding keys are split at ``.`` into words — the empty key has *no*
words (not one empty word: RabbitMQ's ``split_topic_key(<<>>)`` is ``[]``), ``"a."`` has
two (``a`` and the empty word). In a binding key ``*`` stands for exactly one word and
``#`` for zero or more. Matching runs over the set of positions in the routing key the
pattern so far can end at, so ``#`` costs no backtracking.

Headers: the binding's ``x-match`` says ``all`` (the default) or ``any`` of its other
arguments must be present in the message's headers with an equal value — a value of type
void matches on presence alone, and values of different type classes never match (every
integer width is one class). Arguments beginning with ``x-`` take no part, except with
3.10's ``all-with-x`` / ``any-with-x``. An ``any`` binding with nothing to match matches
nothing; an ``all`` one matches everything.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._equivalence import type_class
from ._errors import precondition_failed

__all__ = ["check_x_match", "headers_match", "split_words", "topic_matches"]

X_MATCH_VALUES = ("all", "any", "all-with-x", "any-with-x")


def split_words(key: str) -> tuple[str, ...]:
    """A topic key's words (RabbitMQ's ``split_topic_key``)."""
    return () if key == "" else tuple(key.split("."))


def topic_matches(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    """Whether binding key ``pattern`` matches routing key ``words`` (both split)."""
    count = len(words)
    positions = {0}
    for part in pattern:
        if part == "#":
            positions = set(range(min(positions), count + 1))
        elif part == "*":
            positions = {i + 1 for i in positions if i < count}
        else:
            positions = {i + 1 for i in positions if i < count and words[i] == part}
        if not positions:
            return False
    return count in positions


def check_x_match(arguments: Mapping[str, Any]) -> None:
    """406 for a headers binding whose ``x-match`` is not one RabbitMQ knows."""
    value = arguments.get("x-match", "all")
    if value not in X_MATCH_VALUES:
        raise precondition_failed(
            f"Invalid x-match field value {value!r}; expected all, any, all-with-x, or any-with-x"
        )


def headers_match(arguments: Mapping[str, Any], headers: Mapping[str, Any] | None) -> bool:
    """Whether a headers binding with ``arguments`` takes a message with ``headers``."""
    mode = arguments.get("x-match", "all")
    with_x = mode.endswith("-with-x")
    want_all = mode.startswith("all")
    data = headers or {}
    matched_any = False
    for key, expected in arguments.items():
        if key == "x-match" or (not with_x and key.startswith("x-")):
            continue
        if key in data and (
            expected is None
            or (type_class(expected) == type_class(data[key]) and expected == data[key])
        ):
            matched_any = True
            if not want_all:
                return True
        elif want_all:
            return False
    return want_all or matched_any
