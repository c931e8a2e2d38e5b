"""``python -m restmq.cli``: the same as the ``restmq`` console script."""

import sys

from restmq.cli import main

sys.exit(main())
