"""``python -m bench [--quick]``: every benchmark of issue 13 and the table of goals (see run.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from run import main  # noqa: E402

sys.exit(main())
