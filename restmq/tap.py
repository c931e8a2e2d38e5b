"""Command-line options and ``makeService``: shared by ``twistd restmq``, ``restmq serve`` and the tac.

One option parser for every way of starting RestMQ, so the three cannot drift apart. The original
RestMQ daemon's options (``--port``, ``--listen``, ``--redis-host`` …) are accepted as aliases.
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from restmq import __version__
from restmq.commands import POLICIES
from restmq.config import Config, is_loopback
from restmq.values import parse_float, parse_int

DEFAULTS = Config()
MAX_MESSAGE_CEILING = 64 << 20


def _choice(name: str, choices: tuple[str, ...]) -> Any:
    def coerce(value: str) -> str:
        if value not in choices:
            raise ValueError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
        return value

    coerce.coerceDoc = f"One of {', '.join(choices)}."  # type: ignore[attr-defined]
    return coerce


def number_of(kind: type, value: str) -> Any:
    """An option's number in ASCII decimal (``int``: digits only), finite; else ValueError."""
    number = parse_int(value.strip()) if kind is int else parse_float(value.strip())
    if number is None:
        raise ValueError(f"not {'an integer' if kind is int else 'a number'}: {value[:40]!r}")
    return number


def _positive(kind: type, name: str, ceiling: float | None = None) -> Any:
    def coerce(value: str) -> Any:
        number = number_of(kind, value)
        if number <= 0 or (ceiling is not None and number > ceiling):
            raise ValueError(f"{name} must be positive" + (f" and at most {ceiling}" if ceiling else ""))
        return number

    return coerce


def _count(name: str, ceiling: int) -> Any:
    def coerce(value: str) -> int:
        number: int = number_of(int, value)
        if not 0 <= number <= ceiling:
            raise ValueError(f"{name} must be from 0 to {ceiling}")
        return number

    return coerce


def _seconds(name: str) -> Any:
    def coerce(value: str) -> float:
        number: float = number_of(float, value)
        if not 0 <= number <= 86400:
            raise ValueError(f"{name} must be from 0 to 86400 seconds")
        return number

    return coerce


def _origins(value: str) -> tuple[str, ...]:
    """``--cors``: ``*`` or a comma list of origins like ``https://app.example.org``."""
    origins = tuple(o.strip().rstrip("/") for o in value.split(",") if o.strip())
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.\-\[\]:]+", origin):
            raise ValueError(f"--cors takes origins like https://app.example.org (or *), not {origin!r}")
    return origins


