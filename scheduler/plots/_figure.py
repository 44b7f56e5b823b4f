"""What every figure shares: the Agg canvas, the palette, and deterministic PNG/SVG output.

``save_figure`` writes PNG and SVG deterministically (no timestamps, fixed SVG ids) so that
``make figures`` only changes ``docs/figures/`` when the numbers change.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


def figure(width: float, height: float) -> tuple[Figure, Axes]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    return fig, ax


def figure_row(n: int, width: float, height: float) -> tuple[Figure, list[Axes]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, n, i + 1) for i in range(n)]
    return fig, axes


def logspace(lo: float, hi: float, n: int) -> list[float]:
    a, b = math.log10(lo), math.log10(hi)
    return [10 ** (a + (b - a) * i / (n - 1)) for i in range(n)]


def times(devices: int) -> str:
    return f" ×{devices}" if devices > 1 else ""


def figure_bytes(fig: Figure, fmt: str = "png") -> bytes:
    """The figure as PNG or SVG bytes, without timestamps (reproducible output).

    PNGs are reduced to a 256-colour palette (flat-colour charts lose nothing visible; the files
    are about a third of the size), SVG text stays text.
    """
    import matplotlib

    buf = io.BytesIO()
    metadata: dict[str, Any] = {"Software": None} if fmt == "png" else {"Date": None, "Creator": None}
    with matplotlib.rc_context({"svg.hashsalt": "hetsched", "svg.fonttype": "none"}):
        fig.savefig(buf, format=fmt, metadata=metadata)
    if fmt != "png":
        return buf.getvalue()
    from PIL import Image

    buf.seek(0)
    with Image.open(buf) as im:
        small = im.convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    small.save(out, format="PNG", optimize=True)
    return out.getvalue()


def save_figure(
    fig: Figure, out_dir: str | Path, name: str, formats: Sequence[str] = ("png", "svg")
) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for fmt in formats:
        path = out / f"{name}.{fmt}"
        path.write_bytes(figure_bytes(fig, fmt))
        paths.append(path)
    return paths
