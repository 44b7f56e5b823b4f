"""``hetsched validate`` and ``hetsched calibrate``: the serving model against measured runs.

Predicts every row of a measurements CSV with the serving model the planner uses
(``serving.predict_colocated`` / ``predict_disaggregated``) and reports, per (model, system, backend)
and overall, the median and p90 absolute relative error of TPOT and TTFT and the Spearman rank
correlation. A row that cannot be predicted is reported as ``skipped`` with its reason. The row's
``backend`` names the serving engine (``engines.engine_of_backend``), whose fitted terms the
calibrated efficiency uses; an unknown backend gets the shared values.

``hetsched validate --measurements CSV [-o json] [--plot DIR] [--efficiency calibrated|ideal]``
does the above. ``hetsched calibrate [--measurements CSV] [--write] [-o json] [--no-cv]
[--fix NAME=VALUE] [--free NAME] ...`` fits the efficiencies (:mod:`.fit`), cross-validates and
prints the report; ``--write`` writes the fitted table, ``estimator/data/efficiency.json``
(``make calibrate``). The ablation options report only.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from hetsched.scheduler.calibration.dataset import (
    BENCHMARK_WARMUP_FRACTION,
    Lookup,
    Measurement,
    Plan,
    Skip,
    predict,
    read_measurements,
    resolve,
    resolve_all,
)
from hetsched.scheduler.calibration.design import PARAMETERS, build_dataset
from hetsched.scheduler.calibration.errors import fmt_corr, fmt_fraction, fmt_signed_fraction, summary
from hetsched.scheduler.calibration.fit import (
    CPU_FIXED,
    CPU_TTFT_WEIGHT,
    ENGINE_STAGE,
    FIT_FIXED,
    PER_ENGINE,
    PER_FAMILY,
    RESIDUAL,
    RESIDUALS,
    FitResult,
    cross_validate,
    cross_validate_cpu,
    error_statistics,
    fit,
    fit_cpu,
    predict_with,
)
from hetsched.scheduler.catalog.hardware import IDEAL, Efficiency, HardwareSpec
from hetsched.scheduler.engines import engine_of_backend
from hetsched.scheduler.estimator.efficiency import FITTED_PATH, efficiency_for

_Subparsers = Any  # argparse's private _SubParsersAction
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MEASUREMENTS = REPO_ROOT / "benchmarks" / "data" / "serving-measurements.csv"
#: The CPU campaign (``make bench-cpu``): vLLM CPU runs on a probed machine, and its entry.
DEFAULT_CPU_MEASUREMENTS = REPO_ROOT / "benchmarks" / "data" / "cpu" / "measurements.csv"
DEFAULT_CPU_HARDWARE = REPO_ROOT / "benchmarks" / "data" / "cpu" / "hardware.yaml"
#: (hardware, serving engine or None) → efficiency.
EfficiencySource = Callable[[HardwareSpec, str | None], Efficiency]


def _ideal(hardware: HardwareSpec, engine: str | None = None) -> Efficiency:
    return IDEAL


def _calibrated(hardware: HardwareSpec, engine: str | None = None) -> Efficiency:
    eff: Efficiency = efficiency_for(hardware, engine)
    return eff


def efficiency_source(name: str) -> EfficiencySource:
    """``calibrated``: the fitted table (efficiency_for, with the row's engine);
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
        "measured_tpot_ms": row.tpot_ms if math.isfinite(row.tpot_ms) else None,
        "predicted_ttft_ms": None,
        "measured_ttft_ms": row.ttft_ms if math.isfinite(row.ttft_ms) else None,
    }


def validate_rows(
    rows: Sequence[Measurement],
    efficiency: EfficiencySource,
    warmup_fraction: float = BENCHMARK_WARMUP_FRACTION,
    lookup: Lookup | None = None,
) -> list[dict[str, Any]]:
    """One entry per row, in order: predicted, or skipped with the reason. Each row is predicted
    with the efficiency of its hardware and its serving engine (the ``backend`` column); ``lookup``
    says where models and hardware come from (model config paths, a hardware file)."""
    out: list[dict[str, Any]] = []
    lk = lookup or Lookup()
    for row in rows:
        entry = _row_entry(row)
        plan = resolve(row, lookup=lk)
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


