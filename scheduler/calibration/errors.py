"""Error statistics of predictions against measurements (validate and the fit report share them)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]


def abs_rel_errors(predicted: Sequence[float] | Array, measured: Sequence[float] | Array) -> Array:
    """|predicted / measured − 1| per row."""
    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    return np.asarray(np.abs(p / m - 1.0), dtype=np.float64)


def spearman(a: Sequence[float] | Array, b: Sequence[float] | Array) -> float | None:
    """Spearman rank correlation (ties get average ranks); None with < 3 rows or a constant side."""
    # Imported here: scipy.stats takes ~0.9 s to import, and every ``hetsched`` command (the
    # operator's start included) imports this module through the CLI's parser.
    from scipy.stats import rankdata

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.size < 3:
        return None
    rx = np.asarray(rankdata(x), dtype=np.float64)
    ry = np.asarray(rankdata(y), dtype=np.float64)
    sx, sy = rx.std(), ry.std()
    if sx == 0 or sy == 0:
        return None
    return float(np.mean((rx - rx.mean()) * (ry - ry.mean())) / (sx * sy))


def _quantile(errors: Array, q: float) -> float | None:
    return float(np.quantile(errors, q)) if errors.size else None


def metric_summary(predicted: Sequence[float] | Array, measured: Sequence[float] | Array) -> dict[str, Any]:
    """Median and p90 absolute relative error, the median signed relative error (the bias: > 0 when
    predictions are slower than measured, < 0 when they are optimistic), and the Spearman rank
    correlation."""
    p = np.asarray(predicted, dtype=np.float64)
    m = np.asarray(measured, dtype=np.float64)
    keep = np.isfinite(p) & np.isfinite(m)
    p, m = p[keep], m[keep]
    e = abs_rel_errors(p, m)
    return {
        "median_abs_rel_error": _quantile(e, 0.5),
        "p90_abs_rel_error": _quantile(e, 0.9),
        "median_rel_error": _quantile(p / m - 1.0, 0.5),
        "spearman": spearman(p, m),
    }


def summary(
    predicted_tpot: Sequence[float] | Array,
    measured_tpot: Sequence[float] | Array,
    predicted_ttft: Sequence[float] | Array,
    measured_ttft: Sequence[float] | Array,
) -> dict[str, Any]:
    return {
        "rows": len(measured_tpot),
        "tpot": metric_summary(predicted_tpot, measured_tpot),
        "ttft": metric_summary(predicted_ttft, measured_ttft),
    }


def fmt_fraction(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:.1f}%"


def fmt_signed_fraction(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{100 * x:+.1f}%"


def fmt_corr(x: float | None) -> str:
    return "-" if x is None or math.isnan(x) else f"{x:.3f}"


__all__ = [
    "abs_rel_errors",
    "fmt_corr",
    "fmt_fraction",
    "fmt_signed_fraction",
    "metric_summary",
    "spearman",
    "summary",
]
