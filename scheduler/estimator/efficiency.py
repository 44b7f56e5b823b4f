"""Calibrated efficiencies per hardware family (and per-device overrides) for the roofline.

The hardware catalog applies them: ``calibrate(spec)`` returns the catalog entry with its
``efficiency`` replaced by the calibrated one (``efficiency_for``). ``--efficiency ideal`` ignores
them (``IDEAL``: pure roofline).

The fitted numbers are data: ``data/efficiency.json``, written by ``hetsched calibrate``
(``make calibrate``; the fit is ``hetsched.scheduler.calibration``): a least-squares fit on log
errors of the measured serving runs in ``benchmarks/data/serving-measurements.csv``
(docs/calibration.md). Families without measurements use the ``generic`` entry, fitted with one
parameter set over all the data; that is an extrapolation, and ``fitted_by`` says so.

``ENGINE_EFFICIENCY`` holds the terms that are serving-engine software (the fixed cost per request
and per layer), one set per engine (``hetsched.scheduler.engines``: ``vllm``, ``sglang``,
``trtllm``). ``efficiency_for(hardware, engine)`` / ``with_engine`` put them into the hardware's
entry; an unknown engine (``None``) keeps the shared values.

**CPUs** (``kind: cpu``, whatever their name) are the ``cpu`` family, fitted on their own
measurements (vLLM CPU runs, ``benchmarks/data/cpu/``) with their own parameters: fractions of
peak bandwidth and FLOP/s and the engine's per-step, per-layer and per-request costs. The GPU
engines' terms never apply to them (``with_engine`` leaves a CPU's efficiency as it is). The CPU
family's bandwidth fraction is relative to a *measured* bandwidth (``hetsched hardware probe``); a
catalog CPU whose ``bandwidth`` is the theoretical DRAM peak gets it times the share of that peak
a STREAM-like kernel sustains (``CPU_SUSTAINED_BANDWIDTH``). ``CPU_ERROR_BAND`` is the CPU fit's
leave-one-shape-out median error, which the planner quotes next to CPU options.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hetsched.scheduler.catalog.hardware import IDEAL, DeviceKind, Efficiency, HardwareSpec

FITTED_PATH = Path(__file__).resolve().parent / "data" / "efficiency.json"


@dataclass(frozen=True, slots=True)
class FittedEfficiency:
    """What ``hetsched calibrate`` writes: efficiencies per hardware family (``generic``: one set for
    all), the per-engine terms, and how well the fit predicts the measurements."""

    fit_date: str
    source: str  # the measurements CSV, relative to the repository
    families: dict[str, Efficiency]
    engines: dict[str, dict[str, float]]
    statistics: dict[str, Any]


#: Catalog name prefixes → hardware family (first match wins; names are lower case).
FAMILY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("gh200", "nvidia-hopper"),
    ("h100", "nvidia-hopper"),
    ("h200", "nvidia-hopper"),
    ("h20", "nvidia-hopper"),
    ("h800", "nvidia-hopper"),
    ("gb200", "nvidia-blackwell"),
    ("gb300", "nvidia-blackwell"),
    ("b200", "nvidia-blackwell"),
    ("b300", "nvidia-blackwell"),
    ("rtx-pro-6000", "nvidia-blackwell"),
    ("a100", "nvidia-ampere"),
    ("a800", "nvidia-ampere"),
    ("a10", "nvidia-ampere"),
    ("a30", "nvidia-ampere"),
    ("a40", "nvidia-ampere"),
    ("l40", "nvidia-ada"),
    ("l4", "nvidia-ada"),
    ("t4", "nvidia-turing"),
    ("v100", "nvidia-volta"),
    ("mi3", "amd-cdna3"),
    ("xeon", "cpu"),
    ("epyc", "cpu"),
)

GENERIC = "generic"
CPU = "cpu"

#: Catalog CPUs whose ``bandwidth`` is the theoretical DRAM peak (channels × transfer rate × 8 B):
#: the share of it a STREAM-like kernel sustains. The CPU family's η_b is a fraction of a
#: *measured* (STREAM-like) bandwidth, so these entries get η_b × share. 0.8 is the typical
#: STREAM Triad share of multi-channel DDR4/DDR5 servers (e.g. AMD's tuned STREAM on a 2-socket
#: EPYC 7601: 250 of 307 GB/s, AnandTech 11544; TI AM62x/AM64x reports: 74–78 % of the DDR wire
#: rate); measure the machine (``hetsched hardware probe``) and put its entry in the pool file for
#: a figure of your own.
CPU_SUSTAINED_BANDWIDTH: dict[str, float] = {"xeon-6980p": 0.8, "epyc-9654": 0.8}


def family_of(hardware: HardwareSpec | str) -> str:
    """The hardware family of a catalog entry (``generic`` when no prefix matches); any entry of
    ``kind: cpu`` is the ``cpu`` family."""
    if isinstance(hardware, HardwareSpec) and hardware.kind is DeviceKind.CPU:
        return CPU
    name = (hardware.name if isinstance(hardware, HardwareSpec) else hardware).strip().lower()
    for prefix, family in FAMILY_PREFIXES:
        if name.startswith(prefix):
            return family
    return GENERIC


def load_fitted(path: str | Path = FITTED_PATH) -> FittedEfficiency:
    """The fitted table (``data/efficiency.json``, written by ``hetsched calibrate``)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    return FittedEfficiency(
        fit_date=str(doc["fit_date"]),
        source=str(doc["source"]),
        families={name: Efficiency.model_validate(values) for name, values in doc["families"].items()},
        engines={name: {k: float(v) for k, v in values.items()} for name, values in doc["engines"].items()},
        statistics=dict(doc.get("statistics") or {}),
    )


