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
        bandwidth=0.9213,
        compute=0.5241,
        step_overhead_seconds=0.0,
        collective_latency_seconds=0.0,
        link_efficiency=0.3379,
        layer_overhead_seconds=7.588e-05,
        experts_bandwidth=0.649,
        experts_compute=0.2146,
        request_overhead_seconds=0.06011,
        fitted_by="least squares on log error (2026-11-22): nvidia-blackwell rows",
    ),
    "nvidia-hopper": Efficiency(
        bandwidth=0.9213,
        compute=0.5241,
        step_overhead_seconds=0.0,
        collective_latency_seconds=0.0,
        link_efficiency=0.5061,
        layer_overhead_seconds=7.588e-05,
        experts_bandwidth=0.649,
        experts_compute=0.2146,
        request_overhead_seconds=0.06011,
        fitted_by="least squares on log error (2026-11-22): nvidia-hopper rows",
    ),
    "generic": Efficiency(
        bandwidth=0.9171,
        compute=0.5348,
        step_overhead_seconds=0.0,
        collective_latency_seconds=0.0,
        link_efficiency=0.4091,
        layer_overhead_seconds=7.641e-05,
        experts_bandwidth=0.6522,
        experts_compute=0.2092,
        request_overhead_seconds=0.06196,
        fitted_by="least squares on log error (2026-11-22): one set for all rows",
    ),
}
FIT_STATISTICS: dict[str, Any] = {
    "fitted_rows": 1429,
    "in_sample": {
        "agg": {
            "rows": 1345,
            "tpot": {"median_abs_rel_error": 0.1303, "p90_abs_rel_error": 0.3935, "spearman": 0.942},
            "ttft": {"median_abs_rel_error": 0.3784, "p90_abs_rel_error": 0.9217, "spearman": 0.8194},
        },
        "all": {
            "rows": 1429,
            "tpot": {"median_abs_rel_error": 0.1255, "p90_abs_rel_error": 0.384, "spearman": 0.9438},
            "ttft": {"median_abs_rel_error": 0.3809, "p90_abs_rel_error": 0.9357, "spearman": 0.8334},
        },
        "disagg": {
            "rows": 84,
            "tpot": {"median_abs_rel_error": 0.1136, "p90_abs_rel_error": 0.2814, "spearman": 0.9737},
            "ttft": {"median_abs_rel_error": 0.4511, "p90_abs_rel_error": 1.792, "spearman": 0.7703},
        },
    },
    "leave_one_family_out": {
        "nvidia-blackwell": {
            "agg": {
                "rows": 822,
                "tpot": {"median_abs_rel_error": 0.1556, "p90_abs_rel_error": 0.512, "spearman": 0.9422},
                "ttft": {"median_abs_rel_error": 0.3907, "p90_abs_rel_error": 0.9534, "spearman": 0.8019},
            },
            "all": {
                "rows": 878,
                "tpot": {"median_abs_rel_error": 0.1492, "p90_abs_rel_error": 0.5013, "spearman": 0.9449},
                "ttft": {"median_abs_rel_error": 0.392, "p90_abs_rel_error": 0.9531, "spearman": 0.8192},
            },
            "disagg": {
                "rows": 56,
                "tpot": {"median_abs_rel_error": 0.1005, "p90_abs_rel_error": 0.2591, "spearman": 0.9794},
                "ttft": {"median_abs_rel_error": 0.4296, "p90_abs_rel_error": 0.9312, "spearman": 0.7539},
            },
        },
        "nvidia-hopper": {
            "agg": {
                "rows": 523,
                "tpot": {"median_abs_rel_error": 0.1814, "p90_abs_rel_error": 0.4237, "spearman": 0.91},
                "ttft": {"median_abs_rel_error": 0.3552, "p90_abs_rel_error": 0.9819, "spearman": 0.8388},
            },
            "all": {
                "rows": 551,
                "tpot": {"median_abs_rel_error": 0.1763, "p90_abs_rel_error": 0.4169, "spearman": 0.9112},
                "ttft": {"median_abs_rel_error": 0.3818, "p90_abs_rel_error": 1.087, "spearman": 0.8497},
            },
            "disagg": {
                "rows": 28,
                "tpot": {"median_abs_rel_error": 0.09264, "p90_abs_rel_error": 0.3494, "spearman": 0.9931},
                "ttft": {"median_abs_rel_error": 0.5929, "p90_abs_rel_error": 3.233, "spearman": 0.8033},
            },
        },
    },
    "leave_one_group_out": {
        "agg": {
            "rows": 1345,
            "tpot": {"median_abs_rel_error": 0.1639, "p90_abs_rel_error": 0.4223, "spearman": 0.9349},
            "ttft": {"median_abs_rel_error": 0.4516, "p90_abs_rel_error": 1.087, "spearman": 0.7532},
        },
        "all": {
            "rows": 1429,
            "tpot": {"median_abs_rel_error": 0.1602, "p90_abs_rel_error": 0.4139, "spearman": 0.937},
            "ttft": {"median_abs_rel_error": 0.4528, "p90_abs_rel_error": 1.148, "spearman": 0.7756},
        },
        "disagg": {
            "rows": 84,
            "tpot": {"median_abs_rel_error": 0.1307, "p90_abs_rel_error": 0.2914, "spearman": 0.9737},
            "ttft": {"median_abs_rel_error": 0.4956, "p90_abs_rel_error": 2.249, "spearman": 0.7636},
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
