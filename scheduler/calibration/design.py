"""The calibration's design matrix: everything of a prediction that does not depend on the fitted numbers.

For every predictable row of the measurements (:mod:`.dataset`) the FLOPs and bytes per operator of
its decode and prefill steps, collectives, KV capacity, running batch and queue shape are computed
once (``Plan.setup``: ``serving.colocated_setup`` / ``disaggregated_setup``) and stacked into numpy
blocks (:class:`Dataset`); :func:`predict_all` then evaluates the serving model's TTFT and TPOT of
every row for a table of parameter values at once (what :mod:`.fit` minimises over). The
parameters are the numbers of ``Efficiency`` (``PARAMETER_SPECS``), within physical bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import numpy.typing as npt
from hetsched.scheduler.calibration.dataset import (
    BENCHMARK_WARMUP_FRACTION,
    Plan,
    architecture_key,
    group_labels,
)
from hetsched.scheduler.engines import engine_of_backend
from hetsched.scheduler.estimator.efficiency import family_of
from hetsched.scheduler.estimator.serving import (
    ColocatedSetup,
    colocated_times,
    disaggregated_times,
    wave_times,
)
from hetsched.scheduler.estimator.steps import EfficiencyTerms, StepTerms

Array = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


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
    Parameter("overlap", 0.0, 1.0, 1.0, 0.1, 1.0),
)
PARAMETERS = tuple(p.name for p in PARAMETER_SPECS)
LOWER = np.array([p.lower for p in PARAMETER_SPECS])
UPPER = np.array([p.upper for p in PARAMETER_SPECS])
START = np.array([p.start for p in PARAMETER_SPECS])
SCALE = np.array([p.scale for p in PARAMETER_SPECS])
NEUTRAL = np.array([p.neutral for p in PARAMETER_SPECS])
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
    warmup: Array  # share of the run's requests in its first, simultaneous wave
    waves: npt.NDArray[np.bool_]  # agg: the run sent synchronized waves (serving.wave_times)
    prefill_rest: StepTerms  # agg waves: the step of a wave's other prompts (else the prefill)


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


def _block(plans: list[Plan], rows: list[int]) -> Block | None:
    if not rows:
        return None
    decode, prefill, conc, run, out, kv, warm = [], [], [], [], [], [], []
    waves, rest = [], []
    for i in rows:
        p = plans[i]
        r = p.row
        s = p.setup()
        if isinstance(s, ColocatedSetup):
            decode.append(s.decode)
            prefill.append(s.prefill)
            conc.append(s.per_rank)
            run.append(s.running)
            kv.append(0.0)
            waves.append(s.prefill_rest is not None)
            rest.append(s.prefill if s.prefill_rest is None else s.prefill_rest)
        else:
            decode.append(s.decode)
            prefill.append(s.prefill)
            conc.append(p.concurrency)
            run.append(s.prefill_slots)
            kv.append(s.kv_transfer_seconds)
            waves.append(False)
            rest.append(s.prefill)
        out.append(r.osl)
        warm.append(p.warmup_fraction(BENCHMARK_WARMUP_FRACTION))
    return Block(
        np.array(rows, dtype=np.int64),
        _stack(decode),
        _stack(prefill),
        np.array(conc, dtype=np.float64),
        np.array(run, dtype=np.float64),
        np.array(out, dtype=np.float64),
        np.array(kv, dtype=np.float64),
        np.array(warm, dtype=np.float64),
        np.array(waves, dtype=np.bool_),
        _stack(rest),
    )


def _fits(p: Plan) -> str | None:
    from hetsched.scheduler.estimator.steps import kv_capacity

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
    families = tuple(sorted({family_of(p.hardware) for p in ok}))
    family = np.array([families.index(family_of(p.hardware)) for p in ok], dtype=np.int64)
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
        _block(ok, agg_rows),
        _block(ok, dis_rows),
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
        e = _eff(params, fam[b.rows])
        t = colocated_times(
            b.decode,
            b.prefill,
            concurrency=b.concurrency,
            running=b.running,
            output_tokens=b.output_tokens,
            warmup_fraction=b.warmup,
            eff=e,
        )
        ttft[b.rows], tpot[b.rows] = t.ttft, t.tpot
        if b.waves.any():
            w = wave_times(
                b.decode,
                b.prefill,
                b.prefill_rest,
                concurrency=b.concurrency,
                running=b.running,
                output_tokens=b.output_tokens,
                eff=e,
            )
            ttft[b.rows] = np.where(b.waves, w.ttft, ttft[b.rows])
            tpot[b.rows] = np.where(b.waves, w.tpot, tpot[b.rows])
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
            warmup_fraction=b.warmup,
            prefill_eff=e,
            decode_eff=e,
        )
        ttft[b.rows], tpot[b.rows] = t.ttft, t.tpot
    return ttft, tpot