def hardware_file_entries(path: Path | None) -> dict[str, HardwareSpec]:
    """The entries of a ``--hardware-file`` (the catalog's YAML format, ``hetsched hardware
    probe``'s output), by name, each with its calibrated efficiency (``efficiency_for``: a CPU
    entry gets the CPU fit)."""
    if path is None:
        return {}
    from hetsched.scheduler.catalog.hardware_catalog import load_hardware_yaml

    return {hw.name: hw for hw in load_hardware_yaml(Path(path))}


def lookup_for(measurements: Path, hardware_file: Path | None) -> Lookup:
    """Models as paths relative to the CSV's folder; hardware from the file, then the catalog."""
    return Lookup(base_dir=Path(measurements).resolve().parent, hardware=hardware_file_entries(hardware_file))


def run_validate(args: argparse.Namespace) -> int:
    rows = read_measurements(args.measurements)
    lookup = lookup_for(args.measurements, args.hardware_file)
    entries = validate_rows(rows, efficiency_source(args.efficiency), args.warmup_fraction, lookup)
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
    p.add_argument(
        "--hardware-file",
        type=Path,
        metavar="YAML",
        help="custom hardware entries (catalog YAML format, e.g. `hetsched hardware probe` output): "
        "rows whose system names one of them use it",
    )
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument("--plot", type=Path, metavar="DIR", help="write predicted-vs-measured PNGs here")
    p.add_argument(
        "--efficiency",
        choices=("calibrated", "ideal"),
        default="calibrated",
        help="calibrated fractions of peak (scheduler/estimator/data/efficiency.json), or the pure roofline",
    )
    p.add_argument(
        "--warmup-fraction",
        type=float,
        default=BENCHMARK_WARMUP_FRACTION,
        help="share of requests arriving in the benchmark's first, simultaneous wave (default %(default)s)",
    )
    p.set_defaults(func=run_validate)
    _register_calibrate(subparsers)


# ---- hetsched calibrate -----------------------------------------------------------------------------


def _num(x: float) -> float:
    """Four significant digits: what the fitted table keeps (and the committed-table test compares)."""
    return float(f"{x:.4g}")


def fitted_document(
    family_fit: FitResult,
    generic_fit: FitResult,
    stats: dict[str, Any],
    source: str,
    date: str,
    cpu_fit: FitResult | None = None,
    cpu_source: str = "",
) -> dict[str, Any]:
    """The fitted table as ``estimator/data/efficiency.json`` holds it (``efficiency.load_fitted``);
    with ``cpu_fit``, the ``cpu`` family (fitted on its own rows, ``cpu_source``)."""

    def entry(result: FitResult, family: str, note: str) -> dict[str, Any]:
        p = result.params[result.families.index(family)][: len(PARAMETERS)]
        return {**{name: _num(v) for name, v in zip(PARAMETERS, p, strict=True)}, "fitted_by": note}

    how = f"least squares on log error ({date})"
    families = {f: entry(family_fit, f, f"{how}: {f} rows") for f in family_fit.families}
    families["generic"] = entry(generic_fit, "generic", f"{how}: one set for all rows")
    if cpu_fit is not None:
        families["cpu"] = entry(cpu_fit, "generic", f"{how}: vLLM CPU rows of {cpu_source}")
    return {
        "written_by": "hetsched calibrate (make calibrate): edit the fit, not this file; docs/calibration.md",
        "fit_date": date,
        "source": f"{source}; cpu: {cpu_source}" if cpu_fit is not None else source,
        "families": families,
        "engines": {
            e: {name: _num(v) for name, v in family_fit.engine_values(e).items()} for e in family_fit.engines
        },
        "statistics": json.loads(json.dumps(stats, sort_keys=True)),
    }


def write_fitted(doc: Mapping[str, Any], path: Path = FITTED_PATH) -> None:
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


