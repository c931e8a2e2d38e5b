"""collectd's formats (the original's ``/collectd/data`` and ``/collectd/event``, docs/syslog-collectd.md),
parsed into plain JSON records, one per value list or notification. Pure: no Twisted, no I/O.

What collectd sends, and what each becomes:

- **Values**, as the plain-text protocol of the exec and unixsock plugins (also write_http's
  ``Format "Command"``), one command per line::

      PUTVAL "host/cpu-0/cpu-idle" interval=10 1426585572:2.5
      PUTVAL host/interface-eth0/if_octets interval=10.000 N:123:456 1426585582:124:457

  The identifier is ``host/plugin[-plugin_instance]/type[-type_instance]``; options are
  ``interval=SECONDS`` and ``meta:KEY="string"``; every other field is a value list
  ``TIME:V1[:V2…]`` (``N`` is now; ``U`` is an undefined value, JSON null) and becomes one record
  ``{"host", "plugin", "plugin_instance", "type", "type_instance", "time", "interval", "values"}``
  (+ ``"meta"``). ``interval`` is null when not given (collectd then uses its own interval).
- **Values** as write_http's ``Format "JSON"``: an array of ``{"values", "dstypes", "dsnames",
  "time", "interval", "host", "plugin", "plugin_instance", "type", "type_instance"[, "meta"]}``;
  each item becomes the same record, keeping ``dsnames``/``dstypes``.
- **Notifications** as ``PUTNOTIF severity=failure time=1426585572 message="…" [host=… plugin=…
  plugin_instance=… type=… type_instance=… s:KEY=VALUE]`` lines, as the exec plugin's
  ``NotificationExec`` text (``Severity: FAILURE`` headers, a blank line, the message), or as
  write_http JSON: the Alertmanager array collectd ≥ 5.6 posts (``labels``, ``annotations``,
  ``startsAt``) or flat objects with the PUTNOTIF fields. Each becomes ``{"severity" (failure,
  warning or okay), "time", "message", "host", "plugin", "plugin_instance", "type",
  "type_instance"}`` (+ ``"meta"``; the Alertmanager form adds ``"alertname"`` and ``"labels"``).

A body is JSON when it starts with ``[`` or ``{`` (curl's ``-d`` sends a form Content-Type, so the
Content-Type is not trusted), else text. Anything malformed raises ``bad_request`` naming the line
and what is wrong, and nothing of the body is kept: a sender fixes and resends the whole body.

That is the ``records`` form (``?form=records``). The default, ``original``, is what the original
RestMQ stored, ONE text message per POST, for consumers written for it (:func:`original_data`,
:func:`original_event`): a JSON body (labelled so, or starting with ``[`` or ``{``) verbatim;
PUTVAL lines as the JSON text of a list of ``{"host", "plugin_instance", "type_instance",
"interval", "value"}`` strings (the identifier's three parts as written, ``interval=``'s text or
null, one ``TIME:V1[:V2…]`` value list; a line with several value lists gives one item each;
``meta:`` options have no place there and are dropped); a NotificationExec text as the list of its
headers ``{"<name in lower case>": "<value>"}`` followed by ``{"event_text": "<the message>"}``.
PUTNOTIF lines, which the original could not read, need ``?form=records``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

from restmq import values
from restmq.errors import BadRequest

#: Queues the records go to.
DATA_QUEUE = "collectd_data"
EVENT_QUEUE = "collectd_event"
#: collectd's DATA_MAX_NAME_LEN: no part of an identifier is longer.
MAX_NAME = 128
SEVERITIES = ("failure", "warning", "okay")

_OPTION = re.compile(r"([A-Za-z0-9_:]+)=")
Field = tuple[str | None, str]  # (option key or None for a bare field, text)


# -- the plain-text protocol's fields -----------------------------------------------------------


def _string(text: str, i: int, where: str) -> tuple[str, int]:
    """One field from ``text[i]`` (not blank): a ``"quoted string"`` with backslash escapes, or
    everything up to the next blank. Answers the text and the index after it."""
    if text[i] != '"':
        end = i
        while end < len(text) and not text[end].isspace():
            end += 1
        return text[i:end], end
    out: list[str] = []
    j = i + 1
    while j < len(text) and text[j] != '"':
        if text[j] == "\\":
            j += 1
            if j == len(text):
                break
        out.append(text[j])
        j += 1
    if j >= len(text):
        raise BadRequest(f"{where}: unterminated quoted string")
    j += 1
    if j < len(text) and not text[j].isspace():
        raise BadRequest(f"{where}: a quoted string must be followed by a blank")
    return "".join(out), j


def fields(text: str, where: str) -> list[Field]:
    """A command line's fields after its verb: ``key=value`` options (value quoted when it holds
    blanks; an empty one must be written ``""``) and bare fields, as collectd's parser reads them."""
    out: list[Field] = []
    i = 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i == len(text):
            return out
        key = None
        option = _OPTION.match(text, i)
        if option:
            key, i = option.group(1), option.end()
            if i == len(text) or text[i].isspace():
                raise BadRequest(f'{where}: option {key} has no value (write {key}="" for an empty one)')
        value, i = _string(text, i, where)
        out.append((key, value))


