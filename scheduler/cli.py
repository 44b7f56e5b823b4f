"""Offline subcommands: ``estimate`` and the catalog listings ``models``, ``hardware``, ``agents``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from hetsched.scheduler.catalog import agent_catalog, hardware_catalog, model_catalog
from hetsched.scheduler.catalog.config_input import read_model_config_file
from hetsched.scheduler.catalog.hardware import IDEAL, HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.analysis import Scenario, WorkloadAnalysis, analyze
from hetsched.scheduler.estimator.cost import Precisions
from hetsched.scheduler.estimator.precision import Precision, parse_precision
from hetsched.scheduler.estimator.roofline import DEFAULT_MEMORY_UTILIZATION
from hetsched.scheduler.units import fmt_gib, fmt_si

_Subparsers = Any  # argparse's private _SubParsersAction


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Model, agent, token-shape, precision and hardware options shared by estimate and plot."""
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--model", default="llama-3.1-70b", help="catalog name or Hugging Face id")
    src.add_argument("--model-config", metavar="PATH", help="a Hugging Face config.json")
    parser.add_argument("--agent", default="chatbot", help="agent profile (hetsched agents lists them)")
    parser.add_argument("--batch", type=int, default=1, help="requests per step (both phases)")
    parser.add_argument(
        "--context", type=int, help="decode context in tokens (default: the agent's last turn)"
    )
    parser.add_argument(
        "--prompt-tokens", type=int, help="new prompt tokens prefilled (default: the agent's)"
    )
    parser.add_argument("--weights-dtype", help="weights precision (default: the checkpoint's)")
    parser.add_argument("--kv-dtype", default="bf16", help="KV-cache precision")
    parser.add_argument("--act-dtype", default="bf16", help="activation (compute) precision")
    parser.add_argument("--hardware", default="h100-sxm", help="hardware catalog name")
    parser.add_argument("--hardware-file", metavar="PATH", help="YAML with custom hardware entries")
    parser.add_argument("--tp", type=int, default=1, help="tensor-parallel devices per replica")
    parser.add_argument(
        "--efficiency",
        choices=("calibrated", "ideal"),
        default="calibrated",
        help="calibrated fractions of peak, or the pure roofline",
    )
    parser.add_argument(
        "--utilization",
        type=float,
        default=DEFAULT_MEMORY_UTILIZATION,
        help="usable fraction of device memory",
    )


def resolve_model(args: argparse.Namespace) -> ModelConfig:
    if args.model_config:
        return read_model_config_file(args.model_config)
    return model_catalog.get_model(args.model)


def resolve_hardware(args: argparse.Namespace) -> HardwareSpec:
    if args.hardware_file:
        for hw in hardware_catalog.load_hardware_yaml(Path(args.hardware_file)):
            if hw.name.lower() == args.hardware.strip().lower():
                return hw
    return hardware_catalog.get_hardware(args.hardware)


def resolve_precisions(args: argparse.Namespace, model: ModelConfig) -> Precisions:
    return Precisions.requested(
        model,
        weights=parse_precision(args.weights_dtype, "--weights-dtype") if args.weights_dtype else None,
        kv_cache=parse_precision(args.kv_dtype, "--kv-dtype"),
        activations=parse_precision(args.act_dtype, "--act-dtype"),
    )