def calibrate(
    measurements: Path,
    cross_validation: bool = True,
    fixed: Mapping[str, float] | None = None,
    per_engine: Sequence[str] | None = None,
    engine_stage: str | None = None,
    residual: str | None = None,
    cpu_measurements: Path | None = None,
    cpu_hardware: Path | None = None,
    cpu_fixed: Mapping[str, float] | None = None,
    cpu_ttft_weight: float | None = None,
) -> dict[str, Any]:
    rows = read_measurements(measurements)
    resolved = resolve_all(rows)
    plans = [r for r in resolved if isinstance(r, Plan)]
    skipped = [r for r in resolved if isinstance(r, Skip)]
    ds = build_dataset(plans)
    options: dict[str, Any] = {
        "fixed": fixed,
        "per_engine": per_engine,
        "engine_stage": engine_stage,
        "residual": residual,
    }
    family_fit = fit(ds, **options)
    generic_fit = fit(ds, shared=True, **options)
    ttft, tpot = predict_with(ds, family_fit)
    everything = np.ones(len(ds.plans), dtype=np.bool_)
    g_ttft, g_tpot = predict_with(ds, generic_fit)
    reasons: dict[str, int] = {}
    for s in skipped:
        reasons[s.reason] = reasons.get(s.reason, 0) + 1
    for _, why in ds.unfit:
        reasons[why] = reasons.get(why, 0) + 1
    report: dict[str, Any] = {
        "measurements": str(measurements),
        "rows": len(rows),
        "fitted_rows": len(ds.plans),
        "skipped_rows": len(skipped) + len(ds.unfit),
        "skip_reasons": reasons,
        "families": {
            f: dict(zip(PARAMETERS, family_fit.params[i].tolist(), strict=True))
            for i, f in enumerate(family_fit.families)
        },
        "generic": dict(zip(PARAMETERS, generic_fit.params[0].tolist(), strict=True)),
        "engines": {e: family_fit.engine_values(e) for e in family_fit.engines},
        "fit": {
            "cost": family_fit.cost,
            "evaluations": family_fit.evaluations,
            "message": family_fit.message,
        },
        "in_sample": error_statistics(ds, ttft, tpot, everything),
        "in_sample_generic": error_statistics(ds, g_ttft, g_tpot, everything),
    }
    if cross_validation:
        report.update(cross_validate(ds, **options))
    cpu_fit = None
    if cpu_measurements is not None:
        report["cpu"], cpu_fit = calibrate_cpu(
            cpu_measurements, cpu_hardware, cross_validation, cpu_fixed, cpu_ttft_weight
        )
    report["_fits"] = (family_fit, generic_fit, cpu_fit)
    return report


def calibrate_cpu(
    measurements: Path,
    hardware_file: Path | None,
    cross_validation: bool = True,
    fixed: Mapping[str, float] | None = None,
    ttft_weight: float | None = None,
) -> tuple[dict[str, Any], FitResult]:
    """The CPU fit (``fit.fit_cpu``) of a CPU campaign's rows, its in-sample and leave-one-shape-out
    errors (``ttft_weight``: default ``fit.CPU_TTFT_WEIGHT``)."""
    rows = read_measurements(measurements)
    resolved = resolve_all(rows, lookup_for(measurements, hardware_file))
    plans = [r for r in resolved if isinstance(r, Plan)]
    skipped = [r for r in resolved if isinstance(r, Skip)]
    if not plans:
        reasons = sorted({s.reason for s in skipped})
        raise ValueError(f"{measurements}: no CPU row can be predicted ({'; '.join(reasons[:3])})")
    ds = build_dataset(plans)
    result = fit_cpu(ds, fixed=fixed, ttft_weight=ttft_weight)
    ttft, tpot = predict_with(ds, result)
    everything = np.ones(len(ds.plans), dtype=np.bool_)
    report: dict[str, Any] = {
        "measurements": str(measurements),
        "hardware": sorted({p.hardware.name for p in ds.plans}),
        "rows": len(rows),
        "fitted_rows": len(ds.plans),
        "skipped_rows": len(skipped) + len(ds.unfit),
        "parameters": dict(zip(PARAMETERS, result.params[0].tolist(), strict=True)),
        "fixed": dict(CPU_FIXED if fixed is None else fixed),
        "ttft_weight": CPU_TTFT_WEIGHT if ttft_weight is None else ttft_weight,
        "in_sample": error_statistics(ds, ttft, tpot, everything),
        "in_sample_groups": {
            name: error_statistics(ds, ttft, tpot, ds.group == g) for g, name in enumerate(ds.groups)
        },
    }
    if cross_validation:
        cv = cross_validate_cpu(ds, fixed, ttft_weight)
        report["leave_one_shape_out"] = cv["pooled"]
        report["leave_one_shape_out_groups"] = cv["groups"]
    return report, result


