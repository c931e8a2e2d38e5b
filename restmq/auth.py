"""Tokens with rights (docs/security.md): the ``--auth-file`` format and the dispatcher's authorization.

One line per token: ``TOKEN RIGHTS PATTERN [PATTERN…]``. RIGHTS is a comma list of ``read``,
``write`` and ``admin`` (admin includes read and write); PATTERNs are shell-style queue globs
(``jobs.*``, ``*``); ``#`` starts a comment. Pure: no Twisted, no Redis.
"""

from __future__ import annotations

import base64
import enum
import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

from restmq.errors import BadRequest, Forbidden, Unauthorized

RIGHTS = ("read", "write", "admin")


@dataclass(frozen=True)
class Caller:
    """Who is calling over HTTP, for the dispatcher's authorization: the token (tokens file) and
    the channel, address and Basic credentials (the original's ACL file, :mod:`restmq.acl`). Other
    front ends pass the token itself."""

    token: str | None
    channel: str = "rest"
    host: str = ""
    #: HTTP Basic ``(user, password)`` (or the WebSocket ``auth=user:password`` cookie), when sent.
    basic: tuple[str, str] | None = None


class Trusted(enum.Enum):
    """The principal of front ends that cannot authenticate and are trusted by where they listen
    (the syslog receiver: a public one needs --insecure even with an auth file)."""

    TRUSTED = "trusted"


TRUSTED = Trusted.TRUSTED

#: Who is calling: an HTTP :class:`~restmq.auth.Caller`, a token (line, RESP, WebSocket after
#: ``auth``), :data:`TRUSTED`, or None (nobody said).
Principal = Union[Caller, str, Trusted, None]

#: ``authorize(principal, right, queue)`` raises ``unauthorized``/``forbidden``; None allows all.
Authorizer = Callable[[Principal, str, Union[str, None]], None]


def no_tokens(token: str) -> None:
    """``auth TOKEN`` on a server without a tokens file (perhaps with an ACL file, which is HTTP's)."""
    raise BadRequest("auth is not enabled on this server: it has no --auth-file")


def combine(*authorizers: Authorizer | None) -> Authorizer | None:
    """One authorizer that asks each given one (None entries skipped); None when none is given."""
    present = [a for a in authorizers if a is not None]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return Combined(tuple(present))


class Combined:
    """Several authorizers (tokens and ACL): a call must pass each."""

    def __init__(self, authorizers: tuple[Authorizer, ...]) -> None:
        self.authorizers = authorizers

    def __call__(self, principal: Principal, right: str, queue: str | None) -> None:
        for each in self.authorizers:
            each(principal, right, queue)

    def permits(self, principal: Principal, right: str, queue: str | None) -> bool:
        return all(permits(each, principal, right, queue) for each in self.authorizers)


def permits(authorize: Authorizer, principal: Principal, right: str, queue: str | None) -> bool:
    """Whether ``authorize`` lets ``principal`` do ``right`` on ``queue``, as a yes or no: how
    listings keep only the queues their caller may read, by the same rule that guards commands.
    An authorizer with a ``permits`` method (the tokens file, several combined) answers without
    raising, which is three times cheaper per hidden queue; any other callable is asked, and its
    ``unauthorized``/``forbidden`` is a no."""
    ask = getattr(authorize, "permits", None)
    if ask is not None:
        return bool(ask(principal, right, queue))
    try:
        authorize(principal, right, queue)
    except (Unauthorized, Forbidden):
        return False
    return True


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

    def check(self, token: str) -> None:
        """``auth TOKEN``: ``unauthorized`` unless the token is known (its rights are judged per command)."""
        if token not in self.grants:
            raise Unauthorized("unknown token")

    def permits(self, principal: Principal, right: str, queue: str | None) -> bool:
        """The rule: a known token with the right and, for a queue, a pattern covering it.
        Server-wide commands (no queue) need only the right."""
        grant = self.grants.get(_token(principal) or "")
        return grant is not None and grant.allows(right) and (queue is None or grant.covers(queue))

    def authorize(self, principal: Principal, right: str, queue: str | None) -> None:
        """Raise ``unauthorized`` without a known token, ``forbidden`` outside its rights or queues
        (:meth:`permits` decides; this says why)."""
        if self.permits(principal, right, queue):
            return
        principal = _token(principal)
        if not principal:
            raise Unauthorized("a token is required: send Authorization: Bearer TOKEN")
        grant = self.grants.get(principal)
        if grant is None:
            raise Unauthorized("unknown token")
        if not grant.allows(right):
            raise Forbidden(f"this token may not {right}")
        raise Forbidden(f"this token may not use queue {queue!r}")

    __call__ = authorize


def _token(principal: Principal) -> str | None:
    """The token of a principal: a :class:`Caller`'s, or the principal itself (other front ends)."""
    if isinstance(principal, Caller):
        return principal.token
    return principal if isinstance(principal, str) else None


def basic_credentials(header: str | bytes | None) -> tuple[str, str] | None:
    """``(user, password)`` of an HTTP Basic ``Authorization`` header, else None."""
    if not header:
        return None
    if isinstance(header, bytes):
        header = header.decode("latin-1")
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except ValueError:  # not base64 (binascii.Error), not ASCII, or not UTF-8 inside
        return None
    return split_credentials(decoded)


def split_credentials(text: str) -> tuple[str, str] | None:
    """``user:password`` as ``(user, password)``; None without a colon."""
    user, colon, password = text.partition(":")
    return (user, password) if colon else None


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
        basic = basic_credentials(header)
        return (basic[1] or None) if basic else None
    return None