def _check_positive(args: argparse.Namespace) -> None:
    for name in ("batch", "tp", "context", "prompt_tokens"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {value}")
    if not 0 < args.utilization <= 1:
        raise ValueError(f"--utilization must be in (0, 1], got {args.utilization}")


def run_estimate_args(args: argparse.Namespace) -> WorkloadAnalysis:
    _check_positive(args)
    model = resolve_model(args)
    hardware = resolve_hardware(args)
    agent = agent_catalog.get_agent(args.agent)
    scenario = Scenario.from_agent(
        agent, batch=args.batch, context=args.context, prompt_tokens=args.prompt_tokens
    )
    return analyze(
        model,
        hardware,
        scenario,
        precisions=resolve_precisions(args, model),
        tp=args.tp,
        efficiency=IDEAL if args.efficiency == "ideal" else None,
        utilization=args.utilization,
    )


def _kv_text(m: dict[str, Any]) -> str:
    """KV growth per token, the windowed layers' share and cap, the fixed state."""
    text = f"KV {m['kv_bytes_per_token'] / 1024:.1f} KiB/token"
    if m["kv_window_bytes_per_token"]:
        text += (
            f" + {m['kv_window_bytes_per_token'] / 1024:.1f} KiB/token in windowed layers up to "
            f"{m['kv_window_cap_bytes'] / (1 << 20):.2f} MiB"
        )
    if m["state_bytes_per_request"]:
        text += f" + {m['state_bytes_per_request'] / (1 << 20):.1f} MiB state/request"
    return text


def _params_text(m: dict[str, Any]) -> str:
    text = f"{m['total_params'] / 1e9:.2f}B params"
    if m["vision_params"]:
        text += f" ({m['vision_params'] / 1e9:.2f}B vision)"
    text += f", {m['active_params'] / 1e9:.2f}B active"
    if m["active_params_excluding_embedding"] != m["active_params"]:
        text += f" ({m['active_params_excluding_embedding'] / 1e9:.2f}B without the embedding table)"
    return text


def format_estimate(result: WorkloadAnalysis) -> str:
    d = result.to_dict()
    m, hw, sc = d["model"], d["hardware"], d["scenario"]
    kind = m["attention"] if not result.model.hybrid else f"{m['attention']}; {m['layers']}"
    lines = [
        f"model     {m['name']} ({kind}): {_params_text(m)}, {_kv_text(m)}",
        f"hardware  {hw['name']} × {hw['devices']}: {fmt_si(hw['peak_flops'], 'FLOP/s')} peak, "
        f"{fmt_si(hw['memory_bandwidth_bytes_per_second'], 'B/s')}, {fmt_gib(hw['memory_bytes'], 2)}, "
        f"ridge {hw['ridge_point']:.0f} FLOP/B",
        f"scenario  batch {sc['batch']}, prompt {sc['prompt_tokens']} (+{sc['cached_tokens']} cached), "
        f"decode at context {sc['decode_context']}; precisions {d['precisions']}",
        "",
    ]
    rows = [
        ("", "prefill", "decode"),
        ("FLOPs/step", *(fmt_si(d["phases"][p]["flops"], "FLOP") for p in ("prefill", "decode"))),
        ("DRAM bytes/step", *(fmt_si(d["phases"][p]["dram_bytes"], "B") for p in ("prefill", "decode"))),
        ("  weights read", *(fmt_si(d["phases"][p]["weight_bytes"], "B") for p in ("prefill", "decode"))),
        (
            "  KV read+write",
            *(
                fmt_si(d["phases"][p]["kv_read_bytes"] + d["phases"][p]["kv_write_bytes"], "B")
                for p in ("prefill", "decode")
            ),
        ),
        ("OI (FLOP/B)", *(f"{d['phases'][p]['operational_intensity']:.1f}" for p in ("prefill", "decode"))),
        (
            "CF per request",
            *(fmt_gib(d["phases"][p]["capacity_footprint_bytes"], 2) for p in ("prefill", "decode")),
        ),
        ("  KV cache", *(fmt_gib(d["phases"][p]["kv_cache_bytes"], 2) for p in ("prefill", "decode"))),
        *(
            [
                (
                    "    of which state",
                    *(fmt_gib(d["phases"][p]["state_bytes"], 3) for p in ("prefill", "decode")),
                )
            ]
            if d["phases"]["decode"]["state_bytes"]
            else []
        ),
        *(
            [
                (
                    "    of which index keys",
                    *(fmt_gib(d["phases"][p]["index_key_bytes"], 3) for p in ("prefill", "decode")),
                )
            ]
            if d["phases"]["decode"]["index_key_bytes"]
            else []
        ),
        ("regime", *(d["phases"][p]["regime"] for p in ("prefill", "decode"))),
        ("step time", *(f"{d['phases'][p]['step_seconds'] * 1e3:.2f} ms" for p in ("prefill", "decode"))),
        ("tokens/s", *(f"{d['phases'][p]['tokens_per_second']:.1f}" for p in ("prefill", "decode"))),
        (
            "MFU / MBU",
            *(f"{d['phases'][p]['mfu']:.0%} / {d['phases'][p]['mbu']:.0%}" for p in ("prefill", "decode")),
        ),
        ("max batch (fits)", *(str(d["phases"][p]["max_batch"]) for p in ("prefill", "decode"))),
        ("batch at ridge", *(str(d["phases"][p]["ridge_batch"] or "never") for p in ("prefill", "decode"))),
    ]
    width = max(len(r[0]) for r in rows) + 2
    col = max(len(c) for r in rows for c in r[1:]) + 2
    lines += [f"{r[0]:<{width}}{r[1]:>{col}}{r[2]:>{col}}" for r in rows]
    lines.append("")
    lines.append(f"TTFT {result.ttft_seconds * 1e3:.1f} ms, TPOT {result.tpot_seconds * 1e3:.2f} ms")
    lines += [f"note: {n}" for n in m["notes"]]
    lines += [f"warning: {w}" for w in d["warnings"]]
    return "\n".join(lines)


def cmd_estimate(args: argparse.Namespace) -> int:
    result = run_estimate_args(args)
    if args.output == "json":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(format_estimate(result))
    return 0


def _print_rows(rows: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    if not rows:
        return
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.upper().ljust(widths[k]) for k in keys))
    for r in rows:
        print("  ".join(str(r[k]).ljust(widths[k]) for k in keys))


