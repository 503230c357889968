"""`python -m taskq` runs the taskq command."""

import sys

from taskq.cli import main

sys.exit(main())
