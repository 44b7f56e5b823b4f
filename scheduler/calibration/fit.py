"""Fit the roofline efficiencies to measured serving runs (``make calibrate``).

Procedure (docs/calibration.md has the why):

1. Read the measurements CSV; map each row onto the estimator (:mod:`.dataset`); rows that cannot
   be predicted are listed with their reasons and left out.
2. For every predictable row, compute once what does not depend on the efficiencies: the FLOPs
   and bytes per operator of its decode and prefill steps, collectives, KV capacity and running
   batch, queue shape (``serving.colocated_setup`` / ``disaggregated_setup``). Rows whose weights do
   not fit in the catalog memory are left out.
3. Parameters: the numbers of ``Efficiency`` (``PARAMETER_SPECS``: fractions of peak bandwidth,
   of peak FLOP/s and of link bandwidth; the routed experts' bandwidth and FLOP/s relative to dense
   GEMMs; fixed costs per layer, per step and per request; latency per collective), within
   physical bounds; the link efficiency (``PER_FAMILY``) per hardware family, the others shared by
   all families; ``FIT_FIXED`` holds the per-step cost and the collective latency at 0 (not
   identifiable next to the per-layer cost).
   Residuals: ``log(predicted / measured)`` of TPOT, and of TTFT weighted by
   ``TTFT_WEIGHT`` (TTFT also carries queueing and benchmark start-up that the model only
   approximates). Identical measurements listed twice (DeepSeek-V3 and -R1 rows are the same runs)
   count once. ``scipy.optimize.least_squares`` (trust-region reflective, ``soft_l1`` loss with
   scale ``LOSS_SCALE``: quadratic for errors below ~10 %, linear beyond, so a few runs the model
   cannot describe — speculative decoding, engine-specific kernels — do not drag every parameter)
   from a fixed start: deterministic.
   ``PER_ENGINE`` (the fixed costs per request and per layer: engine software) get one value per
   serving engine (the CSV's ``backend``, ``engines.engine_of_backend``), fitted jointly with the
   rest; their shared values (an unknown engine's) are then fitted over all rows, the rest held.
4. The ``generic`` entry is the same fit with one parameter set for all families.
5. Leave-one-group-out cross-validation: for each (model architecture, hardware) group, fit without
   it and predict it; and leave-one-family-out: fit the generic set without a family and predict it
   (new hardware).

``python -m hetsched.scheduler.calibration.fit [--measurements CSV] [--write] [-o json]
[--fix NAME=VALUE] [--free NAME]`` (the last two: ablations, report only).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from hetsched.scheduler.calibration import calibrated
from hetsched.scheduler.calibration.dataset import (
    BENCHMARK_WARMUP_FRACTION,
    Plan,
    Skip,
    architecture_key,
    group_labels,
    kv_transfer_bandwidth,
    read_measurements,
    resolve_all,
)
from hetsched.scheduler.calibration.metrics import fmt_corr, fmt_fraction, fmt_signed_fraction, summary
from hetsched.scheduler.catalog.hardware import Efficiency
from hetsched.scheduler.engines import engine_of_backend
from hetsched.scheduler.serving import (
    EfficiencyTerms,
    StepTerms,
    colocated_setup,
    colocated_times,
    disaggregated_setup,
    disaggregated_times,
)
from scipy.optimize import least_squares

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MEASUREMENTS = REPO_ROOT / "benchmarks" / "data" / "serving-measurements.csv"
CALIBRATED_MODULE = Path(__file__).resolve().parent / "calibrated.py"


@dataclass(frozen=True, slots=True)
class Parameter:
    """One fitted number of :class:`Efficiency`: its physical bounds, start and scale, and the value
    that leaves the pure roofline unchanged (``neutral``, ``IDEAL``'s)."""

    name: str
    lower: float
    upper: float
    start: float
    scale: float
    neutral: float


PARAMETER_SPECS: tuple[Parameter, ...] = (
    Parameter("bandwidth", 0.2, 1.0, 0.7, 0.1, 1.0),
    Parameter("compute", 0.1, 1.0, 0.5, 0.1, 1.0),
    Parameter("step_overhead_seconds", 0.0, 0.05, 1e-3, 1e-3, 0.0),
    Parameter("collective_latency_seconds", 0.0, 200e-6, 10e-6, 10e-6, 0.0),
    Parameter("link_efficiency", 0.05, 1.0, 0.7, 0.1, 1.0),
    Parameter("layer_overhead_seconds", 0.0, 1e-3, 20e-6, 10e-6, 0.0),
    Parameter("experts_bandwidth", 0.1, 1.0, 0.7, 0.1, 1.0),
    Parameter("experts_compute", 0.05, 1.0, 0.5, 0.1, 1.0),
    Parameter("request_overhead_seconds", 0.0, 1.0, 20e-3, 10e-3, 0.0),
)
PARAMETERS = tuple(p.name for p in PARAMETER_SPECS)
LOWER = np.array([p.lower for p in PARAMETER_SPECS])
UPPER = np.array([p.upper for p in PARAMETER_SPECS])
START = np.array([p.start for p in PARAMETER_SPECS])
SCALE = np.array([p.scale for p in PARAMETER_SPECS])
NEUTRAL = np.array([p.neutral for p in PARAMETER_SPECS])
#: Parameters fitted per hardware family; the others are shared by all families. Cross-validation
#: chose this split (docs/calibration.md §4): the achievable link bandwidth differs between GPU
#: generations (NVLink 4 vs 5 and their collective implementations), while the fractions of peak
#: bandwidth and FLOP/s and the fixed costs are properties of the kernels and the host that
#: transfer; fitting them per family overfits (leave-one-group-out TPOT error rises).
PER_FAMILY = ("link_efficiency",)
#: Parameters held at a value instead of fitted (docs/calibration.md §4, ablations). On this data
#: neither can be told apart from the fixed cost per layer, and fitting them lets the fixed costs
#: trade off between models instead of following the layer count:
#: * the fixed cost per step (every model has one layer count): leave-one-group-out TPOT median
#:   17.7 % held at 0, 19.3 % fitted (kernel launches, gaps and syncs are per layer; CUDA graphs
#:   hide the per-step host work);
#: * the latency per collective (NVLink one-shot all-reduces, fused with the norm, cost a few µs,
#:   inside the per-layer cost): 16.4 % held at 0, 17.7 % fitted (3.5 µs).
#: The fields stay in ``Efficiency`` for hardware that has such costs (PCIe, multi-node).
FIT_FIXED: dict[str, float] = {"step_overhead_seconds": 0.0, "collective_latency_seconds": 0.0}
#: Parameters fitted per serving engine (``engines.engine_of_backend`` of the CSV's ``backend``):
#: the terms that are engine software rather than hardware (docs/calibration.md §4). They are
#: fitted in a second stage, with every other parameter held at the engine-agnostic fit, so the
#: shared values (what a request with an unknown engine gets) are that fit's, unchanged.
PER_ENGINE: tuple[str, ...] = ("request_overhead_seconds", "layer_overhead_seconds")
ENGINE_STAGE = "joint"
TTFT_WEIGHT = 0.1
#: What each row's error is measured as, for (TPOT, TTFT). ``log``: log(predicted / measured),
#: symmetric (a factor too slow costs as much as the same factor too fast), so the fit has no
#: optimistic bias. The ablations ``relative`` (predicted / measured − 1, the error the report
#: quotes, for both) and ``relative-ttft`` (for TTFT only) bound an under-prediction's error at 1:
#: they lower the reported medians, at the price of predictions biased fast (docs/calibration.md §4),
#: which a planner checking SLOs must not have.
RESIDUALS: dict[str, tuple[str, str]] = {
    "log": ("log", "log"),
    "relative": ("relative", "relative"),
    "relative-ttft": ("log", "relative"),
}
RESIDUAL = "log"
LOSS = "soft_l1"
LOSS_SCALE = 0.1


# ---- the efficiency-independent data --------------------------------------------------------------


def _stack(steps: Sequence[StepTerms]) -> StepTerms:
    width = max(int(s.flops.shape[-1]) for s in steps)

    def ops(name: str) -> Array:
        # Padding operators do nothing (no FLOPs, no bytes) at a non-zero peak.
        out = np.full((len(steps), width), 1.0 if name == "peak_flops" else 0.0)
        for i, s in enumerate(steps):
            v = getattr(s, name)
            out[i, : v.shape[-1]] = v
        return out

    def col(name: str) -> Array:
        return np.array([float(getattr(s, name)) for s in steps], dtype=np.float64)

    per_op = ("flops", "dram_bytes", "weight_bytes", "experts", "peak_flops")
    return StepTerms(**{f.name: ops(f.name) if f.name in per_op else col(f.name) for f in fields(StepTerms)})


@dataclass(frozen=True)
class Block:
    """Rows of one serving mode, stacked."""

    rows: IntArray  # positions in Dataset.plans
    decode: StepTerms
    prefill: StepTerms
    concurrency: Array  # agg: requests per rank; disagg: requests in flight
    running: Array  # agg: running batch per rank; disagg: prefill slots
    output_tokens: Array
    kv_seconds: Array  # disagg


@dataclass(frozen=True)
class Dataset:
    plans: list[Plan]
    families: tuple[str, ...]
    family: IntArray  # per plan
    groups: tuple[str, ...]  # (architecture label, hardware) per group
    group: IntArray  # per plan
    engines: tuple[str, ...]  # canonical engines of the rows (engines.engine_of_backend)
    engine: IntArray  # per plan: index into engines, -1 when the backend names no known engine
    weight: Array  # per plan: 1 / multiplicity of identical measurements
    ttft: Array
    tpot: Array
    disaggregated: npt.NDArray[np.bool_]
    agg: Block | None
    disagg: Block | None
    unfit: list[tuple[Plan, str]]


def _block(plans: list[Plan], rows: list[int], disaggregated: bool) -> Block | None:
    if not rows:
        return None
    decode, prefill, conc, run, out, kv = [], [], [], [], [], []
    for i in rows:
        p = plans[i]
        r = p.row
        if not disaggregated:
            s = colocated_setup(
                p.model,
                p.hardware,
                concurrency=p.concurrency,
                prompt_tokens=r.isl,
                cached_tokens=0,
                output_tokens=r.osl,
                precisions=p.precisions,
                tp=p.parallel.tp,
                dp=p.parallel.dp,
            )
            decode.append(s.decode)
            prefill.append(s.prefill)
            conc.append(s.per_rank)
            run.append(s.running)
            kv.append(0.0)
        else:
            assert p.prefill_parallel is not None
            d = disaggregated_setup(
                p.model,
                p.hardware,
                p.hardware,
                prefill_batch=p.prefill_batch,
                decode_batch=p.decode_batch,
                prompt_tokens=r.isl,
                cached_tokens=0,
                output_tokens=r.osl,
                precisions=p.precisions,
                prefill_tp=p.prefill_parallel.tp,
                prefill_dp=p.prefill_parallel.dp,
                decode_tp=p.parallel.tp,
                decode_dp=p.parallel.dp,
                kv_transfer_bandwidth=kv_transfer_bandwidth(p, p.hardware, p.hardware),
                prefill_workers=p.prefill_workers,
            )
            decode.append(d.decode)
            prefill.append(d.prefill)
            conc.append(p.concurrency)
            run.append(d.prefill_slots)
            kv.append(d.kv_transfer_seconds)
        out.append(r.osl)
    return Block(
        np.array(rows, dtype=np.int64),
        _stack(decode),
        _stack(prefill),
        np.array(conc, dtype=np.float64),
        np.array(run, dtype=np.float64),
        np.array(out, dtype=np.float64),
        np.array(kv, dtype=np.float64),
    )


def _fits(p: Plan) -> str | None:
    from hetsched.scheduler.serving import kv_capacity

    r = p.row
    cap = kv_capacity(
        p.model,
        p.hardware,
        context_tokens=r.isl + r.osl,
        precisions=p.precisions,
        tp=p.parallel.tp,
        dp=p.parallel.dp,
    )
    if cap < 1:
        return (
            f"the weights leave no room for one request's KV cache on {p.parallel.devices} × {p.hardware.name} "
            f"({p.hardware.memory_bytes / 1e9:.0f} GB each in the catalog)"
        )
    return None


def build_dataset(plans: Sequence[Plan]) -> Dataset:
    ok: list[Plan] = []
    unfit: list[tuple[Plan, str]] = []
    for p in plans:
        why = _fits(p)
        if why is None:
            ok.append(p)
        else:
            unfit.append((p, why))
    families = tuple(sorted({calibrated.family_of(p.hardware) for p in ok}))
    family = np.array([families.index(calibrated.family_of(p.hardware)) for p in ok], dtype=np.int64)
    labels = group_labels(ok)
    group_names = [f"{labels[architecture_key(p.model)]} @ {p.hardware_key}" for p in ok]
    groups = tuple(sorted(set(group_names)))
    group = np.array([groups.index(g) for g in group_names], dtype=np.int64)
    keys = [
        (
            architecture_key(p.model),
            p.hardware_key,
            p.row.backend,
            p.row.mode,
            p.row.isl,
            p.row.osl,
            p.parallel,
            p.prefill_parallel,
            p.concurrency,
            p.prefill_batch,
            p.prefill_workers,
            p.row.ttft_ms,
            p.row.tpot_ms,
        )
        for p in ok
    ]
    counts: dict[object, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    weight = np.array([1.0 / counts[k] for k in keys], dtype=np.float64)
    row_engines = [engine_of_backend(p.row.backend) for p in ok]
    engines = tuple(sorted({e for e in row_engines if e is not None}))
    engine = np.array([-1 if e is None else engines.index(e) for e in row_engines], dtype=np.int64)
    dis = np.array([p.disaggregated for p in ok], dtype=np.bool_)
    agg_rows = [i for i, p in enumerate(ok) if not p.disaggregated]
    dis_rows = [i for i, p in enumerate(ok) if p.disaggregated]
    return Dataset(
        ok,
        families,
        family,
        groups,
        group,
        engines,
        engine,
        weight,
        np.array([p.ttft_seconds for p in ok], dtype=np.float64),
        np.array([p.tpot_seconds for p in ok], dtype=np.float64),
        dis,
        _block(ok, agg_rows, False),
        _block(ok, dis_rows, True),
        unfit,
    )


# ---- prediction with a parameter matrix ----------------------------------------------------------


def _eff(params: Array, cells: IntArray) -> EfficiencyTerms:
    p = params[cells]
    return EfficiencyTerms(**{name: p[:, i] for i, name in enumerate(PARAMETERS)})


def predict_all(ds: Dataset, params: Array, cells: IntArray | None = None) -> tuple[Array, Array]:
    """Predicted (TTFT, TPOT) per plan; ``params`` is a table of rows of PARAMETERS and ``cells``
    the row each plan uses (default: one row per family, ``ds.family``)."""
    fam = ds.family if cells is None else cells
    ttft = np.full(len(ds.plans), np.nan)
    tpot = np.full(len(ds.plans), np.nan)
    if ds.agg is not None:
        b = ds.agg
        t = colocated_times(
            b.decode,
            b.prefill,
            concurrency=b.concurrency,
            running=b.running,
            output_tokens=b.output_tokens,
            warmup_fraction=BENCHMARK_WARMUP_FRACTION,
            eff=_eff(params, fam[b.rows]),
        )
        ttft[b.rows], tpot[b.rows] = t.ttft, t.tpot
    if ds.disagg is not None:
        b = ds.disagg
        e = _eff(params, fam[b.rows])
        t = disaggregated_times(
            b.decode,
            b.prefill,
            concurrency=b.concurrency,
            prefill_slots=b.running,
            output_tokens=b.output_tokens,
            kv_transfer_seconds=b.kv_seconds,
            warmup_fraction=BENCHMARK_WARMUP_FRACTION,
            prefill_eff=e,
            decode_eff=e,
        )
        ttft[b.rows], tpot[b.rows] = t.ttft, t.tpot
    return ttft, tpot


def _engine_table(params: Array, engine_params: Array, engine_columns: Sequence[int]) -> Array:
    """Rows (family, engine) of PARAMETERS, family-major, the last engine of each family being the
    shared values (unknown engine): ``params`` with the engine columns replaced."""
    n_f, k = params.shape
    n_e = engine_params.shape[0]
    table = np.repeat(params[:, None, :], n_e + 1, axis=1)
    for j, c in enumerate(engine_columns):
        table[:, :n_e, c] = engine_params[:, j][None, :]
    return np.asarray(table.reshape(n_f * (n_e + 1), k), dtype=np.float64)


@dataclass(frozen=True)
class FitResult:
    families: tuple[str, ...]
    params: Array  # (families, PARAMETERS): the shared values (any engine)
    rows: int
    cost: float
    evaluations: int
    message: str
    engine_names: tuple[str, ...] = ()  # the parameters fitted per engine (PER_ENGINE)
    engines: tuple[str, ...] = ()
    engine_params: Array = field(default_factory=lambda: np.zeros((0, 0)))  # (engines, engine_names)

    def efficiency(self, family: str, fitted_by: str, engine: str | None = None) -> Efficiency:
        """The family's efficiency; with a fitted ``engine``, its engine terms replaced."""
        p = self.params[self.families.index(family)][: len(PARAMETERS)]
        values = {name: float(v) for name, v in zip(PARAMETERS, p, strict=True)}
        values.update(self.engine_values(engine))
        return Efficiency(**values, fitted_by=fitted_by)

    def engine_values(self, engine: str | None) -> dict[str, float]:
        """The engine's fitted terms (empty for an engine the fit has not seen)."""
        if engine is None or engine not in self.engines:
            return {}
        row = self.engine_params[self.engines.index(engine)]
        return {name: float(v) for name, v in zip(self.engine_names, row, strict=True)}

    def table(self, ds: Dataset) -> tuple[Array, IntArray]:
        """Parameter table and the row each plan of ``ds`` uses (its family and engine; the shared
        values for an engine the fit has not seen; the generic set for a ``generic`` fit)."""
        n_e = len(self.engines)
        columns = [PARAMETERS.index(n) for n in self.engine_names]
        eng = np.array([self.engines.index(e) if e in self.engines else n_e for e in ds.engines] + [n_e])
        engine = eng[ds.engine]  # ds.engine == -1 picks the trailing "unknown" entry
        if self.families == ("generic",):
            fam = np.zeros(len(ds.plans), dtype=np.int64)
        else:
            idx = np.array([self.families.index(f) if f in self.families else -1 for f in ds.families])
            fam = idx[ds.family]
            if (fam < 0).any():
                raise ValueError("fit lacks families the rows need")
        cells = np.asarray(fam * (n_e + 1) + engine, dtype=np.int64)
        return _engine_table(self.params, self.engine_params.reshape(n_e, len(columns)), columns), cells


def _least_squares(
    ds: Dataset,
    mask: npt.NDArray[np.bool_],
    x0: Array,
    lower: Array,
    upper: Array,
    scale: Array,
    predict: Any,
    residual: str,
) -> Any:
    w = np.sqrt(ds.weight[mask])
    tpot_kind, ttft_kind = RESIDUALS[residual]

    def error(kind: str, predicted: Array, measured: Array) -> Array:
        ratio = predicted / measured
        return np.log(ratio) if kind == "log" else ratio - 1.0

    def residuals(x: Array) -> Array:
        ttft, tpot = predict(x)
        r_tpot = error(tpot_kind, tpot[mask], ds.tpot[mask])
        r_ttft = error(ttft_kind, ttft[mask], ds.ttft[mask])
        return np.asarray(np.concatenate([w * r_tpot, TTFT_WEIGHT * w * r_ttft]), dtype=np.float64)

    return least_squares(
        residuals,
        x0,
        bounds=(lower, upper),
        x_scale=scale,
        method="trf",
        loss=LOSS,
        f_scale=LOSS_SCALE,
    )


def _solve(
    ds: Dataset,
    mask: npt.NDArray[np.bool_],
    base: Array,
    slots: Sequence[tuple[int, int, int]],
    cells: IntArray,
    residual: str,
) -> tuple[Array, Any]:
    """Least squares over ``slots`` of the (family, engine, PARAMETERS) table ``base``: a slot is
    (column, family, engine), -1 meaning every family / every engine (the shared entry included)."""
    every = slice(None)

    def table(x: Array) -> Array:
        t = base.copy()
        for v, (c, f, e) in zip(x, slots, strict=True):
            t[every if f < 0 else f, every if e < 0 else e, c] = v
        return t

    def flat(x: Array) -> Array:
        return table(x).reshape(-1, base.shape[-1])

    cols = np.array([c for c, _, _ in slots])
    x0 = np.array([base[max(f, 0), max(e, 0), c] for c, f, e in slots])
    result = _least_squares(
        ds,
        mask,
        x0,
        LOWER[cols],
        UPPER[cols],
        SCALE[cols],
        lambda x: predict_all(ds, flat(x), cells),
        residual,
    )
    return table(np.asarray(result.x, dtype=np.float64)), result


def fit(
    ds: Dataset,
    train: npt.NDArray[np.bool_] | None = None,
    shared: bool = False,
    fixed: Mapping[str, float] | None = None,
    per_engine: Sequence[str] | None = None,
    engine_stage: str | None = None,
    residual: str | None = None,
) -> FitResult:
    """Least squares over the ``train`` rows (all by default), on log errors unless ``residual``
    (default ``RESIDUAL``) names another of ``RESIDUALS``.

    Parameters in ``PER_FAMILY`` get one value per hardware family of the training rows, the others
    one value for all families. ``shared``: every parameter shared (the generic fit). ``fixed``:
    parameters held at the given values instead of fitted (default ``FIT_FIXED``; ablations:
    ``{**FIT_FIXED, "layer_overhead_seconds": 0.0}`` measures what the per-layer cost buys).
    ``per_engine`` (default ``PER_ENGINE``): parameters with one value per serving engine of the
    training rows, plus a shared value for rows of unknown engine. ``engine_stage`` (default
    ``ENGINE_STAGE``): ``refine`` fits everything engine-agnostic first, then the engine values
    with the rest held (the shared values are the engine-agnostic fit's); ``joint`` fits the engine
    values together with the rest, then the shared values of the engine terms with the rest held.
    """
    names = PARAMETERS
    pinned = dict(FIT_FIXED if fixed is None else fixed)
    engine_names = tuple(PER_ENGINE if per_engine is None else per_engine)
    stage = ENGINE_STAGE if engine_stage is None else engine_stage
    unknown = (set(pinned) | set(engine_names)) - set(names)
    if unknown:
        raise ValueError(f"unknown parameter(s) {sorted(unknown)}; known: {', '.join(names)}")
    both = set(engine_names) & set(PER_FAMILY)
    if both:
        raise ValueError(f"parameter(s) {sorted(both)} cannot be both per family and per engine")
    if stage not in ("refine", "joint"):
        raise ValueError(f"engine_stage: expected 'refine' or 'joint', got {stage!r}")
    kind = RESIDUAL if residual is None else residual
    if kind not in RESIDUALS:
        raise ValueError(f"residual: expected one of {', '.join(RESIDUALS)}, got {kind!r}")
    engine_names = tuple(n for n in engine_names if n not in pinned)
    start = np.array([pinned.get(name, v) for name, v in zip(names, START, strict=True)])
    k = len(names)
    mask = np.ones(len(ds.plans), dtype=np.bool_) if train is None else train
    families = (
        ("generic",) if shared else tuple(ds.families[i] for i in sorted(set(ds.family[mask].tolist())))
    )
    index = {f: i for i, f in enumerate(families)}
    fam = (
        np.zeros(len(ds.plans), dtype=np.int64)
        if shared
        else np.array([index.get(ds.families[i], 0) for i in ds.family], dtype=np.int64)
    )
    n = len(families)
    seen = sorted(set(ds.engine[mask].tolist()) - {-1}) if engine_names else []
    engines = tuple(ds.engines[e] for e in seen)
    n_e = len(engines)
    local = {e: j for j, e in enumerate(seen)}
    eng = np.array([local.get(int(e), n_e) for e in ds.engine], dtype=np.int64)
    cells = np.asarray(fam * (n_e + 1) + eng, dtype=np.int64)  # each row's family and engine
    shared_cells = np.asarray(fam * (n_e + 1) + n_e, dtype=np.int64)  # as if no engine were known
    ecols = [names.index(nm) for nm in engine_names]
    base = np.tile(start, (n, n_e + 1, 1))
    free = [c for c in range(k) if names[c] not in pinned]
    # Slots (column, family or -1, engine or -1); -1: the same value everywhere.
    slots = [(c, -1, -1) for c in free if names[c] not in PER_FAMILY or n == 1]
    slots += [(c, f, -1) for c in free if names[c] in PER_FAMILY and n > 1 for f in range(n)]
    known = mask & (eng < n_e)
    if not n_e or not ecols:
        table, r = _solve(ds, mask, base, slots, shared_cells, kind)
        results = [r]
    elif stage == "refine":
        # 1. engine-agnostic; 2. the engine terms per engine, everything else held.
        table, r1 = _solve(ds, mask, base, slots, shared_cells, kind)
        table, r2 = _solve(ds, known, table, [(c, -1, e) for c in ecols for e in range(n_e)], cells, kind)
        results = [r1, r2]
    else:
        # 1. everything, the engine terms per engine; 2. their shared values, everything else held.
        unknown_rows = bool((mask & (eng == n_e)).any())
        joint = [s for s in slots if s[0] not in ecols]
        joint += [(c, -1, e) for c in ecols for e in range(n_e + (1 if unknown_rows else 0))]
        table, r1 = _solve(ds, mask, base, joint, cells, kind)
        results = [r1]
        if not unknown_rows:
            table, r2 = _solve(ds, mask, table, [(c, -1, n_e) for c in ecols], shared_cells, kind)
            results.append(r2)
    return FitResult(
        families,
        np.asarray(table[:, n_e, :], dtype=np.float64),
        int(mask.sum()),
        float(results[-1].cost),
        sum(int(r.nfev) for r in results),
        "; ".join(str(r.message) for r in results),
        engine_names if n_e else (),
        engines if ecols else (),
        np.asarray(table[0, :n_e, :][:, ecols], dtype=np.float64),
    )


def predict_with(ds: Dataset, result: FitResult) -> tuple[Array, Array]:
    """Predict every plan with a fit: its family's values (the generic set for a generic fit) and its
    engine's terms (the shared values for an engine the fit has not seen)."""
    table, cells = result.table(ds)
    return predict_all(ds, table, cells)


# ---- statistics -------------------------------------------------------------------------------------


def _stats(ds: Dataset, ttft: Array, tpot: Array, rows: npt.NDArray[np.bool_]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, mode in (("agg", ~ds.disaggregated), ("disagg", ds.disaggregated)):
        m = rows & mode
        if m.any():
            out[name] = summary(tpot[m], ds.tpot[m], ttft[m], ds.ttft[m])
    out["all"] = summary(tpot[rows], ds.tpot[rows], ttft[rows], ds.ttft[rows])
    return out


def cross_validate(
    ds: Dataset,
    fixed: Mapping[str, float] | None = None,
    per_engine: Sequence[str] | None = None,
    engine_stage: str | None = None,
    residual: str | None = None,
) -> dict[str, Any]:
    """Leave-one-(architecture, hardware)-group-out, and leave-one-family-out (generic fit)."""
    options: dict[str, Any] = {
        "fixed": fixed,
        "per_engine": per_engine,
        "engine_stage": engine_stage,
        "residual": residual,
    }
    ttft = np.full(len(ds.plans), np.nan)
    tpot = np.full(len(ds.plans), np.nan)
    per_group: dict[str, Any] = {}
    for g, name in enumerate(ds.groups):
        held = ds.group == g
        train = ~held
        if not train.any():
            continue
        fam_held = set(ds.family[held].tolist())
        if not fam_held <= set(ds.family[train].tolist()):
            # The held-out group is its family's only data: predict it with the generic fit.
            result = fit(ds, train, shared=True, **options)
        else:
            result = fit(ds, train, **options)
        p_ttft, p_tpot = predict_with(ds, result)
        ttft[held], tpot[held] = p_ttft[held], p_tpot[held]
        per_group[name] = _stats(ds, p_ttft, p_tpot, held)
    logo = {"pooled": _stats(ds, ttft, tpot, np.ones(len(ds.plans), dtype=np.bool_)), "groups": per_group}
    lofo: dict[str, Any] = {}
    for f, family in enumerate(ds.families):
        held = ds.family == f
        if held.all():
            continue
        result = fit(ds, ~held, shared=True, **options)
        p_ttft, p_tpot = predict_with(ds, result)
        lofo[family] = _stats(ds, p_ttft, p_tpot, held)
    return {"leave_one_group_out": logo, "leave_one_family_out": lofo}


# ---- the calibrated module ---------------------------------------------------------------------------


def _num(x: float) -> str:
    return f"{float(f'{x:.4g}')!r}"


def render_fitted_block(
    family_fit: FitResult, generic_fit: FitResult, stats: dict[str, Any], source: str, date: str
) -> str:
    def entry(result: FitResult, family: str, note: str) -> str:
        p = result.params[result.families.index(family)][: len(PARAMETERS)]
        args = ", ".join(f"{name}={_num(v)}" for name, v in zip(PARAMETERS, p, strict=True))
        return f"    {family!r}: Efficiency(\n        {args},\n        fitted_by={note!r},\n    ),\n"

    how = f"least squares on log error ({date})"
    lines = [
        "# BEGIN FITTED (written by `make calibrate`; edit the fit, not these lines)\n",
        f"FIT_DATE = {date!r}\n",
        f"FIT_SOURCE = {source!r}\n",
        "FAMILY_EFFICIENCY: dict[str, Efficiency] = {\n",
    ]
    for family in family_fit.families:
        lines.append(entry(family_fit, family, f"{how}: {family} rows"))
    lines.append(entry(generic_fit, "generic", f"{how}: one set for all rows"))
    lines.append("}\n")
    lines.append("ENGINE_EFFICIENCY: dict[str, dict[str, float]] = {\n")
    for engine in family_fit.engines:
        values = ", ".join(f"{name!r}: {_num(v)}" for name, v in family_fit.engine_values(engine).items())
        lines.append(f"    {engine!r}: {{{values}}},\n")
    lines.append("}\n")
    lines.append(f"FIT_STATISTICS: dict[str, Any] = {json.dumps(stats, indent=4, sort_keys=True)}\n")
    lines.append("# END FITTED\n")
    text = "".join(lines)
    return text.replace(": null", ": None").replace(": true", ": True").replace(": false", ": False")


def write_calibrated(block: str, path: Path = CALIBRATED_MODULE) -> None:
    text = path.read_text(encoding="utf-8")
    pattern = re.compile(r"# BEGIN FITTED.*?# END FITTED\n", re.S)
    if not pattern.search(text):
        raise ValueError(f"{path}: no '# BEGIN FITTED' ... '# END FITTED' block")
    path.write_text(pattern.sub(lambda _: block, text, count=1), encoding="utf-8")
    # Leave the module as `ruff format` would (the repository's lint checks it); ruff is a dev tool.
    if importlib.util.find_spec("ruff") is not None:
        subprocess.run([sys.executable, "-m", "ruff", "format", "--quiet", str(path)], check=False)


# ---- command line -----------------------------------------------------------------------------------


def _round(x: Any) -> Any:
    if isinstance(x, float):
        return float(f"{x:.4g}")
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_round(v) for v in x]
    return x


def run(
    measurements: Path,
    cross_validation: bool = True,
    fixed: Mapping[str, float] | None = None,
    per_engine: Sequence[str] | None = None,
    engine_stage: str | None = None,
    residual: str | None = None,
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
        "in_sample": _stats(ds, ttft, tpot, everything),
        "in_sample_generic": _stats(ds, g_ttft, g_tpot, everything),
    }
    if cross_validation:
        report.update(cross_validate(ds, **options))
    report["_fits"] = (family_fit, generic_fit)
    return report


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
}


def _fmt_parameter(name: str, value: float) -> str:
    symbol, mult, unit = _SHOW.get(name, (name, 1.0, ""))
    return f"{symbol} {value * mult:.3g}{unit}"


def _print(report: dict[str, Any]) -> None:
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hetsched.scheduler.calibration.fit",
        description="Fit the roofline efficiencies per hardware family to measured serving runs.",
    )
    parser.add_argument("--measurements", type=Path, default=DEFAULT_MEASUREMENTS, help="measurements CSV")
    parser.add_argument(
        "--write", action="store_true", help=f"rewrite the fitted block of {CALIBRATED_MODULE.name}"
    )
    parser.add_argument("--no-cv", action="store_true", help="skip the cross-validation")
    parser.add_argument(
        "--fix",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help=f"hold a parameter at a value instead of fitting it (ablation; repeatable): {', '.join(PARAMETERS)}",
    )
    parser.add_argument(
        "--free",
        action="append",
        default=[],
        metavar="NAME",
        help=f"fit a parameter the default fit holds ({', '.join(f'{k}={v:g}' for k, v in FIT_FIXED.items())})",
    )
    parser.add_argument(
        "--per-engine",
        default=None,
        metavar="NAMES",
        help=f"comma-separated parameters fitted per serving engine (ablation; default {','.join(PER_ENGINE)}; '' for none)",
    )
    parser.add_argument(
        "--engine-stage",
        choices=("refine", "joint"),
        default=None,
        help=f"how the engine terms are fitted (ablation; default {ENGINE_STAGE})",
    )
    parser.add_argument(
        "--residual",
        choices=tuple(RESIDUALS),
        default=None,
        help=f"how a row's error is measured (ablation; default {RESIDUAL})",
    )
    parser.add_argument("--date", default=_dt.date.today().isoformat(), help="fit date recorded with --write")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    args = parser.parse_args(argv)
    fixed: dict[str, float] = dict(FIT_FIXED)
    for name in args.free:
        if name not in PARAMETERS:
            parser.error(f"--free {name!r}: expected one of {', '.join(PARAMETERS)}")
        fixed.pop(name, None)
    for item in args.fix:
        name, sep, value = item.partition("=")
        if not sep or name not in PARAMETERS:
            parser.error(f"--fix {item!r}: expected NAME=VALUE with NAME one of {', '.join(PARAMETERS)}")
        try:
            fixed[name] = float(value)
        except ValueError:
            parser.error(f"--fix {item!r}: {value!r} is not a number")
    per_engine: tuple[str, ...] | None = None
    if args.per_engine is not None:
        per_engine = tuple(n.strip() for n in args.per_engine.split(",") if n.strip())
        bad = [n for n in per_engine if n not in PARAMETERS or n in PER_FAMILY]
        if bad:
            parser.error(
                f"--per-engine {bad}: expected names among {', '.join(PARAMETERS)} (not {PER_FAMILY})"
            )
    ablation = per_engine is not None or args.engine_stage is not None or args.residual is not None
    if (fixed != FIT_FIXED or ablation) and args.write:
        parser.error(
            "--fix, --free, --per-engine, --engine-stage and --residual are for ablations: "
            "they cannot be combined with --write"
        )
    report = run(
        args.measurements,
        cross_validation=not args.no_cv,
        fixed=fixed,
        per_engine=per_engine,
        engine_stage=args.engine_stage,
        residual=args.residual,
    )
    family_fit, generic_fit = report.pop("_fits")
    if args.write:
        stats = {
            "rows": report["rows"],
            "fitted_rows": report["fitted_rows"],
            "in_sample": _round(report["in_sample"]),
            "leave_one_group_out": _round(report.get("leave_one_group_out", {}).get("pooled", {})),
            "leave_one_family_out": _round(report.get("leave_one_family_out", {})),
        }
        try:
            source = str(args.measurements.resolve().relative_to(REPO_ROOT))
        except ValueError:
            source = args.measurements.name
        write_calibrated(render_fitted_block(family_fit, generic_fit, stats, source, args.date))
    if args.output == "json":
        print(json.dumps(_round(report), indent=2, sort_keys=True))
    else:
        _print(report)
        if args.write:
            print(f"\nwrote {CALIBRATED_MODULE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
