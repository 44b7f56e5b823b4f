"""``hetsched validate --measurements CSV [-o json] [--plot DIR] [--efficiency calibrated|ideal]``.

Predicts every row of a measurements CSV with the serving model the planner uses
(``serving.predict_colocated`` / ``predict_disaggregated``) and reports, per (model, system, backend)
and overall, the median and p90 absolute relative error of TPOT and TTFT and the Spearman rank
correlation. A row that cannot be predicted is reported as ``skipped`` with its reason. The row's
``backend`` names the serving engine (``engines.engine_of_backend``), whose fitted terms the
calibrated efficiency uses; an unknown backend gets the shared values.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from hetsched.scheduler.calibration import calibrated
from hetsched.scheduler.calibration.dataset import (
    BENCHMARK_WARMUP_FRACTION,
    Measurement,
    Plan,
    Skip,
    predict,
    read_measurements,
    resolve,
)
from hetsched.scheduler.calibration.metrics import fmt_corr, fmt_fraction, fmt_signed_fraction, summary
from hetsched.scheduler.catalog.hardware import IDEAL, Efficiency, HardwareSpec
from hetsched.scheduler.engines import engine_of_backend

_Subparsers = Any  # argparse's private _SubParsersAction
#: (hardware, serving engine or None) → efficiency.
EfficiencySource = Callable[[HardwareSpec, str | None], Efficiency]


def _ideal(hardware: HardwareSpec, engine: str | None = None) -> Efficiency:
    return IDEAL


def _calibrated(hardware: HardwareSpec, engine: str | None = None) -> Efficiency:
    eff: Efficiency = calibrated.efficiency_for(hardware, engine)
    return eff


def efficiency_source(name: str) -> EfficiencySource:
    """``calibrated``: the fitted table (calibrated.efficiency_for, with the row's engine);
    ``ideal``: the pure roofline, whatever the engine."""
    if name == "ideal":
        return _ideal
    if name == "calibrated":
        return _calibrated
    raise ValueError(f"--efficiency: expected 'calibrated' or 'ideal', got {name!r}")


def _row_entry(row: Measurement) -> dict[str, Any]:
    return {
        "index": row.index,
        "model": row.model_path,
        "system": row.system,
        "backend": row.backend,
        "engine": engine_of_backend(row.backend),
        "mode": row.mode,
        "status": "skipped",
        "reason": None,
        "predicted_tpot_ms": None,
        "measured_tpot_ms": row.tpot_ms,
        "predicted_ttft_ms": None,
        "measured_ttft_ms": row.ttft_ms,
    }


def validate_rows(
    rows: Sequence[Measurement],
    efficiency: EfficiencySource,
    warmup_fraction: float = BENCHMARK_WARMUP_FRACTION,
) -> list[dict[str, Any]]:
    """One entry per row, in order: predicted, or skipped with the reason. Each row is predicted
    with the efficiency of its hardware and its serving engine (the ``backend`` column)."""
    out: list[dict[str, Any]] = []
    for row in rows:
        entry = _row_entry(row)
        plan = resolve(row)
        if isinstance(plan, Skip):
            entry["reason"] = plan.reason
            out.append(entry)
            continue
        engine = engine_of_backend(row.backend)
        pred = predict(plan, partial(_for_engine, efficiency, engine), warmup_fraction)
        if not pred.fits or not (math.isfinite(pred.tpot_seconds) and math.isfinite(pred.ttft_seconds)):
            entry["reason"] = _does_not_fit(plan)
            out.append(entry)
            continue
        entry.update(
            status="predicted",
            predicted_tpot_ms=pred.tpot_seconds * 1e3,
            predicted_ttft_ms=pred.ttft_seconds * 1e3,
        )
        out.append(entry)
    return out


def _for_engine(efficiency: EfficiencySource, engine: str | None, hardware: HardwareSpec) -> Efficiency:
    return efficiency(hardware, engine)


def _does_not_fit(plan: Plan) -> str:
    return (
        f"does not fit: the weights leave no room for one request's KV cache on "
        f"{plan.parallel.devices} × {plan.hardware.name} ({plan.hardware.memory_bytes / 1e9:.0f} GB each in the catalog)"
    )


def _stats(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    done = [e for e in entries if e["status"] == "predicted"]
    out: dict[str, Any] = summary(
        [e["predicted_tpot_ms"] for e in done],
        [e["measured_tpot_ms"] for e in done],
        [e["predicted_ttft_ms"] for e in done],
        [e["measured_ttft_ms"] for e in done],
    )
    out["skipped"] = len(entries) - len(done)
    return out


def summarize(entries: Sequence[dict[str, Any]], efficiency: str) -> dict[str, Any]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for e in entries:
        groups.setdefault((e["model"], e["system"], e["backend"]), []).append(e)
    reasons: dict[str, int] = {}
    for e in entries:
        if e["status"] == "skipped":
            reasons[e["reason"]] = reasons.get(e["reason"], 0) + 1
    by_mode = {
        mode: _stats([e for e in entries if e["mode"] == mode])
        for mode in ("agg", "disagg")
        if any(e["mode"] == mode for e in entries)
    }
    return {
        "efficiency": efficiency,
        "overall": _stats(entries),
        "by_mode": by_mode,
        "groups": [
            {"model": k[0], "system": k[1], "backend": k[2], **_stats(v)} for k, v in sorted(groups.items())
        ],
        "skip_reasons": dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
    }


def _line(label: str, s: dict[str, Any]) -> str:
    cells = [f"{label:58s} {s['rows']:5d} {s['skipped']:5d}"]
    for m in (s["tpot"], s["ttft"]):
        cells.append(
            f" {fmt_fraction(m['median_abs_rel_error']):>7s} {fmt_fraction(m['p90_abs_rel_error']):>7s} "
            f"{fmt_signed_fraction(m['median_rel_error']):>7s} {fmt_corr(m['spearman']):>6s}"
        )
    return " ".join(cells)


def render_table(result: dict[str, Any], source: str) -> str:
    columns = f"{'median':>7s} {'p90':>7s} {'bias':>7s} {'ρ':>6s}"
    width = len(columns)
    head = (
        f"{'model / system / backend':58s} {'rows':>5s} {'skip':>5s}  {'TPOT':<{width}s}  {'TTFT':<{width}s}\n"
        f"{'':58s} {'':>5s} {'':>5s}  {columns}  {columns}"
    )
    lines = [
        f"{source}: efficiency {result['efficiency']}; |predicted/measured − 1| (median, p90), "
        "bias = median of predicted/measured − 1 (> 0: predictions slower than measured), Spearman ρ",
        head,
    ]
    for g in result["groups"]:
        lines.append(_line(f"{g['model']} / {g['system']} / {g['backend'] or '-'}", g))
    lines.append("")
    for mode, s in result["by_mode"].items():
        lines.append(_line(f"all {mode}", s))
    lines.append(_line("overall", result["overall"]))
    if result["skip_reasons"]:
        lines.append("\nskipped rows:")
        for reason, n in result["skip_reasons"].items():
            lines.append(f"  {n:5d}  {reason}")
    return "\n".join(lines)


def write_plots(entries: Sequence[dict[str, Any]], directory: Path, efficiency: str) -> list[Path]:
    """Predicted-versus-measured log-log scatter plots of TPOT and TTFT (matplotlib, Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    directory.mkdir(parents=True, exist_ok=True)
    done = [e for e in entries if e["status"] == "predicted"]
    models = sorted({e["model"] for e in done})
    paths = []
    for metric, title in (("tpot", "TPOT"), ("ttft", "TTFT")):
        fig = Figure(figsize=(7, 6.5), dpi=120)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        lo, hi = math.inf, 0.0
        for i, model in enumerate(models):
            mine = [e for e in done if e["model"] == model]
            x = [e[f"measured_{metric}_ms"] for e in mine]
            y = [e[f"predicted_{metric}_ms"] for e in mine]
            lo, hi = min(lo, *x, *y), max(hi, *x, *y)
            ax.scatter(x, y, s=9, alpha=0.6, label=f"{model} ({len(mine)})", color=f"C{i % 10}")
        if done:
            span = [lo / 1.2, hi * 1.2]
            ax.plot(span, span, color="black", linewidth=1, label="predicted = measured")
            for factor, style in ((1.25, "--"), (1 / 1.25, "--")):
                ax.plot(span, [v * factor for v in span], color="grey", linewidth=0.8, linestyle=style)
            ax.set_xlim(*span)
            ax.set_ylim(*span)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(f"measured {title} (ms)")
        ax.set_ylabel(f"predicted {title} (ms)")
        ax.set_title(f"{title}: predicted vs measured ({efficiency}; dashed: ±25 %)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        path = directory / f"validate-{metric}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


def run_validate(args: argparse.Namespace) -> int:
    rows = read_measurements(args.measurements)
    entries = validate_rows(rows, efficiency_source(args.efficiency), args.warmup_fraction)
    result = summarize(entries, args.efficiency)
    if args.plot is not None:
        paths = write_plots(entries, args.plot, args.efficiency)
        if args.output != "json":
            print("wrote " + ", ".join(str(p) for p in paths), file=sys.stderr)
    if args.output == "json":
        print(json.dumps({"rows": entries, "summary": result}, indent=2))
    else:
        print(render_table(result, str(args.measurements)))
    return 0


def register(subparsers: _Subparsers) -> None:
    text = "predict measured serving runs (CSV) and report the model's error"
    p = subparsers.add_parser(
        "validate", help=text, description=__doc__.split("\n\n")[1] if __doc__ else text
    )
    p.add_argument("--measurements", required=True, type=Path, metavar="CSV", help="measurements CSV")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--plot", type=Path, metavar="DIR", help="write predicted-vs-measured PNGs here")
    p.add_argument(
        "--efficiency",
        choices=("calibrated", "ideal"),
        default="calibrated",
        help="calibrated fractions of peak (scheduler/calibration/calibrated.py), or the pure roofline",
    )
    p.add_argument(
        "--warmup-fraction",
        type=float,
        default=BENCHMARK_WARMUP_FRACTION,
        help="share of requests arriving in the benchmark's first, simultaneous wave (default %(default)s)",
    )
    p.set_defaults(func=run_validate)


__all__ = [
    "EfficiencySource",
    "efficiency_source",
    "register",
    "render_table",
    "run_validate",
    "summarize",
    "validate_rows",
    "write_plots",
]