#: How the report prints each parameter: (symbol, multiplier, unit).
_SHOW: dict[str, tuple[str, float, str]] = {
    "bandwidth": ("η_b", 1.0, ""),
    "compute": ("η_c", 1.0, ""),
    "step_overhead_seconds": ("t_step", 1e3, " ms"),
    "collective_latency_seconds": ("t_coll", 1e6, " µs"),
    "link_efficiency": ("η_link", 1.0, ""),
    "layer_overhead_seconds": ("t_layer", 1e6, " µs"),
    "experts_bandwidth": ("η_eb", 1.0, ""),
    "experts_compute": ("η_ec", 1.0, ""),
    "request_overhead_seconds": ("t_request", 1e3, " ms"),
    "overlap": ("overlap", 1.0, ""),
}


def _fmt_parameter(name: str, value: float) -> str:
    symbol, mult, unit = _SHOW.get(name, (name, 1.0, ""))
    return f"{symbol} {value * mult:.3g}{unit}"


def print_report(report: dict[str, Any]) -> None:
    print(
        f"{report['measurements']}: {report['rows']} rows, {report['fitted_rows']} fitted, "
        f"{report['skipped_rows']} skipped"
    )
    for reason, n in sorted(report["skip_reasons"].items(), key=lambda kv: -kv[1]):
        print(f"  skipped {n:4d}: {reason}")
    print("\nparameters:")
    for family, p in [*report["families"].items(), ("generic", report["generic"])]:
        print(f"  {family:18s} " + "  ".join(_fmt_parameter(name, v) for name, v in p.items()))
    for engine, p in report["engines"].items():
        print(f"  engine {engine:11s} " + "  ".join(_fmt_parameter(name, v) for name, v in p.items()))

    def line(label: str, s: dict[str, Any]) -> None:
        print(
            f"  {label:34s} rows {s['rows']:5d}  TPOT med {fmt_fraction(s['tpot']['median_abs_rel_error']):>6s} "
            f"p90 {fmt_fraction(s['tpot']['p90_abs_rel_error']):>6s} "
            f"bias {fmt_signed_fraction(s['tpot']['median_rel_error']):>6s} ρ {fmt_corr(s['tpot']['spearman'])}  "
            f"TTFT med {fmt_fraction(s['ttft']['median_abs_rel_error']):>6s} "
            f"p90 {fmt_fraction(s['ttft']['p90_abs_rel_error']):>6s} "
            f"bias {fmt_signed_fraction(s['ttft']['median_rel_error']):>6s} ρ {fmt_corr(s['ttft']['spearman'])}"
        )

    print("\nin-sample (family fit):")
    for mode, s in report["in_sample"].items():
        line(mode, s)
    print("in-sample (generic fit, one set for all hardware):")
    for mode, s in report["in_sample_generic"].items():
        line(mode, s)
    if "leave_one_group_out" in report:
        print("\nleave-one-group-out (fit without the group, predict it), pooled:")
        for mode, s in report["leave_one_group_out"]["pooled"].items():
            line(mode, s)
        print("  per group:")
        for name, st in report["leave_one_group_out"]["groups"].items():
            for mode, s in st.items():
                if mode != "all":
                    line(f"{name} [{mode}]", s)
        print("\nleave-one-family-out (generic fit without the family, predict it):")
        for family, st in report["leave_one_family_out"].items():
            for mode, s in st.items():
                if mode != "all":
                    line(f"{family} [{mode}]", s)
    cpu = report.get("cpu")
    if cpu:
        print(
            f"\nCPU ({cpu['measurements']}, {', '.join(cpu['hardware'])}): {cpu['rows']} rows, "
            f"{cpu['fitted_rows']} fitted, {cpu['skipped_rows']} skipped; TTFT weight {cpu['ttft_weight']:g}"
        )
        print("  cpu                " + "  ".join(_fmt_parameter(n, v) for n, v in cpu["parameters"].items()))
        line("in-sample", cpu["in_sample"]["all"])
        for name, st in cpu["in_sample_groups"].items():
            line(f"  {name}", st["all"])
        if "leave_one_shape_out" in cpu:
            line("leave-one-shape-out", cpu["leave_one_shape_out"]["all"])
            for name, st in cpu["leave_one_shape_out_groups"].items():
                line(f"  {name}", st["all"])


