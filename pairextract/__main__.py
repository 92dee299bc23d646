"""``python -m pairextract``."""

import sys

from pairextract.cli import main

sys.exit(main())
