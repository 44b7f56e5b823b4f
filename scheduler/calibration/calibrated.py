"""Calibrated efficiencies per hardware family (and per-device overrides) for the roofline.

The hardware catalog applies them: ``calibrate(spec)`` returns the catalog entry with its
``efficiency`` replaced by the calibrated one (``efficiency_for``). ``--efficiency ideal`` ignores
them (``IDEAL``: pure roofline).

The numbers between the ``BEGIN FITTED`` and ``END FITTED`` markers are written by
``make calibrate`` (``python -m hetsched.scheduler.calibration.fit --write``): a least-squares fit on
log errors of the measured serving runs in ``benchmarks/data/serving-measurements.csv``
(docs/calibration.md). Families without measurements use the ``generic`` entry, fitted with one
parameter set over all the data; that is an extrapolation, and ``fitted_by`` says so.

``ENGINE_EFFICIENCY`` holds the terms that are serving-engine software (the fixed cost per request
and per layer), one set per engine (``hetsched.scheduler.engines``: ``vllm``, ``sglang``,
``trtllm``). ``efficiency_for(hardware, engine)`` / ``with_engine`` put them into the hardware's
entry; an unknown engine (``None``) keeps the shared values.
"""

from __future__ import annotations

from typing import Any

from hetsched.scheduler.catalog.hardware import IDEAL, Efficiency, HardwareSpec

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
FIT_DATE = "2026-11-23"
FIT_SOURCE = "benchmarks/data/serving-measurements.csv"
FAMILY_EFFICIENCY: dict[str, Efficiency] = {
    "nvidia-blackwell": Efficiency(
        bandwidth=0.8921,
        compute=0.538,
        step_overhead_seconds=0.0,
        collective_latency_seconds=0.0,
        link_efficiency=0.3268,
        layer_overhead_seconds=7.636e-05,
        experts_bandwidth=0.6994,
        experts_compute=0.2121,
        request_overhead_seconds=0.06093,
        fitted_by="least squares on log error (2026-11-23): nvidia-blackwell rows",
    ),
    "nvidia-hopper": Efficiency(
        bandwidth=0.8921,
        compute=0.538,
        step_overhead_seconds=0.0,
        collective_latency_seconds=0.0,
        link_efficiency=0.5226,
        layer_overhead_seconds=7.636e-05,
        experts_bandwidth=0.6994,
        experts_compute=0.2121,
        request_overhead_seconds=0.06093,
        fitted_by="least squares on log error (2026-11-23): nvidia-hopper rows",
    ),
    "generic": Efficiency(
        bandwidth=0.8908,
        compute=0.549,
        step_overhead_seconds=0.0,
        collective_latency_seconds=0.0,
        link_efficiency=0.3992,
        layer_overhead_seconds=7.695e-05,
        experts_bandwidth=0.7011,
        experts_compute=0.2078,
        request_overhead_seconds=0.06273,
        fitted_by="least squares on log error (2026-11-23): one set for all rows",
    ),
}
ENGINE_EFFICIENCY: dict[str, dict[str, float]] = {
    "sglang": {"request_overhead_seconds": 0.4063, "layer_overhead_seconds": 0.0001025},
    "trtllm": {"request_overhead_seconds": 0.06695, "layer_overhead_seconds": 6.622e-05},
    "vllm": {"request_overhead_seconds": 0.02598, "layer_overhead_seconds": 7.913e-05},
}
FIT_STATISTICS: dict[str, Any] = {
    "fitted_rows": 1429,
    "in_sample": {
        "agg": {
            "rows": 1345,
            "tpot": {
                "median_abs_rel_error": 0.1214,
                "median_rel_error": 0.009953,
                "p90_abs_rel_error": 0.3751,
                "spearman": 0.9492,
            },
            "ttft": {
                "median_abs_rel_error": 0.3107,
                "median_rel_error": 0.02857,
                "p90_abs_rel_error": 0.9037,
                "spearman": 0.8961,
            },
        },
        "all": {
            "rows": 1429,
            "tpot": {
                "median_abs_rel_error": 0.1216,
                "median_rel_error": 0.001188,
                "p90_abs_rel_error": 0.3691,
                "spearman": 0.95,
            },
            "ttft": {
                "median_abs_rel_error": 0.3179,
                "median_rel_error": 0.02815,
                "p90_abs_rel_error": 0.9107,
                "spearman": 0.9011,
            },
        },
        "disagg": {
            "rows": 84,
            "tpot": {
                "median_abs_rel_error": 0.1422,
                "median_rel_error": -0.1315,
                "p90_abs_rel_error": 0.3084,
                "spearman": 0.9707,
            },
            "ttft": {
                "median_abs_rel_error": 0.436,
                "median_rel_error": -0.004973,
                "p90_abs_rel_error": 2.0,
                "spearman": 0.7842,
            },
        },
    },
    "leave_one_family_out": {
        "nvidia-blackwell": {
            "agg": {
                "rows": 822,
                "tpot": {
                    "median_abs_rel_error": 0.1637,
                    "median_rel_error": 0.1068,
                    "p90_abs_rel_error": 0.5764,
                    "spearman": 0.9364,
                },
                "ttft": {
                    "median_abs_rel_error": 0.3254,
                    "median_rel_error": -0.1518,
                    "p90_abs_rel_error": 0.9542,
                    "spearman": 0.8943,
                },
            },
            "all": {
                "rows": 878,
                "tpot": {
                    "median_abs_rel_error": 0.1576,
                    "median_rel_error": 0.0963,
                    "p90_abs_rel_error": 0.5628,
                    "spearman": 0.9395,
                },
                "ttft": {
                    "median_abs_rel_error": 0.325,
                    "median_rel_error": -0.1553,
                    "p90_abs_rel_error": 0.951,
                    "spearman": 0.9014,
                },
            },
            "disagg": {
                "rows": 56,
                "tpot": {
                    "median_abs_rel_error": 0.1094,
                    "median_rel_error": -0.01537,
                    "p90_abs_rel_error": 0.2569,
                    "spearman": 0.98,
                },
                "ttft": {
                    "median_abs_rel_error": 0.2841,
                    "median_rel_error": -0.1701,
                    "p90_abs_rel_error": 0.9091,
                    "spearman": 0.7826,
                },
            },
        },
        "nvidia-hopper": {
            "agg": {
                "rows": 523,
                "tpot": {
                    "median_abs_rel_error": 0.1753,
                    "median_rel_error": -0.061,
                    "p90_abs_rel_error": 0.4625,
                    "spearman": 0.9085,
                },
                "ttft": {
                    "median_abs_rel_error": 0.3899,
                    "median_rel_error": 0.1354,
                    "p90_abs_rel_error": 1.57,
                    "spearman": 0.8461,
                },
            },
            "all": {
                "rows": 551,
                "tpot": {
                    "median_abs_rel_error": 0.1756,
                    "median_rel_error": -0.08342,
                    "p90_abs_rel_error": 0.4624,
                    "spearman": 0.9075,
                },
                "ttft": {
                    "median_abs_rel_error": 0.4074,
                    "median_rel_error": 0.1517,
                    "p90_abs_rel_error": 1.644,
                    "spearman": 0.8525,
                },
            },
            "disagg": {
                "rows": 28,
                "tpot": {
                    "median_abs_rel_error": 0.1888,
                    "median_rel_error": -0.1888,
                    "p90_abs_rel_error": 0.4176,
                    "spearman": 0.9933,
                },
                "ttft": {
                    "median_abs_rel_error": 0.6669,
                    "median_rel_error": 0.6401,
                    "p90_abs_rel_error": 4.02,
                    "spearman": 0.8254,
                },
            },
        },
    },
    "leave_one_group_out": {
        "agg": {
            "rows": 1345,
            "tpot": {
                "median_abs_rel_error": 0.1482,
                "median_rel_error": 0.01228,
                "p90_abs_rel_error": 0.3945,
                "spearman": 0.9423,
            },
            "ttft": {
                "median_abs_rel_error": 0.3611,
                "median_rel_error": -0.004231,
                "p90_abs_rel_error": 0.9871,
                "spearman": 0.8611,
            },
        },
        "all": {
            "rows": 1429,
            "tpot": {
                "median_abs_rel_error": 0.1483,
                "median_rel_error": 0.004735,
                "p90_abs_rel_error": 0.3897,
                "spearman": 0.9434,
            },
            "ttft": {
                "median_abs_rel_error": 0.3651,
                "median_rel_error": -0.004231,
                "p90_abs_rel_error": 1.061,
                "spearman": 0.8699,
            },
        },
        "disagg": {
            "rows": 84,
            "tpot": {
                "median_abs_rel_error": 0.163,
                "median_rel_error": -0.149,
                "p90_abs_rel_error": 0.3217,
                "spearman": 0.9733,
            },
            "ttft": {
                "median_abs_rel_error": 0.453,
                "median_rel_error": 0.007559,
                "p90_abs_rel_error": 2.382,
                "spearman": 0.7668,
            },
        },
    },
    "rows": 2117,
}
# END FITTED

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
    "FIT_DATE",
    "FIT_SOURCE",
    "FIT_STATISTICS",
    "GENERIC",
    "calibrate",
    "efficiency_for",
    "family_of",
    "with_engine",
]
