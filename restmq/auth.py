"""Tokens with rights (SPEC §8): the ``--auth-file`` format and the dispatcher's authorization.

One line per token: ``TOKEN RIGHTS PATTERN [PATTERN…]``. RIGHTS is a comma list of ``read``,
``write`` and ``admin`` (admin includes read and write); PATTERNs are shell-style queue globs
(``jobs.*``, ``*``); ``#`` starts a comment. Pure: no Twisted, no Redis.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restmq.errors import BadRequest, Forbidden, Unauthorized

RIGHTS = ("read", "write", "admin")


@dataclass(frozen=True)
class Grant:
    """What one token may do: its rights and the queues (globs) it may do them on."""

    rights: frozenset[str]
    patterns: tuple[str, ...]

    def allows(self, right: str) -> bool:
        return right in self.rights or "admin" in self.rights

    def covers(self, queue: str) -> bool:
        return any(fnmatch.fnmatchcase(queue, pattern) for pattern in self.patterns)


def parse_tokens(text: str, source: str = "auth file") -> dict[str, Grant]:
    """Read a tokens file's text; a bad line is a ``bad_request`` naming the line."""
    grants: dict[str, Grant] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if len(words) < 3:
            raise BadRequest(f"{source} line {number}: expected TOKEN RIGHTS PATTERN [PATTERN…]")
        token, rights_text, patterns = words[0], words[1], tuple(words[2:])
        rights = frozenset(r.strip() for r in rights_text.split(",") if r.strip())
        unknown = rights - set(RIGHTS)
        if not rights or unknown:
            raise BadRequest(
                f"{source} line {number}: rights must be a comma list of {', '.join(RIGHTS)}, "
                f"not {rights_text!r}"
            )
        if token in grants:
            raise BadRequest(f"{source} line {number}: token listed twice")
        grants[token] = Grant(rights, patterns)
    return grants


class Tokens:
    """The tokens of an ``--auth-file``, reloadable (SIGHUP) without a restart."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.grants = self._read()

    def _read(self) -> dict[str, Grant]:
        try:
            text = Path(self.path).read_text("utf-8")
        except OSError as e:
            raise BadRequest(f"cannot read auth file {self.path}: {e.strerror}") from None
        return parse_tokens(text, self.path)

    def reload(self) -> int:
        """Read the file again; on a bad file the old tokens stay (and the error is raised)."""
        self.grants = self._read()
        return len(self.grants)

    def authorize(self, principal: Any, right: str, queue: str | None) -> None:
        """Raise ``unauthorized`` without a known token, ``forbidden`` outside its rights or queues.
        Server-wide commands (no queue) need only the right."""
        if not principal:
            raise Unauthorized("a token is required: send Authorization: Bearer TOKEN")
        grant = self.grants.get(principal)
        if grant is None:
            raise Unauthorized("unknown token")
        if not grant.allows(right):
            raise Forbidden(f"this token may not {right}")
        if queue is not None and not grant.covers(queue):
            raise Forbidden(f"this token may not use queue {queue!r}")


def token_from_authorization(header: str | bytes | None) -> str | None:
    """The token of an ``Authorization`` header: ``Bearer TOKEN``, or HTTP Basic with the token as
    the password (for XML-RPC clients that only know user:password URLs)."""
    if not header:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip() or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None
