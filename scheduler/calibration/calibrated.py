"""Calibrated efficiencies per hardware family (and per-device overrides) for the roofline.

The hardware catalog applies them: ``calibrate(spec)`` returns the catalog entry with its
``efficiency`` replaced by the calibrated one (``efficiency_for``). ``--efficiency ideal`` ignores
them (``IDEAL``: pure roofline).

The numbers between the ``BEGIN FITTED`` and ``END FITTED`` markers are written by
``make calibrate`` (``python -m hetsched.scheduler.calibration.fit --write``): a least-squares fit on
log errors of the measured serving runs in ``benchmarks/data/serving-measurements.csv``
(docs/calibration.md). Families without measurements use the ``generic`` entry, fitted with one
parameter set over all the data; that is an extrapolation, and ``fitted_by`` says so.
"""

from __future__ import annotations

from typing import Any

from hetsched.scheduler.catalog.hardware import Efficiency, HardwareSpec

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


# BEGIN FITTED (written by `make calibrate`; edit the fit, not these lines)
FIT_DATE = "2026-11-22"
FIT_SOURCE = "benchmarks/data/serving-measurements.csv"
FAMILY_EFFICIENCY: dict[str, Efficiency] = {
    "nvidia-blackwell": Efficiency(
        bandwidth=0.6064,
        compute=0.5603,
        step_overhead_seconds=0.001495,
        collective_latency_seconds=1.83e-05,
        link_efficiency=0.06664,
        fitted_by="least squares on log error (2026-11-22): nvidia-blackwell rows",
    ),
    "nvidia-hopper": Efficiency(
        bandwidth=0.6064,
        compute=0.5603,
        step_overhead_seconds=0.001495,
        collective_latency_seconds=3.123e-05,
        link_efficiency=0.217,
        fitted_by="least squares on log error (2026-11-22): nvidia-hopper rows",
    ),
    "generic": Efficiency(
        bandwidth=0.5967,
        compute=0.6046,
        step_overhead_seconds=0.001684,
        collective_latency_seconds=2.013e-05,
        link_efficiency=0.1006,
        fitted_by="least squares on log error (2026-11-22): one set for all rows",
    ),
}
FIT_STATISTICS: dict[str, Any] = {
    "fitted_rows": 1429,
    "in_sample": {
        "agg": {
            "rows": 1345,
            "tpot": {"median_abs_rel_error": 0.1697, "p90_abs_rel_error": 0.4009, "spearman": 0.9327},
            "ttft": {"median_abs_rel_error": 0.4968, "p90_abs_rel_error": 0.8843, "spearman": 0.7991},
        },
        "all": {
            "rows": 1429,
            "tpot": {"median_abs_rel_error": 0.1663, "p90_abs_rel_error": 0.3912, "spearman": 0.9351},
            "ttft": {"median_abs_rel_error": 0.4997, "p90_abs_rel_error": 0.8841, "spearman": 0.8138},
        },
        "disagg": {
            "rows": 84,
            "tpot": {"median_abs_rel_error": 0.1322, "p90_abs_rel_error": 0.2935, "spearman": 0.9869},
            "ttft": {"median_abs_rel_error": 0.5745, "p90_abs_rel_error": 0.8692, "spearman": 0.7777},
        },
    },
    "leave_one_family_out": {
        "nvidia-blackwell": {
            "agg": {
                "rows": 822,
                "tpot": {"median_abs_rel_error": 0.1898, "p90_abs_rel_error": 0.5176, "spearman": 0.9272},
                "ttft": {"median_abs_rel_error": 0.5786, "p90_abs_rel_error": 0.8874, "spearman": 0.7832},
            },
            "all": {
                "rows": 878,
                "tpot": {"median_abs_rel_error": 0.1828, "p90_abs_rel_error": 0.5123, "spearman": 0.9306},
                "ttft": {"median_abs_rel_error": 0.5884, "p90_abs_rel_error": 0.9079, "spearman": 0.7992},
            },
            "disagg": {
                "rows": 56,
                "tpot": {"median_abs_rel_error": 0.1193, "p90_abs_rel_error": 0.2562, "spearman": 0.9843},
                "ttft": {"median_abs_rel_error": 0.752, "p90_abs_rel_error": 0.912, "spearman": 0.7536},
            },
        },
        "nvidia-hopper": {
            "agg": {
                "rows": 523,
                "tpot": {"median_abs_rel_error": 0.2386, "p90_abs_rel_error": 0.5303, "spearman": 0.881},
                "ttft": {"median_abs_rel_error": 0.5315, "p90_abs_rel_error": 1.305, "spearman": 0.7885},
            },
            "all": {
                "rows": 551,
                "tpot": {"median_abs_rel_error": 0.2351, "p90_abs_rel_error": 0.5272, "spearman": 0.8813},
                "ttft": {"median_abs_rel_error": 0.536, "p90_abs_rel_error": 1.555, "spearman": 0.8063},
            },
            "disagg": {
                "rows": 28,
                "tpot": {"median_abs_rel_error": 0.1153, "p90_abs_rel_error": 0.3481, "spearman": 0.9964},
                "ttft": {"median_abs_rel_error": 0.7451, "p90_abs_rel_error": 6.255, "spearman": 0.7223},
            },
        },
    },
    "leave_one_group_out": {
        "agg": {
            "rows": 1345,
            "tpot": {"median_abs_rel_error": 0.2425, "p90_abs_rel_error": 0.5591, "spearman": 0.8999},
            "ttft": {"median_abs_rel_error": 0.5531, "p90_abs_rel_error": 0.9265, "spearman": 0.7532},
        },
        "all": {
            "rows": 1429,
            "tpot": {"median_abs_rel_error": 0.236, "p90_abs_rel_error": 0.5509, "spearman": 0.9033},
            "ttft": {"median_abs_rel_error": 0.5573, "p90_abs_rel_error": 0.9195, "spearman": 0.7711},
        },
        "disagg": {
            "rows": 84,
            "tpot": {"median_abs_rel_error": 0.1744, "p90_abs_rel_error": 0.3128, "spearman": 0.9805},
            "ttft": {"median_abs_rel_error": 0.6606, "p90_abs_rel_error": 0.81, "spearman": 0.7915},
        },
    },
    "rows": 2117,
}
# END FITTED

