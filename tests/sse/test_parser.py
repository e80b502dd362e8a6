"""The sans-IO event-stream parser: WHATWG interpretation rules on byte fixtures, limits,
sticky errors, and properties (chunking never matters; random bytes only ever raise
SSEProtocolError; generated streams round-trip)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trioworker.sse import Event, EventParser, SSEProtocolError


def parse(data: bytes, **options: int | str) -> list[Event]:
    parser = EventParser(**options)  # type: ignore[arg-type]
    parser.feed(data)
    return drain(parser)


def drain(parser: EventParser) -> list[Event]:
    events = []
    while (event := parser.next_event()) is not None:
        events.append(event)
    return events


def parse_chunks(chunks: list[bytes], **options: int) -> tuple[list[Event], str | None]:
    """Feed chunk by chunk; return the events and the error type's name, if any."""
    parser = EventParser(**options)
    events: list[Event] = []
    for chunk in chunks:
        parser.feed(chunk)
        try:
            while (event := parser.next_event()) is not None:
                events.append(event)
        except SSEProtocolError:
            return events, "SSEProtocolError"
    return events, None


# --------------------------------------------------------------- spec rules


def test_data_lines_are_joined_with_newlines() -> None:
    assert parse(b"data: one\ndata: two\ndata:\n\n") == [Event("one\ntwo\n")]


def test_default_name_is_message_and_event_sets_it() -> None:
    assert parse(b"data: a\n\nevent: add\ndata: b\n\n") == [
        Event("a"),
        Event("b", name="add"),
    ]


def test_event_name_does_not_leak_into_the_next_event() -> None:
    assert parse(b"event: x\ndata: a\n\ndata: b\n\n") == [Event("a", "x"), Event("b")]


def test_id_persists_until_the_server_sets_it_again() -> None:
    events = parse(b"id: 1\ndata: a\n\ndata: b\n\nid: 2\ndata: c\n\nid\ndata: d\n\n")
    assert [e.id for e in events] == ["1", "1", "2", ""]


def test_id_with_nul_is_ignored() -> None:
    events = parse(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert [e.id for e in events] == ["1", "1"]


def test_last_event_id_moves_only_at_a_blank_line() -> None:
    """An id whose event was cut off must not be sent back as Last-Event-ID."""
    parser = EventParser(last_event_id="4")
    parser.feed(b"id: 5\ndata: half of event 5\n")
    assert parser.next_event() is None
    assert parser.last_event_id == "4"
    parser.feed(b"\n")
    assert parser.next_event() == Event("half of event 5", id="5")
    assert parser.last_event_id == "5"


def test_id_only_block_sets_last_event_id_without_an_event() -> None:
    parser = EventParser()
    parser.feed(b"id: 9\n\n")
    assert parser.next_event() is None
    assert parser.last_event_id == "9"


def test_initial_last_event_id_is_carried_by_events() -> None:
    assert parse(b"data: a\n\n", last_event_id="41") == [Event("a", id="41")]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"3000", 3000),
        (b"0", 0),
        (b" 3000", 3000),  # the single leading space is the separator's
        (b"  3000", None),
        (b"30s", None),
        (b"-1", None),
        (b"", None),
        ("\u00b2".encode(), None),  # a Unicode digit, not ASCII
        (b"1" * 5000, 999_999_999_999),  # clamped, not a crash
    ],
)
def test_retry_takes_ascii_digits_only(value: bytes, expected: int | None) -> None:
    sep = b":" if value.startswith(b" ") else b": "
    parser = EventParser()
    parser.feed(b"retry" + sep + value + b"\ndata: x\n\n")
    event = parser.next_event()
    assert event is not None
    assert event.retry == expected
    assert parser.retry == expected


def test_retry_without_data_updates_the_parser_only() -> None:
    parser = EventParser()
    parser.feed(b"retry: 250\n\ndata: x\n\n")
    assert parser.next_event() == Event("x")
    assert parser.retry == 250


def test_comments_are_ignored() -> None:
    assert parse(b": keep-alive\n:\ndata: a\n: inside\n\n") == [Event("a")]


def test_field_without_colon_has_an_empty_value() -> None:
    assert parse(b"data\n\n") == [Event("")]
    assert parse(b"data\ndata\n\n") == [Event("\n")]


