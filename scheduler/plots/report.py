"""``hetsched report``: one self-contained HTML file explaining a plan.

Contents: a summary, the placement figure, the plan table, the pools, the cost of the plan against
two homogeneous baselines, and per workload its phases (pool, TP, batch, regime, latency against
the SLO), a roofline of its prefill and decode on every pool's hardware, and the pools each phase
did not use with the planner's reason.

Baselines (computed with the planner itself, on a cluster restricted to one pool whose device
count is not limited, so they show what a homogeneous fleet would cost):

* **newest GPU**: every workload on the GPU pool with the highest dense bf16 peak;
* **cheapest single pool**: each workload, both phases, on the one pool where it is cheapest.

The file is self-contained: inline CSS, figures as base64 PNG, no script, and a Content-Security-
Policy that forbids any fetch, so it opens offline and leaks nothing.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hetsched.scheduler.catalog.hardware import DeviceKind, HardwareSpec
from hetsched.scheduler.estimator.cost import Phase, estimate_phase
from hetsched.scheduler.estimator.roofline import max_batch_that_fits
from hetsched.scheduler.pools import Cluster, Pool

if TYPE_CHECKING:
    from hetsched.scheduler.placement import Plan, WorkloadPlacement, WorkloadRequest
    from hetsched.scheduler.plots.placement import CostComparisonSeries
    from matplotlib.figure import Figure

UNLIMITED_DEVICES = 4096  # a baseline pool's device count (enough for any catalog workload)


@dataclass(frozen=True, slots=True)
class PlanContext:
    """A plan with what produced it: the cluster, the resolved workloads, the input paths."""

    plan: Plan
    cluster: Cluster
    requests: tuple[WorkloadRequest, ...]
    pools_path: str
    workload_paths: tuple[str, ...]

    @property
    def plan_dict(self) -> dict[str, Any]:
        return dict(self.plan.to_dict())

    @property
    def pool_rows(self) -> list[dict[str, Any]]:
        return [
            {
                "name": p.name,
                "hardware": p.hardware.name,
                "total_devices": p.total_devices,
                "free_devices": p.free_devices,
                "price_per_device_hour": p.price_per_device_hour,
            }
            for p in self.cluster.pools
        ]

    def request(self, key: str) -> WorkloadRequest:
        for r in self.requests:
            if r.key == key:
                return r
        raise KeyError(key)


def build_plan(pools_path: str | Path, workload_paths: Sequence[str | Path]) -> PlanContext:
    """Read the pool file and AgentWorkload manifests and run the planner on them."""
    from hetsched.scheduler.placement import load_requests, plan
    from hetsched.scheduler.pools import build_cluster

    cluster = build_cluster(pools_path)
    requests = tuple(load_requests([str(p) for p in workload_paths]))
    if not requests:
        raise ValueError("no AgentWorkload manifests in " + ", ".join(str(p) for p in workload_paths))
    return PlanContext(
        plan(requests, cluster), cluster, requests, str(pools_path), tuple(str(p) for p in workload_paths)
    )


# ---- baselines ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorkloadCost:
    workload: str  # namespace/name
    where: str  # pools used ("h100", "l4 → a100"), or "—" when not placed
    devices: int
    cost_per_hour: float | None  # None: not placed
    cost_per_million_tokens: float | None
    detail: str = ""
    pool_devices: tuple[tuple[str, int], ...] = ()  # devices per pool


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    description: str
    costs: tuple[WorkloadCost, ...]  # in the order of PlanContext.plan.workloads


def unlimited(pool: Pool, devices: int = UNLIMITED_DEVICES) -> Pool:
    """The pool with enough nodes for ``devices`` devices, all free."""
    nodes = max(pool.nodes, math.ceil(devices / pool.devices_per_node))
    return replace(pool, nodes=nodes, free_devices=nodes * pool.devices_per_node)


def newest_gpu_pool(cluster: Cluster) -> Pool | None:
    """The GPU pool with the highest dense bf16 peak (the newest generation in practice)."""
    gpus = [p for p in cluster.pools if p.hardware.kind is DeviceKind.GPU]
    if not gpus:
        return None
    return max(gpus, key=lambda p: (p.hardware.peak_for("bf16"), p.hardware.memory_bandwidth, p.name))


def _where(w: WorkloadPlacement) -> str:
    if not w.placed:
        return "—"
    if w.prefill.pool == w.decode.pool:
        return str(w.prefill.pool)
    return f"{w.prefill.pool} → {w.decode.pool}"


def _devices(w: WorkloadPlacement) -> int:
    if not w.placed:
        return 0
    if w.prefill.shared_replicas:
        return int(w.prefill.devices)
    return int(w.prefill.devices + w.decode.devices)


def workload_cost(w: WorkloadPlacement) -> WorkloadCost:
    detail = "" if w.placed else (w.detail or w.reason or "not placed")
    per_pool: dict[str, int] = {}
    if w.placed:
        phases = (w.prefill,) if w.prefill.shared_replicas else (w.prefill, w.decode)
        for ph in phases:
            if ph.pool:
                per_pool[ph.pool] = per_pool.get(ph.pool, 0) + int(ph.devices)
    return WorkloadCost(
        w.key,
        _where(w),
        _devices(w),
        w.cost_per_hour if w.placed else None,
        w.cost_per_million_tokens,
        detail,
        tuple(sorted(per_pool.items())),
    )


def over_free_devices(ctx: PlanContext, strategy: Strategy) -> list[str]:
    """Pools where the strategy needs more devices than the pool file has free ("a100: 28 > 16 free")."""
    need: dict[str, int] = {}
    for c in strategy.costs:
        for pool, n in c.pool_devices:
            need[pool] = need.get(pool, 0) + n
    out = []
    for pool, n in sorted(need.items()):
        free = ctx.cluster.pool(pool).free_devices
        if n > free:
            out.append(f"{pool}: needs {n} devices, {free} free")
    return out


def _plan_on(
    ctx: PlanContext, pool: Pool, requests: Sequence[WorkloadRequest]
) -> dict[str, WorkloadPlacement]:
    from hetsched.scheduler.placement import plan

    restricted = replace(ctx.cluster, pools=(unlimited(pool),), unavailable=())
    # The workloads' own pool constraints name pools of the real cluster; a baseline ignores them.
    free = [
        replace(r, prefill_pools=frozenset(), decode_pools=frozenset(), excluded_pools=frozenset())
        for r in requests
    ]
    result = plan(free, restricted)
    return {w.key: w for w in result.workloads}


def baselines(ctx: PlanContext) -> list[Strategy]:
    """The plan and the two baselines (see the module docstring), per workload."""
    keys = [w.key for w in ctx.plan.workloads]
    reqs = [ctx.request(k) for k in keys]
    out = [
        Strategy(
            "hetsched plan",
            "this plan, on the pools' free devices",
            tuple(workload_cost(w) for w in ctx.plan.workloads),
        )
    ]
    newest = newest_gpu_pool(ctx.cluster)
    if newest is not None:
        placed = _plan_on(ctx, newest, reqs)
        out.append(
            Strategy(
                f"all on {newest.hardware.name}",
                f"every workload on the newest GPU pool ({newest.name}: {newest.hardware.name}, "
                "highest bf16 peak), devices not limited to the pool's",
                tuple(workload_cost(placed[k]) for k in keys),
            )
        )
    best: dict[str, WorkloadCost] = {}
    for pool in ctx.cluster.pools:
        placed = _plan_on(ctx, pool, reqs)
        for k in keys:
            c = workload_cost(placed[k])
            if c.cost_per_hour is None:
                continue
            if k not in best or (best[k].cost_per_hour or math.inf) > c.cost_per_hour:
                best[k] = c
    out.append(
        Strategy(
            "cheapest single pool",
            "each workload, both phases, on the one pool where it is cheapest, devices not limited to the pool's "
            "(so a baseline can cost less than the plan when the plan is short of free devices)",
            tuple(
                best.get(k) or WorkloadCost(k, "—", 0, None, None, "no single pool can serve it")
                for k in keys
            ),
        )
    )
    return out


def cost_comparison_series(strategies: Sequence[Strategy]) -> CostComparisonSeries:
    from hetsched.scheduler.plots.placement import CostComparisonSeries

    return CostComparisonSeries(
        workloads=tuple(c.workload.split("/", 1)[-1] for c in strategies[0].costs),
        strategies=tuple(s.name for s in strategies),
        cost_per_hour=tuple(tuple(c.cost_per_hour for c in s.costs) for s in strategies),
        where=tuple(tuple(c.where for c in s.costs) for s in strategies),
    )


# ---- per-workload roofline ---------------------------------------------------------------------


def _fitting_tp(req: WorkloadRequest, pool: Pool) -> int:
    """Smallest power-of-two TP within a node at which weights and one request fit (else 1)."""
    tp = 1
    while tp <= pool.devices_per_node:
        cost = estimate_phase(
            req.model,
            Phase.DECODE,
            batch=1,
            new_tokens=1,
            context_tokens=max(req.capacity_context - 1, 0),
            precisions=req.precisions,
            tp=tp,
        )
        if max_batch_that_fits(cost, pool.hardware, tp) >= 1:
            return tp
        tp *= 2
    return 1


def workload_roofline(ctx: PlanContext, w: WorkloadPlacement) -> Any:
    """Roofline series of a workload on every pool's hardware, at the plan's TP and batches."""
    from hetsched.scheduler.estimator.analysis import Scenario, decode_context
    from hetsched.scheduler.plots.roofline import roofline_series

    req = ctx.request(w.key)
    hardware: list[HardwareSpec] = []
    tps: dict[str, int] = {}
    for pool in ctx.cluster.pools:
        if pool.hardware.name in tps:
            continue
        hardware.append(pool.hardware)
        if w.decode.pool == pool.name and w.decode.tp:
            tps[pool.hardware.name] = w.decode.tp
        elif w.prefill.pool == pool.name and w.prefill.tp:
            tps[pool.hardware.name] = w.prefill.tp
        else:
            tps[pool.hardware.name] = _fitting_tp(req, pool)
    context = decode_context(req.cached_tokens, req.prompt_tokens, req.output_tokens)
    scenario = Scenario(w.decode.batch or 1, req.prompt_tokens, req.cached_tokens, context, req.output_tokens)
    return roofline_series(
        req.model,
        hardware,
        scenario,
        agent=req.agent.name,
        precisions=req.precisions,
        tp=tps,
        prefill_batch=w.prefill.batch or 1,
    )


# ---- HTML ---------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d1d1f;
  margin:0;background:#f6f7f9}
main{max-width:1200px;margin:0 auto;padding:24px 32px 48px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:2px solid #e3e6ea;
  padding-bottom:4px}h3{font-size:16px;margin:22px 0 6px}
.meta{color:#5f6368;font-size:12.5px}
.cards{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}
.card{flex:1 1 180px;border:1px solid #e3e6ea;border-radius:8px;padding:10px 14px;background:#fbfcfd}
.card b{display:block;font-size:20px}.card span{color:#5f6368;font-size:12px}
table{border-collapse:collapse;width:100%;margin:8px 0 12px;font-size:12.5px}
th,td{border:1px solid #e3e6ea;padding:4px 7px;text-align:left;vertical-align:top}
th{background:#f1f3f5;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.total td{font-weight:600;background:#f8f9fa}table.fixed{table-layout:fixed}
.figure{margin:10px 0 18px;text-align:center}.figure img{max-width:100%;height:auto;border:1px solid #eef0f2}
.figure figcaption{color:#5f6368;font-size:12px;margin-top:4px}
.tag{display:inline-block;border-radius:10px;padding:0 8px;font-size:11.5px;font-weight:600;
  white-space:nowrap}
.compute-bound{background:#dbe7fb;color:#1c4587}.bandwidth-bound{background:#fdebd0;color:#7f4b00}
.capacity-bound{background:#f8d7d7;color:#8a1111}.does-not-fit{background:#e4e4e4;color:#333}
.ok{color:#1e7d32;font-weight:600}.bad{color:#b00020;font-weight:600}
.workload{border:1px solid #e3e6ea;border-radius:8px;padding:4px 18px 10px;margin:18px 0}
.reason{font-family:ui-monospace,"DejaVu Sans Mono",monospace;font-size:11.5px}
.note{color:#5f6368;font-size:12.5px}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _saving(plan: float, baseline: float) -> str:
    """ "saves 38%" / "costs 5% more" / "same cost": the plan against a baseline's $/h."""
    if baseline <= 0:
        return "—"
    frac = (baseline - plan) / baseline
    if abs(frac) < 0.005:
        return "same cost"
    return f"saves {frac:.0%}" if frac > 0 else f"costs {-frac:.0%} more"