def _fit_options(args: argparse.Namespace) -> tuple[dict[str, float], tuple[str, ...] | None]:
    """(parameters held and their values, parameters fitted per engine) of the command line."""
    fixed: dict[str, float] = dict(FIT_FIXED)
    for name in args.free:
        if name not in PARAMETERS:
            raise ValueError(f"--free {name!r}: expected one of {', '.join(PARAMETERS)}")
        fixed.pop(name, None)
    for item in args.fix:
        name, sep, value = item.partition("=")
        if not sep or name not in PARAMETERS:
            raise ValueError(f"--fix {item!r}: expected NAME=VALUE with NAME one of {', '.join(PARAMETERS)}")
        try:
            fixed[name] = float(value)
        except ValueError:
            raise ValueError(f"--fix {item!r}: {value!r} is not a number") from None
    per_engine: tuple[str, ...] | None = None
    if args.per_engine is not None:
        per_engine = tuple(n.strip() for n in args.per_engine.split(",") if n.strip())
        bad = [n for n in per_engine if n not in PARAMETERS or n in PER_FAMILY]
        if bad:
            raise ValueError(
                f"--per-engine {bad}: expected names among {', '.join(PARAMETERS)} (not {PER_FAMILY})"
            )
    ablation = per_engine is not None or args.engine_stage is not None or args.residual is not None
    if (fixed != FIT_FIXED or ablation) and args.write:
        raise ValueError(
            "--fix, --free, --per-engine, --engine-stage and --residual are for ablations: "
            "they cannot be combined with --write"
        )
    return fixed, per_engine


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO_ROOT))
    except ValueError:
        return path.name


def _cpu_fit_options(args: argparse.Namespace) -> dict[str, float] | None:
    """Parameters the CPU fit holds (``--cpu-fix``, ``--cpu-free``: ablations, report only)."""
    if not args.cpu_fix and not args.cpu_free:
        return None
    fixed = dict(CPU_FIXED)
    for name in args.cpu_free:
        if name not in PARAMETERS:
            raise ValueError(f"--cpu-free {name!r}: expected one of {', '.join(PARAMETERS)}")
        fixed.pop(name, None)
    for item in args.cpu_fix:
        name, sep, value = item.partition("=")
        if not sep or name not in PARAMETERS:
            raise ValueError(
                f"--cpu-fix {item!r}: expected NAME=VALUE with NAME one of {', '.join(PARAMETERS)}"
            )
        try:
            fixed[name] = float(value)
        except ValueError:
            raise ValueError(f"--cpu-fix {item!r}: {value!r} is not a number") from None
    if args.write:
        raise ValueError("--cpu-fix and --cpu-free are for ablations: they cannot be combined with --write")
    return fixed


def _cpu_ttft_weight(args: argparse.Namespace) -> float | None:
    """``--cpu-ttft-weight`` (an ablation, report only)."""
    weight: float | None = args.cpu_ttft_weight
    if weight is None:
        return None
    if not weight > 0:
        raise ValueError(f"--cpu-ttft-weight {weight}: must be a positive number")
    if args.write:
        raise ValueError("--cpu-ttft-weight is for ablations: it cannot be combined with --write")
    return weight


