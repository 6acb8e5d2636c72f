"""Where the benchmarks find the real 3D-EX files: their own flag, else `$LMLEXICON_3DEX_DIR`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ENV = "LMLEXICON_3DEX_DIR"
URBAN_TEST = "Urban_test.csv"


def add_urban_option(parser: argparse.ArgumentParser, flag: str) -> None:
    """`flag` CSV: the Urban test file of 3D-EX (default: `$LMLEXICON_3DEX_DIR/Urban_test.csv`)."""
    parser.add_argument(flag, default=None, metavar="CSV", help=f"{URBAN_TEST} of 3D-EX (default: ${ENV}/{URBAN_TEST})")


def urban_csv(parser: argparse.ArgumentParser, flag: str, value: str | None) -> Path:
    """The CSV named by `flag`, else the one in `$LMLEXICON_3DEX_DIR`; one line and exit 2 when there is none."""
    if value is None:
        folder = os.environ.get(ENV)
        if not folder:
            _refuse(parser, f"no 3D-EX data: pass {flag} CSV or set {ENV} to the folder holding {URBAN_TEST}")
        value = str(Path(folder) / URBAN_TEST)
    if not Path(value).is_file():
        _refuse(parser, f"{value}: no such file ({URBAN_TEST} of 3D-EX, from {flag} or ${ENV})")
    return Path(value)


def _refuse(parser: argparse.ArgumentParser, message: str) -> None:
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)