def _money(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"${value:,.{digits}f}"


def _secs(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 1e3:.1f} ms" if value < 1 else f"{value:.2f} s"


def _tag(regime: str | None) -> str:
    return f'<span class="tag {_e(regime)}">{_e(regime)}</span>' if regime else "—"


def _slo(value: float | None, limit: float) -> str:
    if value is None:
        return f"— (SLO {_secs(limit)})"
    cls = "ok" if value <= limit * (1 + 1e-9) else "bad"
    return f'<span class="{cls}">{_secs(value)}</span> / {_secs(limit)}'


def _img(fig: Figure, alt: str, caption: str = "") -> str:
    from hetsched.scheduler.plots._figure import figure_bytes

    data = base64.b64encode(figure_bytes(fig, "png")).decode("ascii")
    cap = f"<figcaption>{_e(caption)}</figcaption>" if caption else ""
    return f'<figure class="figure"><img alt="{_e(alt)}" src="data:image/png;base64,{data}">{cap}</figure>'


def _table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    num: Sequence[int] = (),
    total: Sequence[str] | None = None,
) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for row in [*rows, *([total] if total else [])]:
        cells = "".join(
            f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        body.append(
            f'<tr class="total">{cells}</tr>' if total is not None and row is total else f"<tr>{cells}</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _demand(w: WorkloadPlacement) -> str:
    if w.concurrent_sessions is not None:
        rps = f" (≈ {w.requests_per_second:.2f} req/s)" if w.requests_per_second else ""
        return f"{w.concurrent_sessions} sessions{rps}"
    return f"{w.requests_per_second:g} req/s" if w.requests_per_second is not None else "—"


def _phase_cell(ph: Any) -> str:
    if not ph.pool:
        return "—"
    return f"{_e(ph.pool)} ({_e(ph.hardware)}), TP {ph.tp} × {ph.replicas}, batch {ph.batch}"


def _plan_table(ctx: PlanContext) -> str:
    rows = []
    for w in ctx.plan.workloads:
        req = ctx.request(w.key)
        shared = " (shared replicas)" if w.prefill.shared_replicas else ""
        rows.append(
            [
                f"<b>{_e(w.name)}</b><br><span class='note'>{_e(w.model)} · {_e(w.agent)}</span>",
                _e(w.mode or "not placed") + shared,
                _e(_demand(w)),
                _phase_cell(w.prefill) + "<br>" + _tag(w.prefill.regime),
                _phase_cell(w.decode) + "<br>" + _tag(w.decode.regime),
                _slo(w.ttft_seconds, req.ttft_slo_seconds),
                _slo(w.tpot_seconds, req.tpot_slo_seconds),
                _money(w.cost_per_hour if w.placed else None),
                _money(w.cost_per_million_tokens, 3),
            ]
        )
    total = ["<b>total</b>", "", "", "", "", "", "", _money(ctx.plan.total_cost_per_hour), ""]
    return _table(
        [
            "workload",
            "mode",
            "demand",
            "prefill",
            "decode",
            "TTFT / SLO",
            "TPOT / SLO",
            "$/h",
            "$/M output tokens",
        ],
        rows,
        num=(7, 8),
        total=total,
    )


def _pools_table(ctx: PlanContext) -> str:
    usage = {p.name: p for p in ctx.plan.pools}
    rows = []
    for pool in ctx.cluster.pools:
        u = usage.get(pool.name)
        used = u.used_devices if u else 0
        rows.append(
            [
                _e(pool.name),
                _e(pool.hardware.name),
                str(pool.total_devices),
                str(pool.free_devices),
                str(used),
                str(pool.free_devices - used),
                _money(pool.price_per_device_hour, 4),
                _money(used * pool.price_per_device_hour),
            ]
        )
    for gone in ctx.cluster.unavailable:
        rows.append(
            [
                _e(gone.name),
                f"<span class='bad'>{_e(gone.reason)}</span>: {_e(gone.detail)}",
                str(gone.devices),
                "—",
                "—",
                "—",
                "—",
                "—",
            ]
        )
    return _table(
        ["pool", "hardware", "devices", "free before", "used", "free after", "$/device-h", "$/h"],
        rows,
        num=(2, 3, 4, 5, 6, 7),
    )


def _cost_section(ctx: PlanContext, strategies: Sequence[Strategy], series: CostComparisonSeries) -> str:
    from hetsched.scheduler.plots.placement import render_cost_comparison

    headers = ["workload", *[s.name for s in strategies]]
    rows = []
    for i, cost in enumerate(strategies[0].costs):
        row = [_e(cost.workload.split("/", 1)[-1])]
        for s in strategies:
            c = s.costs[i]
            if c.cost_per_hour is None:
                detail = c.detail if len(c.detail) <= 160 else c.detail[:157] + "…"
                row.append(f"<span class='bad'>not placed</span><br><span class='note'>{_e(detail)}</span>")
            else:
                row.append(
                    f"{_money(c.cost_per_hour)}/h · {_money(c.cost_per_million_tokens, 3)}/M tok"
                    f"<br><span class='note'>{_e(c.where)}, {c.devices} devices</span>"
                )
        rows.append(row)
    total = ["<b>total (workloads every strategy places)</b>"]
    plan_total = series.total(0)
    for j in range(len(strategies)):
        t = series.total(j)
        saving = ""
        if j and t and plan_total is not None:
            saving = f"<br><span class='note'>plan {_e(_saving(plan_total, t))}</span>"
        over = over_free_devices(ctx, strategies[j])
        if over:
            saving += "<br><span class='note bad'>beyond this cluster: " + _e("; ".join(over)) + "</span>"
        total.append(f"{_money(t)}/h{saving}")
    parts = [
        "<p class='note'>"
        + "<br>".join(f"<b>{_e(s.name)}</b>: {_e(s.description)}" for s in strategies)
        + "</p>",
        _table(headers, rows, total=total).replace("<table>", "<table class='fixed'>", 1),
        _img(render_cost_comparison(series), "cost comparison", "$ per hour per workload and strategy"),
    ]
    return "\n".join(parts)


def _rejections(w: WorkloadPlacement) -> str:
    rows = []
    for ph in (w.prefill, w.decode):
        for r in ph.rejected:
            rows.append(
                [
                    _e(ph.phase),
                    _e(r.pool),
                    f"<span class='tag does-not-fit'>{_e(r.reason.value)}</span>",
                    f"<span class='reason'>{_e(r.detail)}</span>",
                ]
            )
    if not rows:
        return "<p class='note'>No other pool was considered.</p>"
    return _table(["phase", "pool", "reason", "detail"], rows)


def _workload_section(ctx: PlanContext, w: WorkloadPlacement) -> str:
    from hetsched.scheduler.plots.roofline import render_roofline

    req = ctx.request(w.key)
    head = (
        f"<h3 id='wl-{_e(w.name)}'>{_e(w.name)} <span class='note'>({_e(w.namespace)})</span></h3>"
        f"<p class='note'>{_e(w.model)} · agent {_e(w.agent)} · {_e(_demand(w))} · prompt "
        f"{req.prompt_tokens} new + {req.cached_tokens} cached tokens, {req.output_tokens} output · "
        f"max model length {w.max_model_len} · SLO TTFT {_secs(req.ttft_slo_seconds)}, "
        f"TPOT {_secs(req.tpot_slo_seconds)}</p>"
    )
    if w.placed:
        rows = []
        for ph in (w.prefill, w.decode):
            latency = (
                _slo(ph.ttft_seconds, req.ttft_slo_seconds)
                if ph.phase == "prefill"
                else _slo(ph.tpot_seconds, req.tpot_slo_seconds)
            )
            rows.append(
                [
                    _e(ph.phase),
                    _e(ph.pool),
                    _e(ph.hardware),
                    str(ph.tp),
                    str(ph.batch),
                    str(ph.replicas),
                    str(ph.devices) + (" (shared)" if ph.shared_replicas else ""),
                    _tag(ph.regime),
                    _secs(ph.step_seconds),
                    latency,
                    _money(ph.cost_per_hour),
                ]
            )
        body = (
            f"<p>Mode: <b>{_e(w.mode)}</b>, {_money(w.cost_per_hour)}/h, "
            f"{_money(w.cost_per_million_tokens, 3)} per million output tokens.</p>"
            + _table(
                [
                    "phase",
                    "pool",
                    "hardware",
                    "TP",
                    "batch",
                    "replicas",
                    "devices",
                    "regime",
                    "step",
                    "latency / SLO",
                    "$/h",
                ],
                rows,
                num=(3, 4, 5, 6, 8, 10),
            )
        )
    else:
        miss = w.closest_miss
        sugg = "".join(
            f"<li>{'<span class=ok>feasible</span>' if s.feasible else '<span class=bad>not enough</span>'}: "
            f"<b>{_e(s.action)}</b> — {_e(s.detail)}"
            + (f" ({_money(s.cost_per_hour)}/h)" if s.cost_per_hour is not None else "")
            + "</li>"
            for s in w.suggestions
        )
        body = (
            f"<p class='bad'>Not placed: {_e(w.reason)}</p><p class='reason'>{_e(w.detail)}</p>"
            + (f"<p>Closest miss: {_e(miss.pool)} ({_e(miss.kind)}): {_e(miss.detail)}</p>" if miss else "")
            + (f"<p>Suggestions (each re-estimated):</p><ul>{sugg}</ul>" if sugg else "")
        )
    fig = render_roofline(workload_roofline(ctx, w))
    caption = (
        "Prefill and decode of this workload on each pool's hardware (TP as planned, else the smallest "
        "within a node that fits, else 1); hollow markers: capacity-bound or does not fit."
    )
    return (
        "<section class='workload'>"
        + head
        + body
        + _img(fig, f"roofline of {w.name}", caption)
        + "<h4>Pools not used, and why</h4>"
        + _rejections(w)
        + "</section>"
    )


def render_report(
    ctx: PlanContext, *, title: str = "hetsched placement report", generated: datetime | None = None
) -> str:
    """The HTML text of the report."""
    from hetsched.scheduler.plots.placement import placement_series, render_placement

    plan = ctx.plan
    strategies = baselines(ctx)
    series = cost_comparison_series(strategies)
    when = (generated or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    plan_total = series.total(0)
    cards = [
        (f"{plan.placed} / {len(plan.workloads)}", "workloads placed"),
        (f"{_money(plan.total_cost_per_hour)}/h", "cost of the plan"),
        (str(sum(p.used_devices for p in plan.pools)), "devices used"),
    ]
    for j, s in enumerate(strategies[1:], start=1):
        t = series.total(j)
        if t and plan_total is not None:
            cards.append((_saving(plan_total, t), f"vs {s.name} ({_money(t)}/h)"))
    card_html = "".join(f"<div class='card'><b>{_e(v)}</b><span>{_e(k)}</span></div>" for v, k in cards)
    warnings = "".join(f"<li>{_e(x)}</li>" for x in plan.warnings)
    unavailable = "".join(
        f"<li>{_e(r.pool)}: {_e(r.reason.value)} — {_e(r.detail)}</li>" for r in plan.unavailable_pools
    )
    solver = plan.solver
    sections = [
        f"<h1>{_e(title)}</h1>",
        f"<p class='meta'>Generated {_e(when)} by hetsched from pools <code>{_e(ctx.pools_path)}</code> and "
        f"workloads {', '.join(f'<code>{_e(p)}</code>' for p in ctx.workload_paths)}. Solver: "
        f"{_e(solver.method)} ({_e(solver.status)}), {solver.candidates_evaluated} candidates.</p>",
        f"<div class='cards'>{card_html}</div>",
        "<h2>Placement</h2>",
        _img(
            render_placement(placement_series(ctx.plan_dict, ctx.pool_rows)),
            "placement per pool",
            "Devices per pool: each workload's phases (colocated replicas serve both), free devices, "
            "$ per hour.",
        ),
        "<h2>Plan</h2>",
        _plan_table(ctx),
        "<h2>Pools</h2>",
        _pools_table(ctx),
        (f"<p class='bad'>Unavailable pools:</p><ul>{unavailable}</ul>" if unavailable else ""),
        (f"<p class='bad'>Warnings:</p><ul>{warnings}</ul>" if warnings else ""),
        "<h2>Cost against baselines</h2>",
        _cost_section(ctx, strategies, series),
        "<h2>Workloads</h2>",
        *(_workload_section(ctx, w) for w in plan.workloads),
        "<p class='note'>Regimes: <b>compute-bound</b> — OI at the operating batch reaches the ridge point; "
        "<b>bandwidth-bound</b> — below the ridge, memory bandwidth limits the step; <b>capacity-bound</b> — "
        "memory caps the batch below the one that would reach the ridge (MFU and MBU both low). Formulas: "
        "docs/estimator.md and docs/placement.md.</p>",
    ]
    body = "\n".join(s for s in sections if s)
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<meta http-equiv='Content-Security-Policy' content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    )


def write_report(
    workload_paths: Sequence[str | Path],
    pools_path: str | Path,
    out: str | Path,
    *,
    title: str = "hetsched placement report",
) -> Path:
    ctx = build_plan(pools_path, workload_paths)
    path = Path(out)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(ctx, title=title), encoding="utf-8")
    return path


__all__ = [
    "PlanContext",
    "Strategy",
    "WorkloadCost",
    "baselines",
    "build_plan",
    "cost_comparison_series",
    "newest_gpu_pool",
    "over_free_devices",
    "render_report",
    "workload_roofline",
    "write_report",
]
