"""Structure-aware generators for the fuzzer: hostile *shapes*, not just hostile bytes.

Byte mutation alone rarely builds a value nested 1,000 deep, a key ending in ``²`` or a number
that overflows to infinity, so the raw-byte targets never found them. These generators read their
choices from atheris' ``FuzzedDataProvider`` (so libFuzzer's coverage guidance still steers them)
and build: deep nesting of arrays and objects, text drawn from every Unicode category (digits of
every script, superscripts, fractions, spaces, surrogates, controls), non-finite and huge numbers,
and whole JSON documents, text lines and XML-RPC calls made of those.
"""

from __future__ import annotations

import sys
import unicodedata
from typing import Any

import atheris

#: Unicode general category -> a sample of its code points (at most PER_CATEGORY, spread evenly).
PER_CATEGORY = 64


def _categories() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for code in range(sys.maxunicode + 1):
        found.setdefault(unicodedata.category(chr(code)), []).append(chr(code))
    return {
        name: chars[:: max(1, len(chars) // PER_CATEGORY)][:PER_CATEGORY] + chars[:8]
        for name, chars in sorted(found.items())
    }


CATEGORIES = _categories()
CATEGORY_NAMES = sorted(CATEGORIES)
#: Characters that look like digits to someone: every "number" category, plus ASCII.
DIGITISH = CATEGORIES["Nd"] + CATEGORIES["No"] + CATEGORIES["Nl"] + list("0123456789")
#: Number spellings that exist only in floating point, or overflow, or are not decimal.
SPECIAL_NUMBERS = [
    "NaN", "nan", "-nan", "Infinity", "-Infinity", "inf", "-inf", "+inf", "infinity", "1e999999",
    "-1e999999", "1e309", "1E400", "2e-400", "0x10", "1_000", " 7 ", "+5", "-0", "00", "1.", ".5",
    "1e", "e1", "--1", "\u0663", "\u00b2", "\u00bd", "\u2167", "\uff11", "1\u00b2", "\u0661\u0662",
    "9" * 19, "9" * 20, "9" * 400, "1" + "0" * 4300, "18446744073709551616", "9223372036854775808",
]
SCALAR_KINDS = 9


def text(fdp: atheris.FuzzedDataProvider, most: int = 24) -> str:
    """A short string: ASCII, or characters of one or two Unicode categories, or a digit-like mix."""
    how = fdp.ConsumeIntInRange(0, 4)
    n = fdp.ConsumeIntInRange(0, most)
    if how == 0:
        return fdp.ConsumeUnicodeNoSurrogates(n)
    if how == 1:
        return "".join(fdp.PickValueInList(DIGITISH) for _ in range(n))
    if how == 2:
        return fdp.PickValueInList(SPECIAL_NUMBERS)
    pool = CATEGORIES[fdp.PickValueInList(CATEGORY_NAMES)]
    if how == 4:
        pool = pool + CATEGORIES[fdp.PickValueInList(CATEGORY_NAMES)] + list("0123456789:.-e ")
    return "".join(fdp.PickValueInList(pool) for _ in range(n))


def number(fdp: atheris.FuzzedDataProvider) -> Any:
    """A number as a decoded JSON/XML-RPC value: small, huge (up to Python's 4,300 digits), a
    float, NaN or an infinity."""
    how = fdp.ConsumeIntInRange(0, 5)
    if how == 0:
        return fdp.ConsumeIntInRange(-(2**64), 2**64)
    if how == 1:
        return 10 ** fdp.ConsumeIntInRange(0, 4299) * fdp.PickValueInList([1, -1])
    if how == 2:
        return fdp.ConsumeRegularFloat()
    if how == 3:
        return fdp.PickValueInList([float("nan"), float("inf"), float("-inf"), -0.0, 1e308, 5e-324])
    if how == 4:
        return fdp.ConsumeFloat()
    return fdp.ConsumeBool()


def scalar(fdp: atheris.FuzzedDataProvider) -> Any:
    """A leaf: text, a digit-like string, a number, true/false/null, bytes."""
    how = fdp.ConsumeIntInRange(0, SCALAR_KINDS - 1)
    if how <= 2:
        return text(fdp)
    if how <= 5:
        return number(fdp)
    if how == 6:
        return None
    if how == 7:
        return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16))
    return fdp.PickValueInList(SPECIAL_NUMBERS)


def nested(fdp: atheris.FuzzedDataProvider, depth: int, leaf: Any) -> Any:
    """``leaf`` inside ``depth`` arrays/objects (built without recursion), shapes from ``fdp``."""
    value = leaf
    kinds = fdp.ConsumeIntInRange(0, 255)  # one byte picks the pattern: cheap for 5,000 levels
    key = text(fdp, 4)
    for level in range(depth):
        value = {key: value} if kinds >> (level % 8) & 1 else [value]
    return value


def depth(fdp: atheris.FuzzedDataProvider) -> int:
    """How deep to nest: often near the limit (64), sometimes past the recursion limit (1,000)."""
    how = fdp.ConsumeIntInRange(0, 3)
    if how == 0:
        return fdp.ConsumeIntInRange(0, 8)
    if how == 1:
        return fdp.ConsumeIntInRange(60, 70)
    if how == 2:
        return fdp.ConsumeIntInRange(900, 1100)
    return fdp.ConsumeIntInRange(0, 2500)