@dataclass(frozen=True, slots=True)
class ErrorBand:
    """Median |predicted/measured − 1| of held-out predictions: what a number of that kind is
    worth (``tpot``, ``ttft``), and how it was measured."""

    tpot: float
    ttft: float
    how: str

    def describe(self, metric: str) -> str:
        value = self.tpot if metric == "tpot" else self.ttft
        return f"±{value:.0%}"


def cpu_error_band(statistics: dict[str, Any]) -> ErrorBand | None:
    """The CPU fit's leave-one-shape-out medians from the fitted table's statistics, or None."""
    cpu = statistics.get("cpu") or {}
    pooled = (cpu.get("leave_one_shape_out") or {}).get("all") or {}
    try:
        tpot = float(pooled["tpot"]["median_abs_rel_error"])
        ttft = float(pooled["ttft"]["median_abs_rel_error"])
    except (KeyError, TypeError, ValueError):
        return None
    measured = ", ".join(str(h) for h in cpu.get("hardware") or []) or "the calibrated CPU"
    return ErrorBand(
        tpot,
        ttft,
        f"CPU, held-out median error (leave one model shape out) on {measured}; other CPUs take its "
        "terms without a measurement of their own",
    )


_FITTED = load_fitted()
FIT_DATE = _FITTED.fit_date
FIT_SOURCE = _FITTED.source
FAMILY_EFFICIENCY: dict[str, Efficiency] = _FITTED.families
ENGINE_EFFICIENCY: dict[str, dict[str, float]] = _FITTED.engines
FIT_STATISTICS: dict[str, Any] = _FITTED.statistics
CPU_ERROR_BAND: ErrorBand | None = cpu_error_band(FIT_STATISTICS)

#: Per-device overrides (catalog name → efficiency), applied before the family table. Empty: no
#: device has measurements that set it apart from its family.
DEVICE_OVERRIDES: dict[str, Efficiency] = {}


def with_engine(efficiency: Efficiency, engine: str | None, kind: DeviceKind | None = None) -> Efficiency:
    """``efficiency`` with the serving engine's fitted terms (``ENGINE_EFFICIENCY``) put in.

    Unchanged for ``engine=None``, an engine without fitted terms, the pure roofline (``IDEAL``
    stays ideal whatever the engine), and a CPU (``kind``): the CPU family's fixed costs are its own
    engine's (vLLM CPU), and the GPU engines' terms do not describe it.
    """
    values = ENGINE_EFFICIENCY.get(engine) if engine else None
    if not values or efficiency == IDEAL or kind is DeviceKind.CPU:
        return efficiency
    return efficiency.model_copy(update={**values, "fitted_by": f"{efficiency.fitted_by}; engine {engine}"})


def efficiency_for(hardware: HardwareSpec | str, engine: str | None = None) -> Efficiency:
    """Calibrated efficiency: the device's override, else its family's, else the generic fit;
    with the serving ``engine``'s terms when it is known (``with_engine``; never on a CPU). A
    catalog CPU of ``CPU_SUSTAINED_BANDWIDTH`` gets the CPU family's η_b times its sustained share."""
    name = (hardware.name if isinstance(hardware, HardwareSpec) else hardware).strip().lower()
    if name in DEVICE_OVERRIDES:
        return with_engine(DEVICE_OVERRIDES[name], engine)
    family = family_of(hardware if isinstance(hardware, HardwareSpec) else name)
    if family == CPU and CPU in FAMILY_EFFICIENCY:
        cpu = FAMILY_EFFICIENCY[CPU]
        share = CPU_SUSTAINED_BANDWIDTH.get(name)
        if share is None:
            return cpu
        return cpu.model_copy(
            update={
                "bandwidth": cpu.bandwidth * share,
                "fitted_by": f"{cpu.fitted_by}; η_b × {share} (the sustained share of {name}'s theoretical bandwidth)",
            }
        )
    if family in FAMILY_EFFICIENCY:
        return with_engine(FAMILY_EFFICIENCY[family], engine)
    generic = FAMILY_EFFICIENCY.get(GENERIC)
    if generic is None:
        return Efficiency(fitted_by="ideal: no calibration fitted yet")
    extrapolated = generic.model_copy(
        update={"fitted_by": f"{generic.fitted_by}; extrapolated to {family} ({name}): no measurements of it"}
    )
    return with_engine(extrapolated, engine)


def calibrate(hardware: HardwareSpec) -> HardwareSpec:
    """The catalog entry with its calibrated efficiency (the hook the hardware catalog applies)."""
    return hardware.model_copy(update={"efficiency": efficiency_for(hardware)})


__all__ = [
    "CPU",
    "CPU_ERROR_BAND",
    "CPU_SUSTAINED_BANDWIDTH",
    "DEVICE_OVERRIDES",
    "ENGINE_EFFICIENCY",
    "FAMILY_EFFICIENCY",
    "FAMILY_PREFIXES",
    "FITTED_PATH",
    "FIT_DATE",
    "FIT_SOURCE",
    "FIT_STATISTICS",
    "GENERIC",
    "ErrorBand",
    "FittedEfficiency",
    "calibrate",
    "cpu_error_band",
    "efficiency_for",
    "family_of",
    "load_fitted",
    "with_engine",
]
