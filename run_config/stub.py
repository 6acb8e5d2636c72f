"""Entry point of a stage that is not built yet: `--help` works, running it exits 2."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def stub_stage(prog: str, description: str, issue: int) -> tuple[Callable[[], argparse.ArgumentParser],
                                                                   Callable[[list[str] | None], int]]:
    """Return (build_parser, main) for a stage still to be built under `issue`."""

    def build_parser() -> argparse.ArgumentParser:
        return argparse.ArgumentParser(prog=prog, description=f"{description} (not built yet: issue #{issue})")

    def main(argv: list[str] | None = None) -> int:
        build_parser().parse_known_args(argv)
        print(f"{prog}: this stage is not built yet (issue #{issue})", file=sys.stderr)
        return 2

    return build_parser, main