def _verb(line: str, where: str) -> tuple[str, str]:
    verb, *rest = line.split(None, 1)
    return verb.upper(), rest[0] if rest else ""


def _lines(body: str) -> list[tuple[str, str]]:
    """``(where, line)`` for each line that says something (blank and ``#`` lines are skipped)."""
    out = []
    for n, line in enumerate(body.splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            out.append((f"line {n}", stripped))
    return out


def _number(text: str, what: str, where: str, *, positive: bool = False) -> float:
    value = values.parse_float(text)
    if value is None:
        raise BadRequest(f"{where}: {what} must be a number, not {text[:40]!r}")
    if value < 0 or (positive and value == 0):
        raise BadRequest(f"{where}: {what} must be a {'positive' if positive else 'non-negative'} number")
    return value


def _name(text: str, what: str, where: str, *, empty: bool = False) -> str:
    if not text and not empty:
        raise BadRequest(f"{where}: {what} is empty")
    if len(text) > MAX_NAME:
        raise BadRequest(f"{where}: {what} is longer than {MAX_NAME} characters")
    return text


def identifier(text: str, where: str) -> dict[str, str]:
    """``host/plugin[-plugin_instance]/type[-type_instance]`` as its five parts."""
    parts = text.split("/")
    if len(parts) != 3:
        raise BadRequest(f"{where}: identifier {text[:200]!r} is not host/plugin[-instance]/type[-instance]")
    host, plugin, type_ = parts
    plugin, _, plugin_instance = plugin.partition("-")
    type_, _, type_instance = type_.partition("-")
    return {
        "host": _name(host, "host", where),
        "plugin": _name(plugin, "plugin", where),
        "plugin_instance": _name(plugin_instance, "plugin instance", where, empty=True),
        "type": _name(type_, "type", where),
        "type_instance": _name(type_instance, "type instance", where, empty=True),
    }


def _value(text: str, where: str) -> int | float | None:
    if text in ("U", "u", "nan", "NaN"):
        return None
    number = values.parse_int(text)
    if number is not None:
        return number
    value = values.parse_float(text)
    if value is None:
        if values.is_non_finite(text):
            raise BadRequest(f"{where}: value {text[:40]!r} is not finite")
        raise BadRequest(f"{where}: value {text[:40]!r} is not a number or U")
    return value


def value_list(text: str, where: str, now: float) -> tuple[float, list[int | float | None]]:
    """``TIME:V1[:V2…]`` as (time, values); ``N`` is ``now``."""
    stamp, *values = text.split(":")
    if not values:
        raise BadRequest(f"{where}: value list {text[:60]!r} is not TIME:VALUE[:VALUE…]")
    time = now if stamp in ("N", "n") else _number(stamp, "time", where)
    return time, [_value(v, where) for v in values]


def putval(rest: str, where: str, now: float) -> list[dict[str, Any]]:
    """One ``PUTVAL`` line (after the verb): a record per value list."""
    rest = rest.strip()
    if not rest:
        raise BadRequest(f"{where}: PUTVAL needs an identifier and a value list")
    ident, i = _string(rest, 0, where)
    base: dict[str, Any] = identifier(ident, where)
    interval: float | None = None
    meta: dict[str, str] = {}
    lists: list[tuple[float, list[int | float | None]]] = []
    for key, text in fields(rest[i:], where):
        if key is None:
            lists.append(value_list(text, where, now))
        elif key.lower() == "interval":
            interval = _number(text, "interval", where, positive=True)
        elif key.lower().startswith("meta:") and len(key) > 5:
            meta[key[5:]] = text
        else:
            raise BadRequest(f"{where}: unknown PUTVAL option {key!r} (interval= and meta:KEY= are known)")
    if not lists:
        raise BadRequest(f"{where}: PUTVAL without a value list (TIME:VALUE[:VALUE…])")
    records = []
    for time, numbers in lists:
        record = {**base, "time": time, "interval": interval, "values": numbers}
        if meta:
            record["meta"] = dict(meta)
        records.append(record)
    return records


NOTIFICATION_FIELDS = ("host", "plugin", "plugin_instance", "type", "type_instance")


def _severity(text: Any, where: str) -> str:
    severity = text.lower() if isinstance(text, str) else None
    if severity not in SEVERITIES:
        raise BadRequest(f"{where}: severity must be failure, warning or okay, not {str(text)[:40]!r}")
    return severity


def notification(options: dict[str, Any], meta: dict[str, Any], where: str) -> dict[str, Any]:
    """A notification record from its named fields; severity, time and message are required."""
    for required in ("severity", "time", "message"):
        if options.get(required) in (None, ""):
            raise BadRequest(f"{where}: notification without {required}")
    time = options["time"]
    if isinstance(time, str):
        time = _number(time, "time", where)
    elif not (_is_number(time) and time >= 0):
        raise BadRequest(f"{where}: time must be a non-negative number")
    message = options["message"]
    if not isinstance(message, str):
        raise BadRequest(f"{where}: message must be text")
    record: dict[str, Any] = {
        "severity": _severity(options["severity"], where),
        "time": time,
        "message": message,
    }
    for name in NOTIFICATION_FIELDS:
        value = options.get(name, "")
        if not isinstance(value, str):
            raise BadRequest(f"{where}: {name} must be text")
        record[name] = _name(value, name, where, empty=True)
    if meta:
        record["meta"] = meta
    return record


def putnotif(rest: str, where: str) -> dict[str, Any]:
    """One ``PUTNOTIF`` line (after the verb): every field is an option."""
    options: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, text in fields(rest, where):
        if key is None:
            raise BadRequest(f"{where}: PUTNOTIF takes only key=value options, not {text[:40]!r}")
        name = key.lower()
        if name in ("severity", "time", "message", *NOTIFICATION_FIELDS):
            options[name] = text
        elif len(key) > 2 and key[1] == ":" and key[0] in "sS":
            meta[key[2:]] = text
        else:
            raise BadRequest(f"{where}: unknown PUTNOTIF option {key!r}")
    return notification(options, meta, where)


# -- the exec plugin's NotificationExec text ------------------------------------------------------

_HEADER = re.compile(r"([A-Za-z][A-Za-z0-9_]*):[ \t]*(.*)\Z")
#: NotificationExec header -> record field; other headers go to ``meta``.
_HEADERS = {
    "severity": "severity", "time": "time", "host": "host", "plugin": "plugin",
    "plugininstance": "plugin_instance", "type": "type", "typeinstance": "type_instance",
}


def exec_notification(body: str) -> dict[str, Any]:
    """``Severity: FAILURE`` / ``Time: …`` headers, a blank line, then the message."""
    head, _, message = body.replace("\r\n", "\n").partition("\n\n")
    options: dict[str, Any] = {"message": message.strip()}
    meta: dict[str, Any] = {}
    for n, line in enumerate(head.split("\n"), 1):
        found = _HEADER.match(line.strip())
        if not found:
            raise BadRequest(f"line {n}: expected a 'Name: value' header, not {line[:60]!r}")
        name, value = found.group(1), found.group(2).strip()
        field = _HEADERS.get(name.lower())
        if field is None:
            meta[name] = value
        else:
            options[field] = value
    return notification(options, meta, "notification")


# -- JSON (write_http) ------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    """A finite JSON number (not a bool, not 1e400's infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_items(body: str) -> list[Any]:
    data = values.loads(body, "body")
    items = data if isinstance(data, list) else [data]
    if not items:
        raise BadRequest("the JSON array is empty")
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"item {n}: must be a JSON object")
    return items


