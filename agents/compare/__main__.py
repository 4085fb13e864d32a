"""``python -m agents.compare``: the same as ``rerank-env compare``."""

import sys

from agents.compare.cli import main

sys.exit(main())
