"""Fit the roofline efficiencies to measured serving runs (``hetsched calibrate``, ``make calibrate``).

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

``hetsched calibrate [--measurements CSV] [--write] [-o json] [--fix NAME=VALUE] [--free NAME]``
(the last two: ablations, report only) runs it (``calibration/cli.py``); ``--write`` writes the
fitted table, ``estimator/data/efficiency.json``. The efficiency-independent part of every row's
prediction is :mod:`.design`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from hetsched.scheduler.calibration.design import (
    LOWER,
    PARAMETERS,
    SCALE,
    START,
    UPPER,
    Array,
    Dataset,
    IntArray,
    predict_all,
)
from hetsched.scheduler.calibration.errors import summary
from hetsched.scheduler.catalog.hardware import Efficiency

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
#: * the overlap of an operator's compute and memory time is held at 1 (the roofline's max: a GPU
#:   overlaps them); the CPU fit frees it (§7: one core both streams the weights and computes).
FIT_FIXED: dict[str, float] = {
    "step_overhead_seconds": 0.0,
    "collective_latency_seconds": 0.0,
    "overlap": 1.0,
}
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
    ttft_weight: float,
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
        return np.asarray(np.concatenate([w * r_tpot, ttft_weight * w * r_ttft]), dtype=np.float64)

    from scipy.optimize import least_squares  # imported where used: the CLI starts without it

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
    limits: tuple[Array, Array] = (LOWER, UPPER),
    ttft_weight: float = TTFT_WEIGHT,
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
        limits[0][cols],
        limits[1][cols],
        SCALE[cols],
        lambda x: predict_all(ds, flat(x), cells),
        residual,
        ttft_weight,
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
    bounds: Mapping[str, tuple[float, float]] | None = None,
    ttft_weight: float = TTFT_WEIGHT,
) -> FitResult:
    """Least squares over the ``train`` rows (all by default), on log errors unless ``residual``
    (default ``RESIDUAL``) names another of ``RESIDUALS``; TTFT errors weigh ``ttft_weight``
    against TPOT's 1.

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
    lower, upper = LOWER.copy(), UPPER.copy()
    for name, (lo, hi) in (bounds or {}).items():
        if name not in names or not lo <= pinned.get(name, START[names.index(name)]) <= hi:
            raise ValueError(f"bounds: {name!r} must be a parameter whose start lies in ({lo}, {hi})")
        lower[names.index(name)], upper[names.index(name)] = lo, hi
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
        table, r = _solve(ds, mask, base, slots, shared_cells, kind, (lower, upper), ttft_weight)
        results = [r]
    elif stage == "refine":
        # 1. engine-agnostic; 2. the engine terms per engine, everything else held.
        table, r1 = _solve(ds, mask, base, slots, shared_cells, kind, (lower, upper), ttft_weight)
        table, r2 = _solve(
            ds,
            known,
            table,
            [(c, -1, e) for c in ecols for e in range(n_e)],
            cells,
            kind,
            (lower, upper),
            ttft_weight,
        )
        results = [r1, r2]
    else:
        # 1. everything, the engine terms per engine; 2. their shared values, everything else held.
        unknown_rows = bool((mask & (eng == n_e)).any())
        joint = [s for s in slots if s[0] not in ecols]
        joint += [(c, -1, e) for c in ecols for e in range(n_e + (1 if unknown_rows else 0))]
        table, r1 = _solve(ds, mask, base, joint, cells, kind, (lower, upper), ttft_weight)
        results = [r1]
        if not unknown_rows:
            table, r2 = _solve(
                ds,
                mask,
                table,
                [(c, -1, n_e) for c in ecols],
                shared_cells,
                kind,
                (lower, upper),
                ttft_weight,
            )
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


def error_statistics(ds: Dataset, ttft: Array, tpot: Array, rows: npt.NDArray[np.bool_]) -> dict[str, Any]:
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
        per_group[name] = error_statistics(ds, p_ttft, p_tpot, held)
    logo = {
        "pooled": error_statistics(ds, ttft, tpot, np.ones(len(ds.plans), dtype=np.bool_)),
        "groups": per_group,
    }
    lofo: dict[str, Any] = {}
    for f, family in enumerate(ds.families):
        held = ds.family == f
        if held.all():
            continue
        result = fit(ds, ~held, shared=True, **options)
        p_ttft, p_tpot = predict_with(ds, result)
        lofo[family] = error_statistics(ds, p_ttft, p_tpot, held)
    return {"leave_one_group_out": logo, "leave_one_family_out": lofo}


