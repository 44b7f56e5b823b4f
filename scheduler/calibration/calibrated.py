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
        bandwidth=0.8927,
        compute=0.5247,
        step_overhead_seconds=0.0,
        collective_latency_seconds=3.508e-06,
        link_efficiency=0.3456,
        layer_overhead_seconds=6.857e-05,
        experts_bandwidth=0.6685,
        experts_compute=0.2126,
        request_overhead_seconds=0.06048,
        fitted_by="least squares on log error (2026-11-22): nvidia-blackwell rows",
    ),
    "nvidia-hopper": Efficiency(
        bandwidth=0.8927,
        compute=0.5247,
        step_overhead_seconds=0.0,
        collective_latency_seconds=3.508e-06,
        link_efficiency=0.5133,
        layer_overhead_seconds=6.857e-05,
        experts_bandwidth=0.6685,
        experts_compute=0.2126,
        request_overhead_seconds=0.06048,
        fitted_by="least squares on log error (2026-11-22): nvidia-hopper rows",
    ),
    "generic": Efficiency(
        bandwidth=0.881,
        compute=0.537,
        step_overhead_seconds=0.0,
        collective_latency_seconds=4.267e-06,
        link_efficiency=0.4196,
        layer_overhead_seconds=6.749e-05,
        experts_bandwidth=0.6773,
        experts_compute=0.2062,
        request_overhead_seconds=0.06243,
        fitted_by="least squares on log error (2026-11-22): one set for all rows",
    ),
}
FIT_STATISTICS: dict[str, Any] = {
    "fitted_rows": 1429,
    "in_sample": {
        "agg": {
            "rows": 1345,
            "tpot": {"median_abs_rel_error": 0.1327, "p90_abs_rel_error": 0.3925, "spearman": 0.9421},
            "ttft": {"median_abs_rel_error": 0.3763, "p90_abs_rel_error": 0.9239, "spearman": 0.8198},
        },
        "all": {
            "rows": 1429,
            "tpot": {"median_abs_rel_error": 0.1305, "p90_abs_rel_error": 0.3826, "spearman": 0.9441},
            "ttft": {"median_abs_rel_error": 0.3815, "p90_abs_rel_error": 0.9383, "spearman": 0.8338},
        },
        "disagg": {
            "rows": 84,
            "tpot": {"median_abs_rel_error": 0.115, "p90_abs_rel_error": 0.2807, "spearman": 0.9732},
            "ttft": {"median_abs_rel_error": 0.4419, "p90_abs_rel_error": 1.774, "spearman": 0.77},
        },
    },
    "leave_one_family_out": {
        "nvidia-blackwell": {
            "agg": {
                "rows": 822,
                "tpot": {"median_abs_rel_error": 0.1584, "p90_abs_rel_error": 0.5053, "spearman": 0.9424},
                "ttft": {"median_abs_rel_error": 0.3932, "p90_abs_rel_error": 0.9535, "spearman": 0.8027},
            },
            "all": {
                "rows": 878,
                "tpot": {"median_abs_rel_error": 0.1539, "p90_abs_rel_error": 0.4954, "spearman": 0.9451},
                "ttft": {"median_abs_rel_error": 0.3938, "p90_abs_rel_error": 0.9531, "spearman": 0.8199},
            },
            "disagg": {
                "rows": 56,
                "tpot": {"median_abs_rel_error": 0.09665, "p90_abs_rel_error": 0.256, "spearman": 0.9794},
                "ttft": {"median_abs_rel_error": 0.4315, "p90_abs_rel_error": 0.9311, "spearman": 0.7539},
            },
        },
        "nvidia-hopper": {
            "agg": {
                "rows": 523,
                "tpot": {"median_abs_rel_error": 0.1862, "p90_abs_rel_error": 0.4193, "spearman": 0.9123},
                "ttft": {"median_abs_rel_error": 0.3593, "p90_abs_rel_error": 0.9525, "spearman": 0.8431},
            },
            "all": {
                "rows": 551,
                "tpot": {"median_abs_rel_error": 0.1833, "p90_abs_rel_error": 0.4174, "spearman": 0.9134},
                "ttft": {"median_abs_rel_error": 0.3673, "p90_abs_rel_error": 1.034, "spearman": 0.8534},
            },
            "disagg": {
                "rows": 28,
                "tpot": {"median_abs_rel_error": 0.08761, "p90_abs_rel_error": 0.3471, "spearman": 0.9931},
                "ttft": {"median_abs_rel_error": 0.6008, "p90_abs_rel_error": 2.999, "spearman": 0.8192},
            },
        },
    },
    "leave_one_group_out": {
        "agg": {
            "rows": 1345,
            "tpot": {"median_abs_rel_error": 0.1768, "p90_abs_rel_error": 0.4234, "spearman": 0.9314},
            "ttft": {"median_abs_rel_error": 0.4437, "p90_abs_rel_error": 1.062, "spearman": 0.755},
        },
        "all": {
            "rows": 1429,
            "tpot": {"median_abs_rel_error": 0.172, "p90_abs_rel_error": 0.4144, "spearman": 0.9338},
            "ttft": {"median_abs_rel_error": 0.4479, "p90_abs_rel_error": 1.131, "spearman": 0.7773},
        },
        "disagg": {
            "rows": 84,
            "tpot": {"median_abs_rel_error": 0.1308, "p90_abs_rel_error": 0.29, "spearman": 0.973},
            "ttft": {"median_abs_rel_error": 0.4917, "p90_abs_rel_error": 2.186, "spearman": 0.7634},
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
