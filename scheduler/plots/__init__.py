"""Figures from the estimator's and the planner's output: the paper's Figures 1–4, rooflines, placements.

Each figure is two functions:

* a pure *series* function (``*_series``) that calls the estimator (or takes a plan) and returns a
  frozen dataclass of plain numbers — what is plotted, testable without looking at pixels;
* a *render* function (``render_*``) that draws that series with matplotlib (imported lazily, Agg
  canvas, no pyplot state) and returns the ``Figure``.

One module per figure (``roofline``, ``regime_map``, ``agents``, ``attention``, ``moe``,
``placement``); ``_figure`` holds what they share, with ``save_figure``, which writes PNG and SVG
deterministically (no timestamps, fixed SVG ids) so that ``make figures`` only changes
``docs/figures/`` when the numbers change. ``report`` is the HTML plan report (``hetsched
report``); ``cli`` holds ``hetsched plot`` and ``hetsched report``.

Units: memory in GB (10⁹ bytes, as datasheets state capacities), OI in FLOP/byte, compute in
FLOP/s. Every number comes from :func:`~hetsched.scheduler.estimator.cost.estimate_phase` and
:func:`~hetsched.scheduler.estimator.roofline.evaluate`; nothing is re-derived here.
"""

PLOT_NAMES: tuple[str, ...] = ("roofline", "regime-map", "agents", "attention", "moe", "placement")