def cmd_models(args: argparse.Namespace) -> int:
    _print_rows(model_catalog.list_rows(), args.output)
    return 0


def cmd_hardware(args: argparse.Namespace) -> int:
    _print_rows(hardware_catalog.list_rows(), args.output)
    return 0


def cmd_hardware_probe(args: argparse.Namespace) -> int:
    """``hetsched hardware probe``: this machine as a hardware entry (scheduler/catalog/probe.py)."""
    from hetsched.scheduler.catalog import probe

    if args.repetitions < 1:
        raise ValueError(f"--repetitions must be ≥ 1, got {args.repetitions}")
    doc = probe.probe(
        args.name,
        ghz=args.ghz,
        power_watts=args.power,
        price_per_hour=args.price,
        repetitions=args.repetitions,
        array_bytes=int(args.array_mib * 2**20) if args.array_mib else None,
    )
    # The entry must load as any hardware file does.
    hardware_catalog.hardware_from_entries(doc["hardware"], "probed hardware")
    text = json.dumps(doc, indent=2) + "\n" if args.output == "json" else probe.render_yaml(doc)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _register_probe(hardware: argparse.ArgumentParser) -> None:
    sub = hardware.add_subparsers(dest="hardware_command", metavar="probe")
    text = "describe this machine (a CPU node) as a hardware entry: cores, ISA, peaks, measured bandwidth"
    p = sub.add_parser("probe", help=text, description=text + " (docs/calibration.md, CPUs).")
    p.add_argument("--name", help="entry name (default: cpu-<vendor>-<microarchitecture>-<cores>c)")
    p.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    p.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    p.add_argument(
        "--ghz", type=float, help="clock for the peaks (default: base clock from sysfs or cpuinfo)"
    )
    p.add_argument(
        "--power", type=float, metavar="WATTS", help="power per socket (default: an estimate per core)"
    )
    p.add_argument(
        "--price", type=float, metavar="USD", help="price per socket-hour (default 0: owned capacity)"
    )
    p.add_argument("--repetitions", type=int, default=10, help="bandwidth test repetitions (best of N)")
    p.add_argument("--array-mib", type=float, help="bandwidth test array size (default ≥ 4 × LLC, ≥ 64 MiB)")
    p.set_defaults(func=cmd_hardware_probe)


def cmd_agents(args: argparse.Namespace) -> int:
    _print_rows(agent_catalog.list_rows(), args.output)
    return 0


def register(subparsers: _Subparsers) -> None:
    est = subparsers.add_parser(
        "estimate",
        help="OI, CF, regime and timing of prefill and decode on one hardware entry",
        description="Estimate a workload's prefill and decode on one hardware entry.",
    )
    add_model_arguments(est)
    est.add_argument("-o", "--output", choices=("table", "json"), default="table")
    est.set_defaults(func=cmd_estimate)
    for name, func, text in (
        ("models", cmd_models, "list the model catalog"),
        ("hardware", cmd_hardware, "list the hardware catalog"),
        ("agents", cmd_agents, "list the agent profiles"),
    ):
        p = subparsers.add_parser(name, help=text, description=text)
        p.add_argument("-o", "--output", choices=("table", "json"), default="table")
        p.set_defaults(func=func)
        if name == "hardware":
            _register_probe(p)


__all__ = ["Precision", "add_model_arguments", "register", "run_estimate_args"]
