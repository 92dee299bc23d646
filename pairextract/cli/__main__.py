"""``python -m pairextract.cli``."""

import sys

from pairextract.cli import main

sys.exit(main())
