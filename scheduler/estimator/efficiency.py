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
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hetsched.scheduler.catalog.hardware import IDEAL, Efficiency, HardwareSpec

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


def family_of(hardware: HardwareSpec | str) -> str:
    """The hardware family of a catalog entry (``generic`` when no prefix matches)."""
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


_FITTED = load_fitted()
FIT_DATE = _FITTED.fit_date
FIT_SOURCE = _FITTED.source
FAMILY_EFFICIENCY: dict[str, Efficiency] = _FITTED.families
ENGINE_EFFICIENCY: dict[str, dict[str, float]] = _FITTED.engines
FIT_STATISTICS: dict[str, Any] = _FITTED.statistics

#: Per-device overrides (catalog name → efficiency), applied before the family table. Empty: no
#: device has measurements that set it apart from its family.
DEVICE_OVERRIDES: dict[str, Efficiency] = {}


def with_engine(efficiency: Efficiency, engine: str | None) -> Efficiency:
    """``efficiency`` with the serving engine's fitted terms (``ENGINE_EFFICIENCY``) put in.

    Unchanged for ``engine=None``, an engine without fitted terms, and the pure roofline
    (``IDEAL`` stays ideal whatever the engine).
    """
    values = ENGINE_EFFICIENCY.get(engine) if engine else None
    if not values or efficiency == IDEAL:
        return efficiency
    return efficiency.model_copy(update={**values, "fitted_by": f"{efficiency.fitted_by}; engine {engine}"})


def efficiency_for(hardware: HardwareSpec | str, engine: str | None = None) -> Efficiency:
    """Calibrated efficiency: the device's override, else its family's, else the generic fit;
    with the serving ``engine``'s terms when it is known (``with_engine``)."""
    name = (hardware.name if isinstance(hardware, HardwareSpec) else hardware).strip().lower()
    if name in DEVICE_OVERRIDES:
        return with_engine(DEVICE_OVERRIDES[name], engine)
    family = family_of(name)
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
    "DEVICE_OVERRIDES",
    "ENGINE_EFFICIENCY",
    "FAMILY_EFFICIENCY",
    "FAMILY_PREFIXES",
    "FITTED_PATH",
    "FIT_DATE",
    "FIT_SOURCE",
    "FIT_STATISTICS",
    "GENERIC",
    "FittedEfficiency",
    "calibrate",
    "efficiency_for",
    "family_of",
    "load_fitted",
    "with_engine",
]