def _strings(item: dict[str, Any], name: str, where: str, count: int) -> list[str] | None:
    value = item.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or len(value) != count or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{where}: {name} must be a list of {count} strings, one per value")
    return value


def json_values(item: dict[str, Any], where: str) -> dict[str, Any]:
    """One write_http JSON value list as a record."""
    values = item.get("values")
    if not isinstance(values, list) or not values:
        raise BadRequest(f"{where}: values must be a non-empty list")
    if not all(v is None or _is_number(v) for v in values):
        raise BadRequest(f"{where}: values must be finite numbers or null")
    record: dict[str, Any] = {}
    for name in ("host", "plugin", "plugin_instance", "type", "type_instance"):
        text = item.get(name, "")
        if not isinstance(text, str):
            raise BadRequest(f"{where}: {name} must be text")
        record[name] = _name(text, name, where, empty=name.endswith("instance"))
    time, interval = item.get("time"), item.get("interval")
    for name, number in (("time", time), ("interval", interval)):
        if number is not None and not (_is_number(number) and number >= 0):
            raise BadRequest(f"{where}: {name} must be a non-negative number")
    if time is None:
        raise BadRequest(f"{where}: time is missing")
    record.update(time=time, interval=interval, values=values)
    for name in ("dsnames", "dstypes"):
        listed = _strings(item, name, where, len(values))
        if listed is not None:
            record[name] = listed
    meta = item.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            raise BadRequest(f"{where}: meta must be an object")
        record["meta"] = meta
    return record