def test_only_one_leading_space_is_stripped() -> None:
    assert parse(b"data:  two spaces\n\ndata:none\n\n") == [
        Event(" two spaces"),
        Event("none"),
    ]


def test_colons_in_the_value_are_kept() -> None:
    assert parse(b"data: a: b:c\n\n") == [Event("a: b:c")]


def test_unknown_fields_are_ignored() -> None:
    assert parse(b"foo: bar\nDATA: no\ndata: yes\n\n") == [Event("yes")]


@pytest.mark.parametrize("end", [b"\n", b"\r", b"\r\n"])
def test_line_ends(end: bytes) -> None:
    stream = b"data: a" + end + b"data: b" + end + end + b"data: c" + end + end
    assert parse(stream) == [Event("a\nb"), Event("c")]


def test_mixed_line_ends() -> None:
    assert parse(b"data: a\rdata: b\r\ndata: c\n\r\n") == [Event("a\nb\nc")]


def test_cr_at_the_end_of_a_chunk_and_lf_at_the_start_of_the_next() -> None:
    parser = EventParser()
    parser.feed(b"data: a\r")
    assert parser.next_event() is None
    parser.feed(b"\ndata: b\r")
    assert parser.next_event() is None
    parser.feed(b"\n\r")
    # The CR alone is a blank line: the event is dispatched without waiting for more.
    assert parser.next_event() == Event("a\nb")
    parser.feed(b"\n")  # ... and this LF is the second half of that CRLF, not a new line
    assert parser.next_event() is None
    parser.feed(b"data: c\n\n")
    assert drain(parser) == [Event("c")]


def test_cr_cr_is_two_line_ends() -> None:
    assert parse(b"data: a\r\rdata: b\r\r") == [Event("a"), Event("b")]


def test_bom_at_stream_start_is_dropped() -> None:
    assert parse(b"\xef\xbb\xbfdata: a\n\n") == [Event("a")]


def test_bom_split_across_chunks() -> None:
    assert parse_chunks([b"\xef", b"\xbb", b"\xbfdata: a\n\n"]) == ([Event("a")], None)