# ---- CPUs -------------------------------------------------------------------------------------------

#: The CPU fit (docs/calibration.md §7): its own parameter set, fitted on CPU rows only (the vLLM
#: CPU engine on a probed machine), never touching the GPU fit. One replica is one socket at TP 1,
#: so the link terms have nothing to describe and stay neutral; the per-step cost is fitted (vLLM's
#: CPU engine runs no CUDA graphs: its Python scheduling, input preparation and sampling per step are
#: a cost of their own, told apart from the per-layer cost by models of 8 to 28 layers). The overlap
#: of compute and memory time is fitted: one core both streams the weights and computes.
CPU_FIXED: dict[str, float] = {"link_efficiency": 1.0, "collective_latency_seconds": 0.0}
#: The CPU fit's bounds where they differ from the GPUs' (``design.PARAMETER_SPECS``). The experts'
#: factors may exceed 1, relative to the dense GEMMs: vLLM CPU's MoE kernels are its own, and stream
#: the experts faster than its dense GEMMs stream their weights (η_eb 1.5 in FP32; in BF16 on a core
#: without BF16 instructions the dense GEMMs' converting fallback made it the compute factor, and η_c
#: down to 0.02). Eager mode: per-layer and per-step costs of milliseconds.
CPU_BOUNDS: dict[str, tuple[float, float]] = {
    "compute": (0.02, 1.0),
    "experts_compute": (0.05, 10.0),
    "experts_bandwidth": (0.1, 4.0),
    "layer_overhead_seconds": (0.0, 5e-3),
    "step_overhead_seconds": (0.0, 0.2),
}
#: TTFT's weight in the CPU fit: as much as TPOT's. The GPU fit weighs TTFT down (``TTFT_WEIGHT``)
#: because the GPU runs' TTFT carries engine start-up the model only averages; the CPU campaign's
#: TTFT is explained by its synchronized waves (``serving.wave_times``: the fitted per-request cost
#: is ≈ 0) and says the most about prefill, which TPOT hardly sees (docs/calibration.md §7).
CPU_TTFT_WEIGHT = 1.0
#: The routed experts' factors are held neutral when the training rows have no MoE model (a
#: held-out MoE shape is predicted as if its experts ran like dense GEMMs: nothing was learnt).
EXPERTS = ("experts_bandwidth", "experts_compute")


def _has_moe(ds: Dataset, rows: npt.NDArray[np.bool_]) -> bool:
    return any(ds.plans[i].model.moe is not None for i in np.flatnonzero(rows))


def fit_cpu(
    ds: Dataset,
    train: npt.NDArray[np.bool_] | None = None,
    fixed: Mapping[str, float] | None = None,
    ttft_weight: float | None = None,
) -> FitResult:
    """One parameter set for every CPU row (``train``: all by default); ``fixed`` defaults to
    ``CPU_FIXED`` (plus the experts' factors at 1 without MoE rows to learn them from);
    ``ttft_weight`` to ``CPU_TTFT_WEIGHT``."""
    mask = np.ones(len(ds.plans), dtype=np.bool_) if train is None else train
    pinned = dict(CPU_FIXED if fixed is None else fixed)
    if not _has_moe(ds, mask):
        pinned.update({name: 1.0 for name in EXPERTS if name not in pinned})
    weight = CPU_TTFT_WEIGHT if ttft_weight is None else ttft_weight
    return fit(ds, mask, shared=True, fixed=pinned, per_engine=(), bounds=CPU_BOUNDS, ttft_weight=weight)


def cross_validate_cpu(
    ds: Dataset, fixed: Mapping[str, float] | None = None, ttft_weight: float | None = None
) -> dict[str, Any]:
    """Leave one model shape out: fit the CPU set without every row of a shape, predict them."""
    ttft = np.full(len(ds.plans), np.nan)
    tpot = np.full(len(ds.plans), np.nan)
    per_group: dict[str, Any] = {}
    for g, name in enumerate(ds.groups):
        held = ds.group == g
        if held.all():
            continue
        result = fit_cpu(ds, ~held, fixed, ttft_weight)
        p_ttft, p_tpot = predict_with(ds, result)
        ttft[held], tpot[held] = p_ttft[held], p_tpot[held]
        per_group[name] = error_statistics(ds, p_ttft, p_tpot, held)
    done = np.isfinite(tpot)
    return {"pooled": error_statistics(ds, ttft, tpot, done), "groups": per_group}