def _rfc3339(text: Any, where: str) -> float:
    if not isinstance(text, str):
        raise BadRequest(f"{where}: startsAt must be an RFC 3339 time")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise BadRequest(f"{where}: startsAt {text[:40]!r} is not an RFC 3339 time") from None


def json_event(item: dict[str, Any], where: str) -> dict[str, Any]:
    """One notification object: collectd's Alertmanager form, or a flat PUTNOTIF-like object."""
    if "labels" not in item:
        meta = item.get("meta") or {}
        if not isinstance(meta, dict):
            raise BadRequest(f"{where}: meta must be an object")
        known = {k: v for k, v in item.items() if k != "meta"}
        return notification(known, meta, where)
    labels, annotations = item.get("labels"), item.get("annotations") or {}
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        raise BadRequest(f"{where}: labels and annotations must be objects")
    rest = {k: v for k, v in labels.items() if k not in ("severity", "instance", "alertname")}
    options = {
        "severity": labels.get("severity"),
        "time": _rfc3339(item.get("startsAt"), where),
        "message": annotations.get("summary"),
        "host": labels.get("instance", ""),
    }
    meta = {k: v for k, v in annotations.items() if k != "summary"}
    record = notification(options, meta, where)
    record["alertname"] = labels.get("alertname")
    record["labels"] = rest
    return record


# -- bodies -------------------------------------------------------------------------------------------


def _text(body: bytes | str) -> str:
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest("body is not UTF-8 text") from None
    if not body.strip():
        raise BadRequest("empty body: send PUTVAL/PUTNOTIF lines or collectd's JSON")
    return body


def _parse(
    body: bytes | str,
    verb: str,
    line: Callable[[str, str], list[dict[str, Any]]],
    item: Callable[[dict[str, Any], str], dict[str, Any]],
    other: str,
) -> list[dict[str, Any]]:
    text = _text(body)
    if text.lstrip().startswith(("[", "{")):
        return [item(obj, f"item {n}") for n, obj in enumerate(_json_items(text))]
    records: list[dict[str, Any]] = []
    for where, command in _lines(text):
        found, rest = _verb(command, where)
        if found != verb:
            hint = f" ({found} goes to {other})" if found in ("PUTVAL", "PUTNOTIF") else ""
            raise BadRequest(f"{where}: expected {verb}, not {found[:20]!r}{hint}")
        records.extend(line(rest, where))
    if not records:
        raise BadRequest(f"no {verb} line in the body")
    return records


def parse_data(body: bytes | str, now: float) -> list[dict[str, Any]]:
    """Value records from a ``/collectd/data`` body (PUTVAL lines or write_http JSON)."""
    return _parse(body, "PUTVAL", lambda rest, where: putval(rest, where, now), json_values,
                  "/collectd/event")