def cmd_calibrate(args: argparse.Namespace) -> int:
    fixed, per_engine = _fit_options(args)
    cpu_fixed = _cpu_fit_options(args)
    cpu_ttft_weight = _cpu_ttft_weight(args)
    cpu_csv = None if args.cpu_measurements in (None, Path("none")) else args.cpu_measurements
    if cpu_csv == DEFAULT_CPU_MEASUREMENTS and not cpu_csv.exists():
        cpu_csv = None  # no CPU campaign in this checkout
    report = calibrate(
        args.measurements,
        cross_validation=not args.no_cv,
        fixed=fixed,
        per_engine=per_engine,
        engine_stage=args.engine_stage,
        residual=args.residual,
        cpu_measurements=cpu_csv,
        cpu_hardware=args.cpu_hardware_file,
        cpu_fixed=cpu_fixed,
        cpu_ttft_weight=cpu_ttft_weight,
    )
    family_fit, generic_fit, cpu_fit = report.pop("_fits")
    if args.write:
        stats = {
            "rows": report["rows"],
            "fitted_rows": report["fitted_rows"],
            "in_sample": _round(report["in_sample"]),
            "leave_one_group_out": _round(report.get("leave_one_group_out", {}).get("pooled", {})),
            "leave_one_family_out": _round(report.get("leave_one_family_out", {})),
        }
        cpu = report.get("cpu")
        if cpu is not None:
            stats["cpu"] = _round(
                {
                    "hardware": cpu["hardware"],
                    "rows": cpu["rows"],
                    "fitted_rows": cpu["fitted_rows"],
                    "in_sample": cpu["in_sample"],
                    "leave_one_shape_out": cpu.get("leave_one_shape_out", {}),
                    "leave_one_shape_out_groups": {
                        name: st["all"] for name, st in cpu.get("leave_one_shape_out_groups", {}).items()
                    },
                }
            )
        write_fitted(
            fitted_document(
                family_fit,
                generic_fit,
                stats,
                _relative(args.measurements),
                args.date,
                cpu_fit,
                _relative(cpu_csv) if cpu_csv is not None else "",
            )
        )
    if args.output == "json":
        print(json.dumps(_round(report), indent=2, sort_keys=True))
    else:
        print_report(report)
        if args.write:
            print(f"\nwrote {FITTED_PATH}")
    return 0


def _register_calibrate(subparsers: _Subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="fit the efficiencies to measured serving runs (--write: estimator/data/efficiency.json)",
        description="Fit the roofline efficiencies per hardware family to measured serving runs, "
        "cross-validate, and (--write) write the fitted table.",
    )
    p.add_argument("--measurements", type=Path, default=DEFAULT_MEASUREMENTS, help="measurements CSV")
    p.add_argument("--write", action="store_true", help=f"write the fitted table to {FITTED_PATH.name}")
    p.add_argument("--no-cv", action="store_true", help="skip the cross-validation")
    p.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"hold a parameter at a value instead of fitting it (ablation; repeatable): {', '.join(PARAMETERS)}",
    )
    p.add_argument(
        "--free",
        action="append",
        default=[],
        metavar="NAME",
        help=f"fit a parameter the default fit holds ({', '.join(f'{k}={v:g}' for k, v in FIT_FIXED.items())})",
    )
    p.add_argument(
        "--per-engine",
        default=None,
        metavar="NAMES",
        help=f"comma-separated parameters fitted per serving engine (ablation; default {','.join(PER_ENGINE)}; '' for none)",
    )
    p.add_argument(
        "--engine-stage",
        choices=("refine", "joint"),
        default=None,
        help=f"how the engine terms are fitted (ablation; default {ENGINE_STAGE})",
    )
    p.add_argument(
        "--residual",
        choices=tuple(RESIDUALS),
        default=None,
        help=f"how a row's error is measured (ablation; default {RESIDUAL})",
    )
    p.add_argument(
        "--cpu-measurements",
        type=Path,
        default=DEFAULT_CPU_MEASUREMENTS,
        help="CPU serving runs for the CPU fit ('none' to skip; default: the make bench-cpu data)",
    )
    p.add_argument(
        "--cpu-hardware-file",
        type=Path,
        default=DEFAULT_CPU_HARDWARE,
        help="hardware entries the CPU rows name (default: the probed machine of the CPU data)",
    )
    p.add_argument("--cpu-fix", action="append", default=[], metavar="NAME=VALUE", help="CPU fit ablation")
    p.add_argument("--cpu-free", action="append", default=[], metavar="NAME", help="CPU fit ablation")
    p.add_argument(
        "--cpu-ttft-weight",
        type=float,
        metavar="W",
        help=f"CPU fit ablation: TTFT's weight against TPOT's 1 (default {CPU_TTFT_WEIGHT})",
    )
    p.add_argument("--date", default=_dt.date.today().isoformat(), help="fit date recorded with --write")
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_calibrate)


__all__ = [
    "EfficiencySource",
    "calibrate",
    "efficiency_source",
    "fitted_document",
    "print_report",
    "register",
    "render_table",
    "run_validate",
    "summarize",
    "validate_rows",
    "write_fitted",
    "write_plots",
]
