"""``python -m embodimem`` = the ``embodimem`` console script."""

import sys

from embodimem.cli import main

sys.exit(main())
