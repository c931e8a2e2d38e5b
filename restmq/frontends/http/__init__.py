"""The HTTP front end on twisted.web: :func:`restmq.frontends.http.routes.build_site` is the entry.

Modules: ``routes`` (the tree and the Site), ``common`` (error table, answers, running a command),
``rest`` (``/``, ``/q``, ``/queue``), ``stream`` (COMET), ``admin`` (stats, control, policy,
health, pages). Framing only: commands and their checks belong to the dispatcher.
"""

from __future__ import annotations

from twisted.web.server import Site

from restmq.frontends.base import Context, FrontEnd
from restmq.options import Option, hosts, origins


def build(context: Context) -> Site:
    """The HTTP listener's Site (see restmq/frontends/registry.py)."""
    from restmq.frontends.http.routes import build_site

    return build_site(
        context.dispatcher,
        max_message_size=context.max_message_size,
        reactor=context.reactor,
        header_timeout=context.header_timeout,
        body_timeout=context.body_timeout,
        idle_timeout=context.idle_timeout,
        limits=context.limits,
        cors=context.options["cors"],
        check_host=not context.secured,
        allowed_hosts=context.options["allowed_hosts"],
    )


FRONTEND = FrontEnd(
    "http",
    (
        Option("http", "tcp:8888:interface=127.0.0.1", "HTTP endpoint (Twisted endpoint string)."),
        Option("cors", (), "Origins whose web pages may call this server (comma list, or *); "
               "CORS is off without it and other sites' pages are refused (403).", origins),
        Option("allowed-hosts", (), "Host names (comma list) HTTP clients may use besides localhost, "
               "loopback and the listener's address; without --auth-file other Host headers get 421 "
               "(DNS rebinding).", hosts),
    ),
    build,
    speaks_http=True,
    acl=True,
)