def test_bom_later_in_the_stream_is_data() -> None:
    assert parse(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == [Event("a")]
    assert parse(b"data: \xef\xbb\xbfb\n\n") == [Event("\ufeffb")]


def test_only_one_bom_is_dropped() -> None:
    # The second BOM starts a line whose field is "\ufeffdata": unknown, ignored.
    assert parse(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n") == [Event("b")]


def test_blank_line_without_data_dispatches_nothing() -> None:
    assert parse(b"\n\n\nevent: x\n\ndata: a\n\n") == [Event("a")]


def test_incomplete_event_at_the_end_is_not_dispatched() -> None:
    assert parse(b"data: a\n\ndata: b\n") == [Event("a")]
    assert parse(b"data: a\n\ndata: b") == [Event("a")]


def test_non_ascii_utf8_is_decoded() -> None:
    assert parse("data: héllo ✓ 🐍\n\n".encode()) == [Event("héllo ✓ 🐍")]


def test_utf8_sequence_split_across_chunks() -> None:
    raw = "data: ✓\n\n".encode()
    cut = raw.index(b"\xe2") + 1
    assert parse_chunks([raw[:cut], raw[cut:]]) == ([Event("✓")], None)


def test_event_json() -> None:
    assert Event('{"a": [1, 2]}').json() == {"a": [1, 2]}


# ------------------------------------------------------------ errors, limits


def test_invalid_utf8_raises_after_the_good_events() -> None:
    parser = EventParser()
    parser.feed(b"data: ok\n\ndata: \xff\xfe\n\ndata: never\n\n")
    assert parser.next_event() == Event("ok")
    with pytest.raises(SSEProtocolError, match="UTF-8"):
        parser.next_event()


def test_invalid_utf8_in_a_comment_raises_too() -> None:
    with pytest.raises(SSEProtocolError, match="UTF-8"):
        parse(b": \xc3\x28\n")


def test_errors_are_sticky() -> None:
    parser = EventParser()
    parser.feed(b"data: \xff\n")
    with pytest.raises(SSEProtocolError) as first:
        parser.next_event()
    parser.feed(b"data: fine\n\n")
    with pytest.raises(SSEProtocolError) as again:
        parser.next_event()
    assert again.value is first.value


def test_line_at_the_limit_is_fine_one_byte_more_is_not() -> None:
    line = b"data: " + b"x" * 10
    assert parse(line + b"\n\n", max_line_length=len(line)) == [Event("x" * 10)]
    with pytest.raises(SSEProtocolError, match="line"):
        parse(line + b"\n\n", max_line_length=len(line) - 1)


def test_endless_line_raises_before_it_ends() -> None:
    """A server that never sends a newline cannot make us buffer without bound."""
    parser = EventParser(max_line_length=1000)
    parser.feed(b"data: ")
    total = 6
    with pytest.raises(SSEProtocolError, match="without a line end"):
        while True:
            parser.feed(b"y" * 100)
            total += 100
            assert total < 2000, "no error after twice the limit"
            parser.next_event()
    assert parser.buffered <= 1100


def test_event_data_limit() -> None:
    stream = b"data: 12345\n" * 3 + b"\n"
    assert parse(stream, max_event_size=18) == [Event("12345\n12345\n12345")]
    with pytest.raises(SSEProtocolError, match="event data"):
        parse(stream, max_event_size=17)


def test_event_data_limit_resets_per_event() -> None:
    stream = b"data: 12345\n\n" * 10
    assert len(parse(stream, max_event_size=6)) == 10


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EventParser(max_line_length=0)


# ------------------------------------------------------------------ properties

SMALL_LIMITS = {"max_line_length": 64, "max_event_size": 200}

line_end = st.sampled_from([b"\n", b"\r", b"\r\n"])
text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20
)


@st.composite
def stream_bytes(draw: st.DrawFn) -> bytes:
    """Streams mixing valid fields, comments, odd line ends, BOMs and garbage."""
    pieces = [draw(st.sampled_from([b"", b"\xef\xbb\xbf"]))]
    for _ in range(draw(st.integers(0, 15))):
        kind = draw(st.sampled_from(["data", "event", "id", "retry", "comment", "blank", "raw"]))
        if kind == "blank":
            pieces.append(draw(line_end))
        elif kind == "raw":
            pieces.append(draw(st.binary(max_size=30)))
        elif kind == "comment":
            pieces.append(b":" + draw(text).encode() + draw(line_end))
        elif kind == "retry":
            pieces.append(b"retry: " + str(draw(st.integers(0, 10**6))).encode() + draw(line_end))
        else:
            sep = draw(st.sampled_from([b":", b": ", b""]))
            value = draw(text).encode() if sep else b""
            pieces.append(kind.encode() + sep + value + draw(line_end))
    return b"".join(pieces)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    bounds = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(data=stream_bytes(), cuts=st.lists(st.integers(0, 10_000), max_size=20))
def test_chunking_never_changes_the_outcome(data: bytes, cuts: list[int]) -> None:
    whole = parse_chunks([data], **SMALL_LIMITS)
    assert parse_chunks(chunked(data, cuts), **SMALL_LIMITS) == whole
    assert parse_chunks([bytes([b]) for b in data], **SMALL_LIMITS) == whole


@settings(max_examples=400)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 1000), max_size=10))
def test_random_bytes_only_raise_the_parser_error(data: bytes, cuts: list[int]) -> None:
    whole = parse_chunks([data], **SMALL_LIMITS)  # anything but SSEProtocolError propagates
    assert parse_chunks(chunked(data, cuts), **SMALL_LIMITS) == whole


event_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n\0"))


@settings(max_examples=300)
@given(
    events=st.lists(
        st.tuples(
            st.lists(event_text, min_size=1, max_size=4),
            st.one_of(st.none(), event_text.filter(bool)),
            st.one_of(st.none(), event_text),
        ),
        max_size=8,
    ),
    end=line_end,
    bom=st.booleans(),
)
def test_generated_streams_round_trip(
    events: list[tuple[list[str], str | None, str | None]], end: bytes, bom: bool
) -> None:
    out = [b"\xef\xbb\xbf"] if bom else []
    expected = []
    last_id = ""
    for lines, name, event_id in events:
        out.append(b": a comment" + end)
        if name is not None:
            out.append(b"event: " + name.encode() + end)
        if event_id is not None:
            out.append(b"id: " + event_id.encode() + end)
            last_id = event_id
        for line in lines:
            out.append(b"data: " + line.encode() + end)
        out.append(end)
        expected.append(Event("\n".join(lines), name or "message", last_id))
    assert parse(b"".join(out)) == expected
