"""``hetsched plot NAME --out DIR`` and ``hetsched report WORKLOADS... --pools POOLS.yaml --out FILE``.

Series come from :mod:`hetsched.scheduler.plots` (estimator and planner output); matplotlib is
imported only when a figure is rendered, so the CLI starts fast.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from hetsched.scheduler.cli import add_model_arguments, resolve_hardware, resolve_model, resolve_precisions
from hetsched.scheduler.plots import PLOT_NAMES

if TYPE_CHECKING:
    from hetsched.scheduler.catalog.hardware import HardwareSpec
    from hetsched.scheduler.catalog.models import ModelConfig
    from matplotlib.figure import Figure

_Subparsers = Any  # argparse's private _SubParsersAction


# Defaults of each figure (the paper's choices where it states them).
DEFAULTS: dict[str, dict[str, Any]] = {
    "roofline": {
        "model": "llama-3.1-70b",
        "agent": "chatbot",
        "hardware": ["b200", "h100-sxm", "a100-80gb", "l4", "xeon-6980p"],
    },
    "regime-map": {
        "model": "llama-3.1-8b",
        "hardware": ["h100-sxm"],
        "batches": [1, 128],
        "contexts": [2048, 131072],
        "blocks": ["ffn", "attention"],
    },
    "agents": {
        "model": "llama-3-70b",
        "hardware": ["b200"],
        "agents": ["chatbot", "coding", "coding-long", "web-use", "computer-use"],
    },
    "attention": {"models": ["study-mha", "study-gqa", "study-mla"], "hardware": ["h100-sxm", "b200"]},
    "moe": {
        "models": [
            "llama-3.1-70b",
            "qwen3-32b",
            "mixtral-8x7b",
            "qwen3-30b-a3b",
            "qwen3-235b-a22b",
            "deepseek-v3",
        ],
        "batches": [1, 16],
        "context": 32768,
    },
    "placement": {},
}


def _split(values: Sequence[str] | str | None) -> list[str]:
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [v.strip() for item in items for v in item.split(",") if v.strip()]


def _ints(values: Sequence[str] | str | None, option: str) -> list[int]:
    out: list[int] = []
    for v in _split(values):
        try:
            n = int(float(v[:-1]) * 1024) if v.lower().endswith("k") else int(v)
        except ValueError:
            raise ValueError(f"{option}: not an integer: {v!r}") from None
        if n < 1:
            raise ValueError(f"{option}: must be ≥ 1, got {n}")
        out.append(n)
    return out


def _check(args: argparse.Namespace) -> None:
    for name in ("batch", "tp", "context", "prompt_tokens"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be ≥ 1, got {value}")
    if not 0 < args.utilization <= 1:
        raise ValueError(f"--utilization must be in (0, 1], got {args.utilization}")


def _model(args: argparse.Namespace, default: str) -> ModelConfig:
    if args.model or args.model_config:
        return resolve_model(args)
    from hetsched.scheduler.catalog import model_catalog

    return model_catalog.get_model(default)


def _models(args: argparse.Namespace, default: Sequence[str]) -> list[ModelConfig]:
    from hetsched.scheduler.catalog import model_catalog

    names = _split(args.models)
    if names:
        return [model_catalog.get_model(n) for n in names]
    if args.model or args.model_config:
        return [resolve_model(args)]
    return [model_catalog.get_model(n) for n in default]


def _hardware(args: argparse.Namespace, default: Sequence[str]) -> list[HardwareSpec]:
    names = _split(args.hardware) or list(default)
    return [resolve_hardware(argparse.Namespace(hardware=n, hardware_file=args.hardware_file)) for n in names]


def build_series(name: str, args: argparse.Namespace) -> Any:
    """The series of figure ``name`` from the parsed ``plot`` options."""
    from hetsched.scheduler.catalog import agent_catalog
    from hetsched.scheduler.catalog.hardware import IDEAL
    from hetsched.scheduler.estimator.analysis import Scenario
    from hetsched.scheduler.plots.agents import agents_series
    from hetsched.scheduler.plots.attention import attention_series
    from hetsched.scheduler.plots.moe import moe_series
    from hetsched.scheduler.plots.placement import placement_series
    from hetsched.scheduler.plots.regime_map import regime_map_series
    from hetsched.scheduler.plots.roofline import roofline_series

    _check(args)
    d = DEFAULTS[name]
    if name == "roofline":
        model = _model(args, d["model"])
        agent = agent_catalog.get_agent(args.agent or d["agent"])
        scenario = Scenario.from_agent(
            agent, batch=args.batch, context=args.context, prompt_tokens=args.prompt_tokens
        )
        return roofline_series(
            model,
            _hardware(args, d["hardware"]),
            scenario,
            agent=agent.name,
            precisions=resolve_precisions(args, model),
            tp=args.tp,
            efficiency=IDEAL if args.efficiency == "ideal" else None,
            utilization=args.utilization,
        )
    if name == "regime-map":
        model = _model(args, d["model"])
        batches = _ints(args.batches, "--batches") or d["batches"]
        contexts = _ints(args.contexts, "--contexts") or d["contexts"]
        if len(batches) != 2 or len(contexts) != 2:
            raise ValueError("regime-map: --batches and --contexts take two values each (low,high)")
        return regime_map_series(
            model,
            _hardware(args, d["hardware"])[0],
            batches=(batches[0], batches[1]),
            contexts=(contexts[0], contexts[1]),
            blocks=_split(args.blocks) or d["blocks"],
            precisions=resolve_precisions(args, model),
            tp=args.tp,
            utilization=args.utilization,
        )
    if name == "agents":
        model = _model(args, d["model"])
        agents = [agent_catalog.get_agent(a) for a in _split(args.agents) or d["agents"]]
        return agents_series(
            model,
            _hardware(args, d["hardware"])[0],
            agents,
            batch=args.batch,
            context=args.context,
            precisions=resolve_precisions(args, model),
            utilization=args.utilization,
        )
    if name == "attention":
        models = _models(args, d["models"])
        contexts = _ints(args.contexts, "--contexts") or None
        prec = resolve_precisions(args, models[0]) if args.weights_dtype else None
        return attention_series(
            models,
            _hardware(args, d["hardware"]),
            contexts=contexts,
            batch=args.batch,
            precisions=prec,
        )
    if name == "moe":
        models = _models(args, d["models"])
        batches = _ints(args.batches, "--batches") or d["batches"]
        return moe_series(
            models,
            context=args.context or d["context"],
            batches=batches,
            precisions={m.name: resolve_precisions(args, m) for m in models},
        )
    if name == "placement":
        if not args.pools:
            raise ValueError("plot placement: --pools POOLS.yaml is required (and one or more WORKLOAD.yaml)")
        if not args.workloads and len(args.pools) < 2:
            raise ValueError("plot placement: give one or more AgentWorkload files")
        from hetsched.scheduler.plots.report import build_plan

        plan = build_plan(args.pools[0], [*args.pools[1:], *args.workloads])
        return placement_series(plan.plan_dict, plan.pool_rows)
    raise ValueError(f"unknown plot {name!r} (choose from {', '.join(PLOT_NAMES)})")


def render(name: str, series: Any) -> Figure:
    from hetsched.scheduler.plots.agents import render_agents
    from hetsched.scheduler.plots.attention import render_attention
    from hetsched.scheduler.plots.moe import render_moe
    from hetsched.scheduler.plots.placement import render_placement
    from hetsched.scheduler.plots.regime_map import render_regime_map
    from hetsched.scheduler.plots.roofline import render_roofline

    renderers: dict[str, Callable[[Any], Figure]] = {
        "roofline": render_roofline,
        "regime-map": render_regime_map,
        "agents": render_agents,
        "attention": render_attention,
        "moe": render_moe,
        "placement": render_placement,
    }
    fig: Figure = renderers[name](series)
    return fig


def cmd_plot(args: argparse.Namespace) -> int:
    from hetsched.scheduler.plots._figure import save_figure

    formats = _split(args.format)
    for fmt in formats:
        if fmt not in ("png", "svg"):
            raise ValueError(f"--format: png or svg, got {fmt!r}")
    names = [n for n in PLOT_NAMES if n != "placement" or args.pools] if args.name == "all" else [args.name]
    for name in names:
        series = build_series(name, args)
        for path in save_figure(render(name, series), args.out, name, formats):
            print(path)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from hetsched.scheduler.plots.report import write_report

    path = write_report(args.workloads, args.pools, args.out, title=args.title)
    print(path)
    return 0


def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``estimate`` options plus the multi-valued ones of the figures.

    The parser must use ``conflict_handler="resolve"``: ``--hardware`` becomes repeatable.
    """
    add_model_arguments(parser)
    parser.add_argument(
        "--hardware",
        action="append",
        metavar="NAME[,NAME...]",
        help="hardware catalog names, repeatable or comma-separated (roofline: one roof each; "
        "regime-map, agents: the first; attention: capacity lines)",
    )
    parser.add_argument(
        "--models", action="append", metavar="NAME[,NAME...]", help="models of the attention and moe figures"
    )
    parser.add_argument(
        "--agents", action="append", metavar="NAME[,NAME...]", help="agents of the agents figure"
    )
    parser.add_argument(
        "--batches",
        action="append",
        metavar="B[,B...]",
        help="regime-map: low,high batch; moe: batches (default 1,16)",
    )
    parser.add_argument(
        "--contexts",
        action="append",
        metavar="L[,L...]",
        help="regime-map: short,long context; attention: the x values (8k style allowed)",
    )
    parser.add_argument("--blocks", metavar="B[,B...]", help="regime-map blocks: step, ffn, attention")
    # Figure-specific defaults (the paper's models) apply when these are not given.
    parser.set_defaults(model=None, agent=None)


