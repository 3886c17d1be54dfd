"""``python -m fade.analysis.dashboard``: the same as ``fade-dashboard``."""

import sys

from fade.analysis.dashboard.page import main

sys.exit(main())
