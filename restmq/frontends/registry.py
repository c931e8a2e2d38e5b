"""The front ends of the server, in the order their listeners start.

Adding a front end is one module that ends with ``FRONTEND = FrontEnd(...)`` (see base.py) and one
line here. ``restmq serve``, ``twistd restmq``, the tac and the service tree read this list; a
front end's options reach all of them from its declaration.
"""

from __future__ import annotations

import importlib
from functools import cache

from restmq.frontends.base import FrontEnd
from restmq.options import Option

MODULES = (
    "restmq.frontends.http",
    "restmq.frontends.line",
    "restmq.frontends.syslog",
    "restmq.frontends.resp",
    "restmq.frontends.memcache",
)


@cache
def frontends() -> tuple[FrontEnd, ...]:
    """Every registered front end (their modules are imported on first use)."""
    found = []
    for name in MODULES:
        declared = getattr(importlib.import_module(name), "FRONTEND", None)
        if not isinstance(declared, FrontEnd):
            raise TypeError(f"{name} declares no FRONTEND = FrontEnd(...)")
        found.append(declared)
    return tuple(found)


def frontend_options() -> tuple[Option, ...]:
    """The options every front end declares, in registry order."""
    return tuple(option for fe in frontends() for option in fe.options)
