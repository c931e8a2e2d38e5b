"""The HTTP front end on twisted.web: :func:`restmq.frontends.http.routes.build_site` is the entry.

Modules: ``routes`` (the tree and the Site), ``common`` (error table, answers, running a command),
``rest`` (``/``, ``/q``, ``/queue``), ``stream`` (COMET), ``admin`` (stats, control, policy,
health, pages). Framing only: commands and their checks belong to the dispatcher.
"""