def register(subparsers: _Subparsers) -> None:
    plot = subparsers.add_parser(
        "plot",
        conflict_handler="resolve",
        help="figures: roofline, regime-map, agents, attention, moe, placement (PNG and SVG)",
        description=(
            "Write DIR/NAME.png and DIR/NAME.svg from estimator (or planner) output. "
            "roofline: each hardware's roof with the workload's prefill and decode; regime-map: OI "
            "against memory per device with compute-, bandwidth- and capacity-bound regions (paper "
            "Fig. 1); agents: tokens, CF and OI of the agents on LLaMA-3-70B (Fig. 2); attention: CF "
            "against context for MHA, GQA, MLA (Fig. 3); moe: CF at batch 1 and 16 and decode OI, dense "
            "vs MoE (Fig. 4); placement: a plan's devices per pool (--pools and workloads); all: each."
        ),
    )
    plot.add_argument(
        "name", choices=(*PLOT_NAMES, "all"), metavar="NAME", help=f"one of {', '.join(PLOT_NAMES)}, or all"
    )
    plot.add_argument(
        "workloads", nargs="*", metavar="WORKLOAD.yaml", help="AgentWorkload manifests (placement)"
    )
    plot.add_argument("--out", default=".", metavar="DIR", help="output directory (default: .)")
    plot.add_argument("--format", default="png,svg", help="png, svg or both (default png,svg)")
    plot.add_argument(
        "--pools",
        nargs="+",
        metavar=("POOLS.yaml", "WORKLOAD.yaml"),
        help="placement: the pool file, optionally followed by the AgentWorkload files",
    )
    add_plot_arguments(plot)
    plot.set_defaults(func=cmd_plot)

    rep = subparsers.add_parser(
        "report",
        help="self-contained HTML report of a plan: table, regimes, figures, baselines",
        description="Plan the workloads onto the pools and write one HTML file (inline CSS and figures).",
    )
    rep.add_argument("workloads", nargs="+", metavar="WORKLOAD.yaml", help="AgentWorkload manifests")
    rep.add_argument("--pools", required=True, metavar="POOLS.yaml", help="pool file")
    rep.add_argument("--out", default="report.html", metavar="FILE", help="HTML file (default report.html)")
    rep.add_argument("--title", default="hetsched placement report")
    rep.set_defaults(func=cmd_report)


__all__ = ["DEFAULTS", "PLOT_NAMES", "add_plot_arguments", "build_series", "register", "render"]
