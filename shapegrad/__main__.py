"""``python -m shapegrad``: the command line (:mod:`shapegrad.cli`)."""

import sys

from shapegrad.cli import main

if __name__ == "__main__":  # not when imported (e.g. by pytest --doctest-modules)
    sys.exit(main())
