"""Development entry: ``twistd -ny restmq_server.tac``. Options come from RESTMQ_* variables
(RESTMQ_HTTP, RESTMQ_REDIS, RESTMQ_DATA, …: the long option names in upper case)."""

import os
import sys

from twisted.application import service

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from restmq.tap import service_from_env  # noqa: E402

application = service.Application("restmq")
service_from_env().setServiceParent(application)