def value(fdp: atheris.FuzzedDataProvider) -> Any:
    """Any decoded value: a scalar, a wide container of scalars, or a deep one."""
    how = fdp.ConsumeIntInRange(0, 3)
    if how == 0:
        return scalar(fdp)
    if how == 1:
        return [scalar(fdp) for _ in range(fdp.ConsumeIntInRange(0, 8))]
    if how == 2:
        return {text(fdp, 6): scalar(fdp) for _ in range(fdp.ConsumeIntInRange(0, 8))}
    return nested(fdp, depth(fdp), scalar(fdp))


# -- whole documents ---------------------------------------------------------------------------


def json_number_text(fdp: atheris.FuzzedDataProvider) -> str:
    how = fdp.ConsumeIntInRange(0, 3)
    if how == 0:
        return fdp.PickValueInList(SPECIAL_NUMBERS)
    if how == 1:
        return str(fdp.ConsumeIntInRange(-(10**6), 10**6))
    if how == 2:
        return "1e" + str(fdp.ConsumeIntInRange(-99999, 999999))
    return "".join(fdp.PickValueInList(DIGITISH) for _ in range(fdp.ConsumeIntInRange(1, 6)))


def json_text(fdp: atheris.FuzzedDataProvider) -> str:
    """JSON-ish text: a command object whose fields hold deep brackets, odd numbers and odd keys,
    possibly cut short or unbalanced (the reader must refuse those cleanly)."""
    import json

    from restmq.commands import COMMANDS

    fields = []
    names = list(COMMANDS) + ["nope", ""]
    fields.append(f'"cmd":{json.dumps(fdp.PickValueInList(names))}')
    for _ in range(fdp.ConsumeIntInRange(0, 5)):
        name = fdp.PickValueInList(["queue", "value", "key", "count", "wait", "lease", "priority", "ttl",
                                    "delay", "messages", "receipt", "unique", "state", "policy", "msg"])
        n = depth(fdp)
        opener = "".join(fdp.PickValueInList(["[", '{"k":']) for _ in range(min(n, 6)))
        opener = (opener * (n // max(1, len(opener)) + 1))[: n * 5] if n > 6 else opener
        closer = "".join("]" if c == "[" else "}" for c in reversed(opener.replace('{"k":', "{")))
        if fdp.ConsumeBool():
            leaf = json_number_text(fdp)
        else:
            leaf = json.dumps(text(fdp), ensure_ascii=fdp.ConsumeBool())
        body = opener + leaf + (closer if fdp.ConsumeIntInRange(0, 9) else closer[: len(closer) // 2])
        fields.append(f'"{name}":{body}')
    return "{" + ",".join(fields) + "}"


def text_line(fdp: atheris.FuzzedDataProvider) -> str:
    """A line-protocol text command: a verb, a queue, then words that are parsed as numbers/keys."""
    from restmq.commands import COMMANDS

    verb = fdp.PickValueInList(list(COMMANDS) + ["subscribe", "auth", "ping", "GET", "Del"])
    queue = fdp.PickValueInList(["a", "q.1", "", "\u0661", "a:b"])
    words = []
    for _ in range(fdp.ConsumeIntInRange(0, 4)):
        if fdp.ConsumeBool():
            words.append(queue + ":" + text(fdp, 6))
        else:
            words.append(text(fdp, 8).replace("\n", " "))
    return " ".join([verb, queue, *words])


XML_SCALARS = ["int", "i4", "i8", "i1", "i2", "biginteger", "double", "float", "bigdecimal", "boolean",
               "string", "base64", "dateTime.iso8601", "nil", "value"]


def xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def xmlrpc_call(fdp: atheris.FuzzedDataProvider) -> bytes:
    """An XML-RPC methodCall: a RestMQ method, params that are deep arrays/structs around scalars
    whose text is a hostile number or string."""
    from restmq.commands import COMMANDS

    method = fdp.PickValueInList([f"restmq.{n}" for n in COMMANDS] + ["set", "get", "system.listMethods", "x"])
    params = []
    for _ in range(fdp.ConsumeIntInRange(0, 5)):
        tag = fdp.PickValueInList(XML_SCALARS)
        raw = xml_escape(text(fdp) if fdp.ConsumeBool() else fdp.PickValueInList(SPECIAL_NUMBERS))
        leaf = "<nil/>" if tag == "nil" else (raw if tag == "value" else f"<{tag}>{raw}</{tag}>")
        n = depth(fdp)
        if fdp.ConsumeBool():
            head, tail = "<array><data><value>", "</value></data></array>"
        else:
            head, tail = "<struct><member><name>k</name><value>", "</value></member></struct>"
        params.append(f"<param><value>{head * n}{leaf}{tail * n}</value></param>")
    body = (
        f'<?xml version="1.0"?><methodCall><methodName>{xml_escape(method)}</methodName>'
        f"<params>{''.join(params)}</params></methodCall>"
    )
    return body.encode("utf-8", "surrogatepass")
