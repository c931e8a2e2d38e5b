"""XML-RPC front end (placeholder until the real one lands)."""

from __future__ import annotations

from typing import Any

from twisted.web.resource import IResource, Resource


def build_xmlrpc(dispatcher: Any) -> IResource:
    """The XML-RPC resource mounted at /RPC2 and /xmlrpc."""
    return Resource()
