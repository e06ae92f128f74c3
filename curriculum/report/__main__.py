"""`python -m curriculum.report RUN_DIR`: the same as `curriculum report RUN_DIR`."""

import sys

from curriculum.report import main

sys.exit(main())
