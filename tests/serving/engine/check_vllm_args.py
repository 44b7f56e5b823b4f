"""Run in the engine environment: are these ``vllm serve`` argument lists accepted by vLLM itself?

    python check_vllm_args.py LISTS.json      # JSON: [[arg, ...], ...]; one JSON line out per list

Each list goes through what ``python -m vllm.entrypoints.openai.api_server`` does before it starts an
engine: the server's own argument parser (unknown flag or bad value: error; ``--kv-transfer-config``
is validated into vLLM's KVTransferConfig, whose unknown keys are rejected), the serve arguments'
validation, and the engine arguments built from them. No engine starts and no weights are read.
Exit status 0 when every list is accepted, 1 otherwise.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")

from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.launchers.cli_args import make_arg_parser, validate_parsed_serve_args
from vllm.utils.argparse_utils import FlexibleArgumentParser


class Rejected(Exception):
    pass


class Parser(FlexibleArgumentParser):
    def error(self, message: str) -> Any:  # argparse would exit(2)
        raise Rejected(message)


def check(argv: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"argv": argv}
    try:
        args = make_arg_parser(Parser(prog="vllm-serve")).parse_args(argv)
        validate_parsed_serve_args(args)
        engine = AsyncEngineArgs.from_cli_args(args)
        kv = engine.kv_transfer_config
        if kv is not None:
            out["kv"] = {k: getattr(kv, k) for k in ("kv_connector", "kv_role", "kv_buffer_device")}
        out["ok"] = True
    except Exception as exc:  # Rejected, pydantic's ValidationError, ValueError, TypeError
        out["ok"] = False
        out["error"] = f"{type(exc).__name__}: {' | '.join(str(exc).splitlines()[:3])}"[:500]
    return out


def main() -> int:
    with open(sys.argv[1]) as f:
        lists = json.load(f)
    results = [check(argv) for argv in lists]
    for r in results:
        print(json.dumps(r))
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
