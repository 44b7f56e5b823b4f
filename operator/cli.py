"""The ``hetsched`` command: one parser, subcommands contributed by the modules listed below.

Each module exposes ``register(subparsers)`` adding its subcommands with ``set_defaults(func=...)``;
``func(args)`` returns the exit code. Heavy imports (kopf, kubernetes) stay inside the functions
so offline commands start fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMAND_MODULES: tuple[str, ...] = (
    "hetsched.scheduler.cli",
    "hetsched.scheduler.plots.cli",
    "hetsched.operator.devcluster.cli",
    "hetsched.scheduler.placement.cli",
    "hetsched.operator.run",
    "hetsched.operator.render",
    "hetsched.scheduler.calibration.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hetsched",
        description="Place AI-agent LLM inference phases on heterogeneous hardware by OI and CF.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as exc:
        # User errors (bad field, missing file) are reported plainly, without a traceback.
        print(f"hetsched {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