def parse_event(body: bytes | str, now: float) -> list[dict[str, Any]]:
    """Notification records from a ``/collectd/event`` body (PUTNOTIF lines, NotificationExec
    text or write_http JSON). ``now`` is unused: notifications must carry their time."""
    text = _text(body)
    first = text.lstrip().split("\n", 1)[0]
    if _HEADER.match(first.strip()) and not first.upper().startswith("PUTNOTIF"):
        return [exec_notification(text.lstrip())]
    return _parse(text, "PUTNOTIF", lambda rest, where: [putnotif(rest, where)], json_event,
                  "/collectd/data")


# -- the original RestMQ's form: one text message per POST ---------------------------------------------

#: ``?form=`` values: the original's one message per POST (the default), or one per record.
FORMS = ("original", "records")


def _verbatim_json(text: str, labelled_json: bool) -> str | None:
    """A JSON body as it came (checked to be JSON), or None when the body is text: JSON is what is
    labelled so, or starts with ``[`` or ``{``."""
    if not (labelled_json or text.lstrip().startswith(("[", "{"))):
        return None
    values.loads(text, "body")  # bad_request when it is not JSON, too deep or not finite
    return text


def original_putval(rest: str, where: str, now: float) -> list[dict[str, str | None]]:
    """One PUTVAL line (after the verb) as the original's items, one per value list (checked as
    :func:`putval` checks them, kept as written)."""
    rest = rest.strip()
    if not rest:
        raise BadRequest(f"{where}: PUTVAL needs an identifier and a value list")
    ident, i = _string(rest, 0, where)
    identifier(ident, where)
    host, plugin, type_ = ident.split("/")
    interval: str | None = None
    lists: list[str] = []
    for key, text in fields(rest[i:], where):
        if key is None:
            value_list(text, where, now)
            lists.append(text)
        elif key.lower() == "interval":
            _number(text, "interval", where, positive=True)
            interval = text
        elif not (key.lower().startswith("meta:") and len(key) > 5):
            raise BadRequest(f"{where}: unknown PUTVAL option {key!r} (interval= and meta:KEY= are known)")
    if not lists:
        raise BadRequest(f"{where}: PUTVAL without a value list (TIME:VALUE[:VALUE…])")
    return [
        {"host": host, "plugin_instance": plugin, "type_instance": type_, "interval": interval, "value": text}
        for text in lists
    ]


def original_data(body: bytes | str, now: float, labelled_json: bool = False) -> str:
    """The original's message for a ``/collectd/data`` body (see the module docstring);
    ``labelled_json``: its Content-Type says JSON."""
    text = _text(body)
    verbatim = _verbatim_json(text, labelled_json)
    if verbatim is not None:
        return verbatim
    items: list[dict[str, str | None]] = []
    for where, command in _lines(text):
        found, rest = _verb(command, where)
        if found != "PUTVAL":
            raise BadRequest(f"{where}: expected PUTVAL, not {found[:20]!r}")
        items.extend(original_putval(rest, where, now))
    if not items:
        raise BadRequest("no PUTVAL line in the body")
    return json.dumps(items)


def original_event(body: bytes | str, now: float, labelled_json: bool = False) -> str:
    """The original's message for a ``/collectd/event`` body: a JSON body verbatim, else the
    headers and the message of a NotificationExec text (without a blank line, the last line is
    the message, as the original read it). ``now`` is unused."""
    text = _text(body)
    verbatim = _verbatim_json(text, labelled_json)
    if verbatim is not None:
        return verbatim
    lines = text.strip().replace("\r\n", "\n").split("\n")
    if lines[0].upper().startswith("PUTNOTIF"):
        raise BadRequest(
            "PUTNOTIF lines are read with ?form=records; this form takes a NotificationExec text or JSON"
        )
    if "" in (line.strip() for line in lines):
        blank = [line.strip() for line in lines].index("")
        head, message = lines[:blank], "\n".join(lines[blank + 1:]).strip()
    else:
        head, message = lines[:-1], lines[-1].strip()
    items: list[dict[str, str]] = []
    for n, line in enumerate(head, 1):
        found = _HEADER.match(line.strip())
        if not found:
            raise BadRequest(f"line {n}: expected a 'Name: value' header, not {line[:60]!r}")
        items.append({found.group(1).lower(): found.group(2).strip()})
    items.append({"event_text": message})
    return json.dumps(items)