def _hosts(value: str) -> tuple[str, ...]:
    """``--allowed-hosts``: a comma list of host names (or addresses), without ports."""
    hosts = tuple(h.strip().lower().rstrip(".") for h in value.split(",") if h.strip())
    for host in hosts:
        if not re.fullmatch(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*", host) and not _is_address(host.strip("[]")):
            raise ValueError(f"--allowed-hosts takes host names like queue.internal (no port), not {host!r}")
    return tuple(h.strip("[]") for h in hosts)


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _endpoint_or_off(value: str) -> str | None:
    return None if value.lower() in ("", "none", "off", "no") else value


LINE_HELP = "Line-protocol endpoint, or 'none'. Off when the original --port/--listen are given without it."


class Options(usage.Options):
    """``restmq serve`` / ``twistd restmq`` options (also read from RESTMQ_* by the tac)."""

    synopsis = "[options]"
    longdesc = (
        "Run RestMQ: a Redis-backed message queue over HTTP, XML-RPC, a line protocol and, when asked, "
        "the Redis and memcached protocols. "
        "Without --redis it starts its own redis-server (append-only file on) under --data."
    )
    optParameters = [
        ["http", None, DEFAULTS.http, "HTTP endpoint (Twisted endpoint string)."],
        ["line", None, DEFAULTS.line, LINE_HELP, _endpoint_or_off],
        ["syslog", None, None, "Syslog line receiver endpoint (off unless given), e.g. tcp:25000."],
        ["resp", None, None, "Redis-protocol (RESP2/RESP3) endpoint (off unless given), e.g. tcp:6380:interface=127.0.0.1."],
        ["memcache", None, None, "memcached text-protocol endpoint (off unless given), e.g. tcp:22133:interface=127.0.0.1."],
        ["redis", None, None, "Redis URL: redis://host:port/db, rediss://…, unix:///path, "
         "redis+sentinel://host:port/master. Default: a private embedded server."],
        ["redis-server", None, None, "redis-server/valkey-server binary for the embedded server."],
        ["data", None, DEFAULTS.data, "Directory of the embedded server's files."],
        ["durability", None, DEFAULTS.durability, "Embedded AOF fsync: everysec or always.",
         _choice("durability", ("everysec", "always"))],
        ["redis-pool", None, DEFAULTS.redis_pool, "Redis connections in the pool.",
         _positive(int, "redis-pool", 256)],
        ["redis-timeout", None, DEFAULTS.redis_timeout,
         "Seconds before an unanswered Redis call fails with backend_unavailable.",
         _positive(float, "redis-timeout", 60)],
        ["max-message-size", None, DEFAULTS.max_message_size, "Largest message/line in bytes.",
         _positive(int, "max-message-size", MAX_MESSAGE_CEILING)],
        ["default-policy", None, DEFAULTS.default_policy, "Stream policy of queues that set none.",
         _choice("default-policy", POLICIES)],
        ["replay", None, DEFAULTS.replay,
         "Broadcast messages kept per queue for subscribers that reconnect (0: none).",
         _count("replay", 1_000_000)],
        ["log-format", None, DEFAULTS.log_format, "text, or json (one object per line, on standard output).",
         _choice("log-format", ("text", "json"))],
        ["auth-file", None, None, "Tokens file: TOKEN RIGHTS PATTERN… per line (reloaded on SIGHUP)."],
        ["acl", None, None, "The original RestMQ's ACL file (INI: address allow/deny lists and Basic "
         "users per category, for HTTP; reloaded when it changes)."],
        ["max-connections", None, DEFAULTS.max_connections,
         "Most connections at once, all listeners together (0: no limit).", _count("max-connections", 10**7)],
        ["max-connections-per-address", None, DEFAULTS.max_connections_per_address,
         "Most connections at once from one client address (0: no limit).",
         _count("max-connections-per-address", 10**7)],
        ["idle-timeout", None, DEFAULTS.idle_timeout,
         "Seconds an HTTP or line connection may wait between requests (streams never idle; 0: forever).",
         _seconds("idle-timeout")],
        ["header-timeout", None, DEFAULTS.header_timeout,
         "Seconds an HTTP request's headers may take to arrive, from the accept for a connection's first "
         "request; with --auth-file also the seconds a line or RESP connection has to authenticate "
         "(0: forever).", _seconds("header-timeout")],
        ["body-timeout", None, DEFAULTS.body_timeout,
         "Seconds an HTTP request's body may take to arrive after its headers (0: forever).",
         _seconds("body-timeout")],
        ["max-subscribers", None, DEFAULTS.max_subscribers,
         "Most stream subscribers of one queue in this process (0: no limit).", _count("max-subscribers", 10**7)],
        ["max-queues", None, DEFAULTS.max_queues,
         "Most queues; an add that would create one more is refused (0: no limit).", _count("max-queues", 10**9)],
        ["replicas", None, DEFAULTS.replicas,
         "Answer writes only once this many Redis replicas have them (WAIT); 0: when the master has.",
         _count("replicas", 100)],
        ["cors", None, None, "Origins whose web pages may call this server (comma list, or *); "
         "CORS is off without it and other sites' pages are refused (403).", _origins],
        ["allowed-hosts", None, None, "Host names (comma list) HTTP clients may use besides localhost, "
         "loopback and the listener's address; without --auth-file other Host headers get 421 "
         "(DNS rebinding).", _hosts],
        # The original RestMQ daemon's options, kept as aliases.
        ["port", None, None, "Original option: HTTP port (with --listen).", int],
        ["listen", None, None, "Original option: HTTP interface (with --port)."],
        ["redis-host", None, None, "Original option: Redis host (builds --redis)."],
        ["redis-port", None, None, "Original option: Redis port (builds --redis).", int],
        ["redis-db", None, None, "Original option: Redis database number (builds --redis).", int],
    ]
    optFlags = [
        ["insecure", None, "Allow listening on a non-loopback address without authentication."],
    ]

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"restmq {__version__}")
        raise SystemExit(0)

    line_given = False

    def opt_line(self, value: str) -> None:
        self.line_given = True
        self["line"] = _endpoint_or_off(value)

    opt_line.__doc__ = LINE_HELP

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Under twistd, a bad option is one line on stderr and exit code 2 (twistd would print its
        whole help first)."""
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            from twisted.application.app import ServerOptions

            if not isinstance(getattr(self, "parent", None), ServerOptions):
                raise
            print(f"twistd restmq: {e} (twistd restmq --help lists the options)", file=sys.stderr)
            raise SystemExit(2) from None

    def postOptions(self) -> None:
        if self["port"] is not None or self["listen"] is not None:
            interface = (self["listen"] or "127.0.0.1").replace(":", "\\:")
            self["http"] = f"tcp:{self['port'] or 8888}:interface={interface}"
            if not self.line_given:
                # The original ran one daemon per core, each given only --port: a second one must
                # not fail on the line protocol's fixed port, which the original did not have.
                self["line"] = None
        if self["redis-host"] or self["redis-port"] or self["redis-db"] is not None:
            if self["redis"]:
                raise usage.UsageError("give either --redis or the --redis-host/port/db aliases")
            self["redis"] = (
                f"redis://{self['redis-host'] or '127.0.0.1'}:{self['redis-port'] or 6379}"
                f"/{self['redis-db'] or 0}"
            )
        config = Config(
            http=self["http"],
            line=self["line"],
            syslog=self["syslog"],
            resp=self["resp"],
            memcache=self["memcache"],
            redis=self["redis"],
            redis_server=self["redis-server"],
            redis_pool=self["redis-pool"],
            redis_timeout=self["redis-timeout"],
            data=self["data"],
            durability=self["durability"],
            max_message_size=self["max-message-size"],
            default_policy=self["default-policy"],
            replay=self["replay"],
            log_format=self["log-format"],
            insecure=bool(self["insecure"]),
            auth_file=self["auth-file"],
            acl=self["acl"],
            max_connections=self["max-connections"],
            max_connections_per_address=self["max-connections-per-address"],
            idle_timeout=self["idle-timeout"],
            header_timeout=self["header-timeout"],
            body_timeout=self["body-timeout"],
            max_subscribers=self["max-subscribers"],
            max_queues=self["max-queues"],
            cors=self["cors"] or (),
            allowed_hosts=self["allowed-hosts"] or (),
            replicas=self["replicas"],
        )
        check_files(config)
        check_endpoints(config)
        if not config.insecure:
            for name, endpoint in config.endpoints.items():
                # The syslog receiver cannot authenticate: tokens do not protect it. The ACL file
                # covers HTTP only.
                protected = bool(config.auth_file) or (bool(config.acl) and name == "http")
                if not is_loopback(endpoint) and (not protected or name == "syslog"):
                    raise usage.UsageError(
                        f"--{name} {endpoint} listens beyond this machine and RestMQ has no "
                        "authentication configured; give --auth-file, bind a loopback interface "
                        "or pass --insecure",
                    )
        self["config"] = config


def check_files(config: Config) -> None:
    """Read the auth and ACL files once now, so a bad one is a usage error before anything starts."""
    from restmq.acl import Acl
    from restmq.auth import Tokens
    from restmq.errors import RestMQError

    try:
        if config.auth_file:
            Tokens(config.auth_file)
        if config.acl:
            Acl(config.acl)
    except RestMQError as e:
        raise usage.UsageError(e.message) from None


def check_endpoints(config: Config) -> None:
    """Parse every endpoint string now, so a bad one is a usage error, not a failure at start."""
    from twisted.internet.endpoints import serverFromString

    for name, endpoint in config.endpoints.items():
        try:
            serverFromString(None, endpoint)
        except Exception as e:  # ValueError, KeyError, TLS files that cannot be read, …
            raise usage.UsageError(f"--{name} {endpoint}: {e}") from None


def twistd_ids(twistd: Mapping[str, Any] | None) -> tuple[int, int] | None:
    """The (uid, gid) that ``twistd --uid/--gid`` switches to after the privileged start, from
    twistd's parsed options (names already numbers; a uid alone means the user's group, as twistd)."""
    uid = twistd.get("uid") if twistd is not None else None
    if uid is None:
        return None
    gid = twistd.get("gid")
    if gid is None:
        import pwd

        gid = pwd.getpwuid(uid).pw_gid
    return int(uid), int(gid)


def twistd_ids_from_argv(argv: list[str]) -> tuple[int, int] | None:
    """The tac's way to :func:`twistd_ids`: twistd hands a .tac none of its options, so read
    ``--uid``/``--gid`` from its command line (without running twistd's option handlers)."""
    import getopt

    from twisted.python.util import gidFromString, uidFromString
    from twisted.scripts.twistd import ServerOptions

    twistd = ServerOptions()
    try:
        pairs, _ = getopt.getopt(argv, twistd.shortOpt, twistd.longOpt)
    except getopt.GetoptError:
        return None
    found: dict[str, int] = {}
    for option, value in pairs:
        if option in ("-u", "--uid"):
            found["uid"] = uidFromString(value)
        elif option in ("-g", "--gid"):
            found["gid"] = gidFromString(value)
    return twistd_ids(found)


def parse(argv: list[str]) -> Config:
    """Parse command-line words into a Config (raises usage.UsageError on bad input)."""
    options = Options()
    options.parseOptions(argv)
    config: Config = options["config"]
    return config


def argv_from_env(environ: Mapping[str, str]) -> list[str]:
    """RESTMQ_HTTP=… RESTMQ_MAX_MESSAGE_SIZE=… → ``["--http", …]``: the tac's way in."""
    argv: list[str] = []
    for parameter in Options.optParameters:
        name = str(parameter[0])
        value = environ.get("RESTMQ_" + name.upper().replace("-", "_"))
        if value is not None:
            argv += [f"--{name}", value]
    for flag in Options.optFlags:
        name = str(flag[0])
        if environ.get("RESTMQ_" + name.upper().replace("-", "_"), "").lower() in ("1", "true", "yes"):
            argv.append(f"--{name}")
    return argv


def makeService(options: Mapping[str, Any]) -> IService:
    """twistd's entry point (named by Twisted's plugin convention)."""
    from restmq.service import build
    from restmq.startup import stop_and_exit

    return build(
        options["config"], run_as=twistd_ids(getattr(options, "parent", None)),
        on_fatal=lambda reason: stop_and_exit(1),
    )


def service_from_env() -> IService:
    """The tac's service: options from RESTMQ_* (a bad one is one line on stderr and exit code 2),
    run as twistd does the plugin's."""
    from restmq.service import build
    from restmq.startup import stop_and_exit

    try:
        config = config_from_env()
    except usage.UsageError as e:
        print(f"restmq_server.tac: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    return build(config, run_as=twistd_ids_from_argv(sys.argv[1:]), on_fatal=lambda reason: stop_and_exit(1))


def config_from_env(environ: Mapping[str, str] | None = None) -> Config:
    """The tac's configuration: RESTMQ_* variables through the same parser."""
    return parse(argv_from_env(os.environ if environ is None else environ))
