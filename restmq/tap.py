"""Command-line options and ``makeService``: shared by ``twistd restmq``, ``restmq serve`` and the tac.

One option parser for every way of starting RestMQ, so the three cannot drift apart. The original
RestMQ daemon's options (``--port``, ``--listen``, ``--redis-host`` …) are accepted as aliases.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from twisted.application.service import IService
from twisted.python import usage

from restmq import __version__
from restmq.config import Config, core_options, is_loopback
from restmq.frontends.registry import frontend_options, frontends
from restmq.options import Option, endpoint_or_off, integer

#: The original RestMQ daemon's options, kept as aliases (see :meth:`Options.postOptions`).
ALIASES = (
    Option("port", None, "Original option: HTTP port (with --listen).", integer),
    Option("listen", None, "Original option: HTTP interface (with --port)."),
    Option("redis-host", None, "Original option: Redis host (builds --redis)."),
    Option("redis-port", None, "Original option: Redis port (builds --redis).", integer),
    Option("redis-db", None, "Original option: Redis database number (builds --redis).", integer),
)


def declared_options() -> tuple[Option, ...]:
    """Every option, as declared: the front ends' (registry order), the core's, the aliases."""
    return (*frontend_options(), *core_options(), *ALIASES)


class Options(usage.Options):
    """``restmq serve`` / ``twistd restmq`` options (also read from RESTMQ_* by the tac), built from
    the declarations: the front ends' in their modules, the core's as :class:`Config` fields."""

    synopsis = "[options]"
    longdesc = (
        "Run RestMQ: a Redis-backed message queue over HTTP, XML-RPC, a line protocol and, when asked, "
        "the Redis and memcached protocols. "
        "Without --redis it starts its own redis-server (append-only file on) under --data."
    )
    optParameters = [
        [o.name, None, o.default, o.help, *([o.coerce] if o.coerce else [])]
        for o in declared_options() if not o.flag
    ]
    optFlags = [[o.name, None, o.help] for o in declared_options() if o.flag]

    def opt_version(self) -> None:
        """Print the version and exit."""
        print(f"restmq {__version__}")
        raise SystemExit(0)

    line_given = False

    def opt_line(self, value: str) -> None:
        self.line_given = True
        self["line"] = endpoint_or_off(value)

    opt_line.__doc__ = next(o.help for o in frontend_options() if o.name == "line")

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
        values = {o.attr: self[o.name] for o in (*frontend_options(), *core_options())}
        values.update((o.attr, bool(self[o.name])) for o in core_options() if o.flag)
        config = Config(**values)
        check_files(config)
        check_endpoints(config)
        if not config.insecure:
            protection = {fe.name: fe for fe in frontends()}
            for name, endpoint in config.endpoints.items():
                # A front end whose clients cannot present a token (syslog) is not protected by
                # one; the ACL file protects only the front ends it covers (HTTP).
                fe = protection[name]
                protected = fe.authenticates and (bool(config.auth_file) or (bool(config.acl) and fe.acl))
                if not is_loopback(endpoint) and not protected:
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
    if twistd is None:
        return None
    uid = twistd.get("uid")
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
    from restmq.server import build_server as build
    from restmq.startup import stop_and_exit

    return build(
        options["config"], run_as=twistd_ids(getattr(options, "parent", None)),
        on_fatal=lambda reason: stop_and_exit(1),
    )


def service_from_env() -> IService:
    """The tac's service: options from RESTMQ_* (a bad one is one line on stderr and exit code 2),
    run as twistd does the plugin's."""
    from restmq.server import build_server as build
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
