"""`python -m batchlab.cli ...`: the `batchlab` command."""

import sys

from .commands import main

sys.exit(main())
