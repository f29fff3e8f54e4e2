"""Small helpers shared by the three console scripts."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

EXIT_NOT_BUILT = 3


def not_built(verb: str, issue: str) -> NoReturn:
    """Refuse a verb whose feature has not landed yet: say so, never pretend."""
    print(f"{verb}: not built yet ({issue}).", file=sys.stderr)
    raise SystemExit(EXIT_NOT_BUILT)


def fail(message: str, code: int = 2) -> NoReturn:
    print(message, file=sys.stderr)
    raise SystemExit(code)


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=prog, description=description)