#: Per-device overrides (catalog name → efficiency), applied before the family table. Empty: no
#: device has measurements that set it apart from its family.
DEVICE_OVERRIDES: dict[str, Efficiency] = {}


def efficiency_for(hardware: HardwareSpec | str) -> Efficiency:
    """Calibrated efficiency: the device's override, else its family's, else the generic fit."""
    name = (hardware.name if isinstance(hardware, HardwareSpec) else hardware).strip().lower()
    if name in DEVICE_OVERRIDES:
        return DEVICE_OVERRIDES[name]
    family = family_of(name)
    if family in FAMILY_EFFICIENCY:
        return FAMILY_EFFICIENCY[family]
    generic = FAMILY_EFFICIENCY.get(GENERIC)
    if generic is None:
        return Efficiency(fitted_by="ideal: no calibration fitted yet")
    return generic.model_copy(
        update={"fitted_by": f"{generic.fitted_by}; extrapolated to {family} ({name}): no measurements of it"}
    )


def calibrate(hardware: HardwareSpec) -> HardwareSpec:
    """The catalog entry with its calibrated efficiency (the hook the hardware catalog applies)."""
    return hardware.model_copy(update={"efficiency": efficiency_for(hardware)})


__all__ = [
    "DEVICE_OVERRIDES",
    "FAMILY_EFFICIENCY",
    "FAMILY_PREFIXES",
    "FIT_DATE",
    "FIT_SOURCE",
    "FIT_STATISTICS",
    "GENERIC",
    "calibrate",
    "efficiency_for",
    "family_of",
]
