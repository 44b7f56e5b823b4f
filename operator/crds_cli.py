"""``hetsched crds``: write the CustomResourceDefinitions generated from the spec models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "crds"


def cmd_crds(args: argparse.Namespace) -> int:
    from hetsched.operator import crdgen

    out = Path(args.out)
    if args.check:
        stale = crdgen.drifted(out)
        if stale:
            print(
                f"hetsched crds: {', '.join(stale)} in {out} differ from scheduler/spec.py; run `make crds`",
                file=sys.stderr,
            )
            return 1
        print(f"{out}: CRDs up to date")
        return 0
    if args.stdout:
        sys.stdout.write("---\n".join(crdgen.rendered_crds().values()))
        return 0
    for path in crdgen.write_crds(out):
        print(path)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "crds",
        help="generate the CRDs (AgentWorkload, AcceleratorProfile) from the spec models",
        description="Write crds/*.yaml from hetsched/scheduler/spec.py (structural OpenAPI v3 with CEL rules).",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: the repo's crds/)")
    p.add_argument("--check", action="store_true", help="exit 1 if the files there differ from the models")
    p.add_argument("--stdout", action="store_true", help="print the CRDs instead of writing files")
    p.set_defaults(func=cmd_crds)
