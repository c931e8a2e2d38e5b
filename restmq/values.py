"""What a client may send as data: how deep a value nests, which numbers exist, and the one JSON reader.

Every front end reads JSON text and numbers from strangers. The rules are written here once:

- A value nests at most :data:`MAX_DEPTH` levels of arrays and objects. Deeper is ``bad_request``,
  checked without recursion (:func:`check`), so no hostile value can reach a ``RecursionError`` in
  the encoders, the error messages or the engine. A JSON document read from the wire
  (:func:`loads`) may add :data:`FRAME_DEPTH` levels of framing around its values (the command
  object, ``add_many``'s list, one message object).
- Numbers are finite (RFC 8259 has no NaN or Infinity; ``1e999999`` would overflow to infinity)
  and, where text is read as a number, spelt in ASCII digits: Python's ``int()`` and ``float()``
  would also take ``٣``, ``1_000`` and ``infinity``, and ``str.isdigit()`` accepts ``²``, which
  ``int()`` then refuses.

Pure: no Twisted, no I/O.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection
from itertools import accumulate
from typing import Any

from restmq.errors import BadRequest

#: Most levels of arrays and objects one message value (or any argument) may nest.
MAX_DEPTH = 64
#: Levels a JSON document from the wire may add around its values (command, list, message).
FRAME_DEPTH = 3
MAX_DOCUMENT_DEPTH = MAX_DEPTH + FRAME_DEPTH
#: Why NaN and infinities are refused, for error messages.
NON_FINITE = "numbers must be finite (JSON has no NaN or Infinity, RFC 8259)"

_INT = re.compile(r"[+-]?[0-9]+\Z")
_UNSIGNED = re.compile(r"[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")
#: Python refuses to read longer integers from text (``sys.get_int_max_str_digits``).
_MOST_DIGITS = 4300
_SCALARS = (str, int, float, type(None))
_PLAIN = {str, int, bool, type(None)}
_CONTAINERS = (list, tuple, dict)


def too_deep(what: str) -> BadRequest:
    """The error for a value nested past the limit (the message states the limit)."""
    return BadRequest(f"{what} nests too deep: at most {MAX_DEPTH} levels of arrays and objects")


def non_finite(what: str) -> BadRequest:
    """The error for NaN, Infinity or a number that overflows to infinity."""
    return BadRequest(f"{what} holds a number that is not finite: {NON_FINITE}")


# -- numbers from text --------------------------------------------------------------------------


def _ascii(text: str | bytes) -> str | None:
    if isinstance(text, bytes):
        try:
            return text.decode("ascii")
        except UnicodeDecodeError:
            return None
    return text if text.isascii() else None


def parse_int(text: str | bytes, *, signed: bool = True, digits: int = _MOST_DIGITS) -> int | None:
    """An integer spelt in ASCII decimal digits (an optional sign when ``signed``, at most
    ``digits`` of them, nothing around), else None."""
    found = _ascii(text)
    if found is None or not (_INT if signed else _UNSIGNED).match(found):
        return None
    if len(found.lstrip("+-")) > min(digits, _MOST_DIGITS):
        return None
    return int(found)


def parse_float(text: str | bytes) -> float | None:
    """A finite decimal number in ASCII (``3``, ``-0.5``, ``1e3``), else None: no ``nan``, ``inf``,
    ``1_0``, ``0x1p3`` or other digits, and nothing that overflows (``1e999``)."""
    found = _ascii(text)
    if found is None or len(found) > _MOST_DIGITS or not _FLOAT.match(found):
        return None
    value = float(found)
    return value if math.isfinite(value) else None


def is_non_finite(text: str | bytes) -> bool:
    """Whether ``text`` spells a number that exists only in floating point: ``inf``, ``nan``
    (any case, signed) or a decimal that overflows (``1e999``). For error messages."""
    found = _ascii(text)
    if found is None:
        return False
    if found.lstrip("+-").lower() in ("inf", "infinity", "nan"):
        return True
    return len(found) <= _MOST_DIGITS and bool(_FLOAT.match(found)) and not math.isfinite(float(found))


# -- JSON values --------------------------------------------------------------------------------


def check(value: Any, what: str = "value", limit: int = MAX_DEPTH) -> Any:
    """``value`` itself if it is JSON data (str, int, float, bool, None, lists, string-keyed dicts)
    nesting at most ``limit`` levels, with finite numbers only; else ``bad_request``. Iterative, so
    a hostile depth costs a loop, not the stack."""
    if isinstance(value, (str, int)) or value is None:
        return value  # the common case: text, a number, a flag
    if isinstance(value, float):
        if not math.isfinite(value):
            raise non_finite(what)
        return value
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if not isinstance(item, _CONTAINERS):
            raise BadRequest(f"{what} holds a {type(item).__name__}, which is not JSON")
        if level > limit:
            raise too_deep(what)
        if isinstance(item, dict):
            if not set(map(type, item)) <= {str}:
                raise BadRequest(f"{what} holds an object whose keys are not all strings")
            children: Collection[Any] = item.values()
        else:
            children = item
        if set(map(type, children)) <= _PLAIN:
            continue  # only text, integers, flags and nulls below: nothing to look into
        for child in children:
            if isinstance(child, float):
                if not math.isfinite(child):
                    raise non_finite(what)
            elif not isinstance(child, _SCALARS):
                stack.append((child, level + 1))
    return value


class NotJSON(BadRequest):
    """Text that is not JSON at all (a WebSocket closes with 1007 for it; code ``bad_request``)."""


class _NonFinite(ValueError):
    """Raised inside the JSON reader for ``NaN``, ``Infinity`` and overflowing numbers."""


def _constant(name: str) -> Any:
    raise _NonFinite(name)


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
#: Every byte but the quote and the brackets, deleted to leave JSON's structure.
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'"[]{}'))
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def nests_deeper(text: str | bytes, limit: int) -> bool:
    """Whether the arrays and objects of JSON text nest deeper than ``limit``, read from its
    brackets outside strings before any parsing: escapes, then all but quotes and brackets, then
    what lies between quotes are dropped, and the brackets' running sum is taken. C-speed steps:
    no recursion, no Python loop per character."""
    raw = text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass")
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # fewer openings than the limit cannot nest past it
    structure = _ESCAPE.sub(b"", raw).translate(None, _NOT_STRUCTURE)
    brackets = b"".join(structure.split(b'"')[::2])  # even pieces lie outside strings
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0) > limit


def loads(text: str | bytes, what: str = "body") -> Any:
    """JSON text from a client: ``bad_request`` when it is not JSON, holds a non-finite number or
    nests deeper than its values may (plus :data:`FRAME_DEPTH` levels of framing), measured
    before parsing. The only ``json.loads`` of client input."""
    if nests_deeper(text, MAX_DOCUMENT_DEPTH):
        raise too_deep(what)
    try:
        return json.loads(text, parse_constant=_constant, parse_float=_finite)
    except _NonFinite:
        raise non_finite(what) from None
    except RecursionError:  # only when the stack was already deep: the text was measured
        raise too_deep(what) from None
    except ValueError as e:
        raise NotJSON(f"{what} is not valid JSON: {e}"[:200]) from None


def shown(raw: Any, limit: int = 40) -> str:
    """A client's argument quoted in an error message: short, and without walking into it (a
    nested value's ``repr`` would recurse, a huge one's would be huge)."""
    if isinstance(raw, (list, tuple)):
        return "an array"
    if isinstance(raw, dict):
        return "an object"
    if isinstance(raw, (str, bytes)):
        return repr(raw[: limit + 1])[:limit]
    if isinstance(raw, int) and not isinstance(raw, bool) and raw.bit_length() > 128:
        return "a very long number"
    return repr(raw)[:limit]
