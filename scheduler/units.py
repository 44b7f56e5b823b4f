"""Units and how numbers print: one home for the constants and the formatters every output shares.

Sizes: ``GB`` = 10⁹ bytes (datasheet capacities and bandwidths), ``GIB`` = 2³⁰ bytes (memory as the
planner reports it); ``T`` = 10¹² (TFLOP/s, TB/s). The formatters never change a number, only
how it is written; ``-`` stands for a missing value in the plain-text tables. Kubernetes
quantities (``500m``, ``64Gi``) are read here too (:func:`kube_quantity`).
"""

from __future__ import annotations

import re
from decimal import Decimal

GB = 1e9
GIB = float(1 << 30)
T = 1e12


def fmt_seconds(s: float) -> str:
    """``1.24 s``, ``53.2 ms``, ``870 µs``."""
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} µs"


def fmt_optional_seconds(s: float | None) -> str:
    """:func:`fmt_seconds`, or ``-`` when there is no time."""
    return "-" if s is None else fmt_seconds(s)


def fmt_money(x: float | None, digits: int = 2) -> str:
    """A dollar figure without the sign (``0.876``), or ``-``."""
    return "-" if x is None else f"{x:.{digits}f}"


def fmt_gib(b: float, digits: int = 1) -> str:
    """Bytes in GiB: ``17.7 GiB``."""
    return f"{b / GIB:.{digits}f} GiB"


def fmt_si(value: float, unit: str) -> str:
    """Three significant digits and an SI prefix: ``2.25 PFLOP/s``, ``8 TB/s``."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def fmt_tokens(value: float) -> str:
    """Token counts: binary K/M for powers-of-two style lengths (131072 → 128K), decimal otherwise."""
    if value >= 1024 and value == int(value):
        n = int(value)
        if n % (1 << 20) == 0:
            return f"{n >> 20}M"
        if n % 1024 == 0:
            return f"{n >> 10}K"
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    if value >= 1e3:
        return f"{value / 1e3:.3g}K"
    return f"{value:.0f}"


# A Kubernetes resource.Quantity (``500m``, ``2``, ``1.5Gi``, ``1e3``, ``1E`` = 10¹⁸): the grammar of
# k8s.io/apimachinery's ParseQuantity, which the API server applies to every request and limit.
_KUBE_QUANTITY = re.compile(
    r"^(?P<sign>[+-]?)(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"(?:(?P<exponent>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?))$"
)
_DECIMAL_SI = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BINARY_SI = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}


def kube_quantity(text: str) -> Decimal:
    """The exact value of a Kubernetes quantity; ValueError when the API server would not parse it."""
    m = _KUBE_QUANTITY.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (such as 500m, 2, 1.5Gi, 1e3)")
    value = Decimal(m["number"])
    if m["exponent"]:
        value = value.scaleb(int(m["exponent"][1:]))
    elif m["suffix"] in _BINARY_SI:
        value *= 2 ** _BINARY_SI[m["suffix"]]
    else:
        value = value.scaleb(_DECIMAL_SI[m["suffix"]])
    return -value if m["sign"] == "-" else value


__all__ = [
    "GB",
    "GIB",
    "T",
    "fmt_gib",
    "fmt_money",
    "fmt_optional_seconds",
    "fmt_seconds",
    "fmt_si",
    "fmt_tokens",
    "kube_quantity",
]
