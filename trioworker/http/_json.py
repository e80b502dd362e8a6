"""Request bodies parsed as JSON, strictly: whatever the client sends, a 400 or a value.

Python's ``json`` is more lenient than JSON (RFC 8259) and fails in ways that are not
``JSONDecodeError``; each of those would otherwise be a 500 with a traceback per request,
which a client could trigger at will. So this module draws the line explicitly:

- **Encoding.** JSON exchanged between systems must be UTF-8 (RFC 8259 §8.1). A leading
  UTF-8 BOM is ignored (the RFC lets parsers do so); UTF-16 and UTF-32, which
  ``json.loads(bytes)`` would silently accept, and invalid UTF-8 are refused, naming what
  was found.
- **NaN, Infinity, -Infinity** are not JSON (RFC 8259 §6) and cannot round-trip through a
  standard parser; they are refused. So is a number too large for a float (``1e400``),
  which Python would read as infinity.
- **Integers** of more than :data:`MAX_INT_DIGITS` digits are refused here, whatever
  ``sys.set_int_max_str_digits`` says: converting a huge digit string is quadratic.
- **Nesting** deeper than the interpreter's recursion limit (``RecursionError``) is refused.
"""

from __future__ import annotations

import json
import math
from typing import Any, NoReturn

from ._errors import BadRequest

__all__ = ["MAX_INT_DIGITS", "parse_json"]

#: Longest integer accepted in a JSON body: Python's default ``int`` conversion limit.
MAX_INT_DIGITS = 4300

_PREFIX = "malformed JSON body"
# json.detect_encoding looks at the first bytes the way RFC 4627 §3 described; anything it
# does not call UTF-8 is a body sent in another encoding.
_UTF8 = frozenset({"utf-8", "utf-8-sig"})


class _Refused(ValueError):
    """Raised from the decoder's hooks; carries the client-facing reason."""


def _refuse_constant(name: str) -> NoReturn:
    raise _Refused(f"{name} is not valid JSON")


def _parse_int(digits: str) -> int:
    # The sign is part of the string the scanner hands over.
    if len(digits) - digits.startswith("-") > MAX_INT_DIGITS:
        raise _Refused(f"an integer has more than {MAX_INT_DIGITS} digits")
    return int(digits)


def _parse_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _Refused(f"the number {text[:20]}{'...' if len(text) > 20 else ''} is too large")
    return value


_DECODER = json.JSONDecoder(
    parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant
)


def _text_of(raw: bytes) -> str:
    encoding = json.detect_encoding(raw)
    if encoding not in _UTF8:
        raise BadRequest(f"{_PREFIX}: JSON must be UTF-8, this body looks like {encoding}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"{_PREFIX}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None
    return text.removeprefix("\ufeff")


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed as one JSON value; anything else raises :class:`BadRequest` (→ 400).

    The message says what is wrong in a few words (it goes to the client), never a
    traceback: a malformed body is the client's mistake, not the server's.
    """
    text = _text_of(raw)
    if not text.strip():
        raise BadRequest(f"{_PREFIX}: the body is empty")
    try:
        return _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"{_PREFIX}: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
    except _Refused as exc:
        raise BadRequest(f"{_PREFIX}: {exc}") from None
    except RecursionError:
        raise BadRequest(f"{_PREFIX}: nested too deeply") from None
    except ValueError as exc:
        # Python's own limits (e.g. int conversion) the hooks above did not foresee.
        raise BadRequest(f"{_PREFIX}: {exc}") from None
