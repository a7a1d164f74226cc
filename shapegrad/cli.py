"""The ``shapegrad`` command line.

Each sub-command lives in the module of its concern and registers itself here
with ``add_parser(subparsers)`` returning the function to run. Errors in what
the user gave (a missing file, a bad value) are raised as :class:`UsageError`
and end the program with one readable line and exit status 2.
"""

import argparse
import sys

__all__ = ["UsageError", "main"]


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit status 2."""


def _commands():
    from shapegrad import bench, demo, doctor, files, fit, train

    return [train, fit, files, demo, doctor, bench]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit status 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser():
    parser = _Parser(
        prog="shapegrad",
        description="Differentiable geometric primitives: render, train, fit, diagnose.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for module in _commands():
        module.add_parser(subparsers)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except UsageError as error:
        print(f"shapegrad {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"shapegrad {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    # Under ``python -m shapegrad.cli`` this file is ``__main__``; run the imported module's
    # main so that sub-commands raise the same UsageError class that it catches.
    from shapegrad.cli import main as _main

    sys.exit(_main())
