"""``python -m shapegrad``: the command line (:mod:`shapegrad.cli`)."""

import sys

from shapegrad.cli import main

sys.exit(main())
