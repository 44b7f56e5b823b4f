"""Per-workload candidates: every (pool, TP, batch) of each phase, and the placement options.

This is the planner's hot path. Two levels of estimate, memoised in
:class:`~hetsched.scheduler.placement.estimates.EstimateCache`:

* **bounds** from the phase steps (``estimate_phase`` once per (shape, phase, TP, batch) for all
  pools, and per hardware the step time as ``roofline.evaluate`` computes it — a unit test checks
  they are equal): a step's time is a lower bound on what a user sees
  (TPOT ≥ decode step, TTFT ≥ prefill step + KV transfer, colocated TTFT ≥ prefill + decode
  step), so candidates missing an SLO on a bound are rejected without further work, and the rest
  are visited in order of a lower bound on the devices they need;
* **the serving model**: every option offered to the solver has its TTFT, TPOT and throughput
  from the formulas of ``serving.predict_colocated`` / ``serving.predict_disaggregated`` — the
  same formulas ``hetsched validate`` uses and the calibration fits, including the queueing they
  model (disaggregated: ``concurrency`` requests in flight over ``prefill_workers`` prefill
  replicas). They are evaluated through the serving model's public parts (``step_terms``,
  ``kv_capacity``, ``colocated_times``, ``disaggregated_times``) with the step terms memoised;
  a unit test checks every option against the two functions, and the planner re-evaluates each
  chosen option with them.

Per pool (colocated, decode) or pool pair (disaggregated) only the configuration using the fewest
devices survives — devices of one pool are interchangeable, so it dominates the others (ties: the
smaller TP, then the larger batch). Options of a workload dominated in every pool's devices and
in cost by another are pruned before the solver (``prune_dominated``).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, replace

from hetsched.scheduler.estimator.analysis import context_limit_source
from hetsched.scheduler.estimator.cost import Phase, PhaseCost
from hetsched.scheduler.estimator.efficiency import with_engine
from hetsched.scheduler.estimator.serving import (
    ServingPrediction,
)
from hetsched.scheduler.placement.engine_limits import EngineLimits
from hetsched.scheduler.placement.estimates import EstimateCache
from hetsched.scheduler.placement.options import (
    DOMINATED_STAGE,
    PAIR_STAGE,
    Mode,
    Option,
    PhaseConfig,
    PlanOptions,
    Reason,
    Rejection,
    RejectionRecorder,
    WorkloadCandidates,
    prune_dominated,
)
from hetsched.scheduler.placement.request import WorkloadRequest
from hetsched.scheduler.pools import Cluster, Pool
from hetsched.scheduler.spec import DisaggregationMode
from hetsched.scheduler.units import fmt_gib, fmt_seconds

_PREFILL = Phase.PREFILL  # module constants: enum attribute access is slow on the hot path
_DECODE = Phase.DECODE
_EPS = 1e-9


# ---- helpers -----------------------------------------------------------------------------------
def tp_degrees(devices_per_node: int, limit: int) -> list[int]:
    """Powers of two up to the devices of one node (a replica does not span nodes)."""
    out, tp = [], 1
    while tp <= min(devices_per_node, limit):
        out.append(tp)
        tp *= 2
    return out


def batch_ladder(cap: int) -> list[int]:
    """1, 2, 4, … below ``cap``, and ``cap`` itself."""
    if cap < 1:
        return []
    out, b = [], 1
    while b < cap:
        out.append(b)
        b *= 2
    out.append(cap)
    return out


def ceil_div(x: float, y: float) -> int:
    """⌈x / y⌉ for x ≥ 0, robust to float noise (x/y = 3.0000000001 counts as 3). Any positive demand
    needs at least one replica, however far below one replica's capacity (x/y = 10⁻¹² is 1, not 0)."""
    q = x / y
    if q <= 0:
        return 0
    return max(1, math.ceil(q - 1e-9 * (q if q > 1.0 else 1.0)))


@dataclass(slots=True)
class _PoolCtx:
    pool: Pool
    index: int
    hid: int
    usable: float
    tps: list[int]
    total: int


@dataclass(frozen=True, slots=True)
class _PrefillCfg:
    tp: int
    batch: int
    seconds: float
    rps: float
    cost: PhaseCost


# ---- generation ----------------------------------------------------------------------------------
class CandidateGenerator:
    """Generates candidates for workloads on one cluster (reuse it across a plan's workloads)."""

    def __init__(
        self, cluster: Cluster, options: PlanOptions | None = None, cache: EstimateCache | None = None
    ):
        self.cluster = cluster
        self.options = options or PlanOptions()
        self.cache = cache if cache is not None else EstimateCache()
        self.pools: list[_PoolCtx] = []
        for i, p in enumerate(cluster.pools):
            hid = self.cache.hardware_id(p.hardware, self.options.efficiency, self.options.utilization)
            self.pools.append(
                _PoolCtx(
                    pool=p,
                    index=i,
                    hid=hid,
                    usable=p.hardware.memory_bytes * self.options.utilization,
                    tps=tp_degrees(p.devices_per_node, self.options.max_tp),
                    total=max(p.total_devices, p.free_devices),
                )
            )
        self._engine_pools: dict[str, list[_PoolCtx]] = {}
        self._price = {p.name: p.price_per_device_hour for p in cluster.pools}
        self.limits = EngineLimits(cluster)
        # Decode configurations restricted to the TP degrees a KV connector accepts (per request).
        self._alt_decode: dict[tuple[int, str, frozenset[int]], PhaseConfig | None] = {}

    def pools_for(self, engine: str | None) -> list[_PoolCtx]:
        """The pools, priced with the serving ``engine``'s fitted terms (``calibrated.with_engine``)
        in each hardware's efficiency; an explicit ``PlanOptions.efficiency`` (``ideal``) is used
        as given, and no engine keeps the shared values."""
        if engine is None or self.options.efficiency is not None:
            return self.pools
        ctxs = self._engine_pools.get(engine)
        if ctxs is None:
            ctxs = self._engine_pools[engine] = [
                replace(
                    c,
                    hid=self.cache.hardware_id(
                        c.pool.hardware,
                        with_engine(c.pool.hardware.efficiency, engine, c.pool.hardware.kind),
                        self.options.utilization,
                    ),
                )
                for c in self.pools
            ]
        return ctxs

    # -- memory --------------------------------------------------------------------------------
    def _fits_or_reject(
        self, req: WorkloadRequest, sid: int, ctx: _PoolCtx, kind: str, context: int, rec: RejectionRecorder
    ) -> list[tuple[int, int]]:
        """[(tp, largest batch that fits)] for the pool's TP degrees; rejections for the rest."""
        out: list[tuple[int, int]] = []
        hw = ctx.pool.hardware
        for tp in ctx.tps:
            w, kv = self.cache.memory(req, sid, tp, context)
            need = w + kv
            if need > ctx.usable:
                sev = need / ctx.usable
                if rec.wants(kind, ctx.pool.name, sev, 0):
                    rec.add(
                        Rejection(
                            ctx.pool.name,
                            Reason.CAPACITY,
                            f"TP {tp}: needs {fmt_gib(need)} per device (weights {fmt_gib(w)} + KV "
                            f"{fmt_gib(kv)} for one request of {context} tokens) > {fmt_gib(ctx.usable)} usable "
                            f"({self.options.utilization:g} × {fmt_gib(hw.memory_bytes)})",
                            kind,
                            sev,
                            tp,
                            1,
                            0,
                        )
                    )
                else:
                    rec.count += 1
                continue
            bmax = int((ctx.usable - w) // kv) if kv > 0 else 1 << 30
            out.append((tp, bmax))
        if not out:
            self._diagnose_tp(req, sid, ctx, kind, context, rec)
        return out

    def _diagnose_tp(
        self, req: WorkloadRequest, sid: int, ctx: _PoolCtx, kind: str, context: int, rec: RejectionRecorder
    ) -> None:
        dpn = ctx.pool.devices_per_node
        tp = 1
        while tp <= self.options.max_tp:
            if tp > dpn:
                w, kv = self.cache.memory(req, sid, tp, context)
                if w + kv <= ctx.usable:
                    rec.add(
                        Rejection(
                            ctx.pool.name,
                            Reason.TP_EXCEEDS_NODE,
                            f"fits only at TP {tp} ({fmt_gib(w + kv)} per device) but nodes of {ctx.pool.name} "
                            f"have {dpn} device(s); a replica does not span nodes",
                            kind,
                            tp / dpn,
                            tp,
                            1,
                            1,
                        )
                    )
                    return
            tp *= 2

    # -- phases --------------------------------------------------------------------------------
    # Keys: fewest devices, then the smaller TP, then the larger batch. A replica uses ≥ tp devices,
    # so once a pool's best uses ≤ tp devices no larger TP can beat it; along a batch ladder, once
    # one replica covers the demand a larger batch only adds latency.
    def _decode_best(
        self,
        req: WorkloadRequest,
        sid: int,
        ctx: _PoolCtx,
        rec: RejectionRecorder,
        tps: frozenset[int] | None = None,
    ) -> tuple[PhaseConfig | None, int]:
        """The decode configuration of a pool using the fewest devices (TPOT = the decode step),
        among the TP degrees ``tps`` (None: any)."""
        name = ctx.pool.name
        best: PhaseConfig | None = None
        best_key: tuple[float, ...] = ()
        evals = 0
        lam = req.requests_per_second
        sessions = req.concurrent_sessions
        slo = req.tpot_slo_seconds
        o = req.output_tokens
        for tp, bmax in self._fits_or_reject(req, sid, ctx, "decode", req.capacity_context, rec):
            if best is not None and best.devices <= tp:
                break
            if tps is not None and tp not in tps:
                continue
            cap = min(bmax, req.max_batch or bmax, self.options.max_batch, sessions or bmax)
            for b in batch_ladder(cap):
                tpot = self.cache.step_time(req, sid, ctx.pool.hardware, ctx.hid, _DECODE, tp, b)
                evals += 1
                if tpot > slo * (1 + _EPS):
                    rec.reject(
                        "decode",
                        name,
                        Reason.SLO,
                        tpot / slo,
                        f"TPOT {fmt_seconds(tpot)} > {fmt_seconds(slo)} (TP {tp}, batch {b})",
                        tp,
                        b,
                    )
                    break
                rps = b / (o * tpot)
                reps = ceil_div(sessions, b) if sessions else ceil_div(lam or 0.0, rps)
                devs = reps * tp
                if devs > ctx.total:
                    rec.reject(
                        "decode",
                        name,
                        Reason.DEMAND,
                        devs / ctx.total,
                        f"{_replicas(reps, tp, devs)} (batch {b}) for {_demand(req)}; the pool has {ctx.total}",
                        tp,
                        b,
                    )
                    continue
                key = (devs, tp, -b)
                if best is None or key < best_key:
                    best, best_key = PhaseConfig(name, tp, b, reps, tpot, rps, None), key
                if reps == 1:
                    break
        return best, evals

    def _prefill_configs(
        self, req: WorkloadRequest, sid: int, ctx: _PoolCtx, rec: RejectionRecorder
    ) -> tuple[list[_PrefillCfg], int]:
        """Prefill configurations of a pool whose step alone meets the TTFT SLO."""
        name = ctx.pool.name
        slo = req.ttft_slo_seconds
        out: list[_PrefillCfg] = []
        evals = 0
        for tp, bmax in self._fits_or_reject(req, sid, ctx, "prefill", req.prefill_context, rec):
            cap = min(bmax, req.max_batch or bmax, self.options.max_prefill_batch)
            for b in batch_ladder(cap):
                t = self.cache.step_time(req, sid, ctx.pool.hardware, ctx.hid, _PREFILL, tp, b)
                evals += 1
                if t > slo * (1 + _EPS):
                    rec.reject(
                        "prefill",
                        name,
                        Reason.SLO,
                        t / slo,
                        f"TTFT ≥ prefill step {fmt_seconds(t)} > {fmt_seconds(slo)} (TP {tp}, batch {b})",
                        tp,
                        b,
                    )
                    break
                out.append(_PrefillCfg(tp, b, t, b / t, self.cache.cost(req, sid, _PREFILL, tp, b)))
        return out, evals

    def _colocated_best(
        self, req: WorkloadRequest, sid: int, ctx: _PoolCtx, rec: RejectionRecorder
    ) -> tuple[Option | None, int]:
        """The colocated configuration of a pool using the fewest devices, by ``predict_colocated``.

        Candidates are visited by a lower bound on their devices (throughput bounded with TTFT ≥
        prefill + decode step and TPOT ≥ decode step); the first ones whose bound exceeds the best
        found are never evaluated.
        """
        name = ctx.pool.name
        hw = ctx.pool.hardware
        evals = 0
        sessions = req.concurrent_sessions
        lam = req.requests_per_second
        o = req.output_tokens
        ttft_slo, tpot_slo = req.ttft_slo_seconds, req.tpot_slo_seconds
        queue: list[tuple[int, int, int]] = []  # (lower bound on devices, tp, -batch)
        for tp, bmax in self._fits_or_reject(req, sid, ctx, "colocated", req.capacity_context, rec):
            cap = min(bmax, req.max_batch or bmax, self.options.max_batch, sessions or bmax)
            t_pre = self.cache.step_time(req, sid, hw, ctx.hid, _PREFILL, tp, 1)
            for b in batch_ladder(cap):
                t_dec = self.cache.step_time(req, sid, hw, ctx.hid, _DECODE, tp, b)
                evals += 1
                if t_dec > tpot_slo * (1 + _EPS) or t_pre + t_dec > ttft_slo * (1 + _EPS):
                    if t_dec / tpot_slo >= (t_pre + t_dec) / ttft_slo:
                        what, sev = (
                            f"TPOT ≥ decode step {fmt_seconds(t_dec)} > {fmt_seconds(tpot_slo)}",
                            t_dec / tpot_slo,
                        )
                    else:
                        what = f"TTFT ≥ prefill + decode step {fmt_seconds(t_pre + t_dec)} > {fmt_seconds(ttft_slo)}"
                        sev = (t_pre + t_dec) / ttft_slo
                    rec.reject(
                        "colocated", name, Reason.SLO, sev, f"{what} colocated (TP {tp}, batch {b})", tp, b
                    )
                    break
                if sessions:
                    lb = ceil_div(sessions, b)
                else:
                    lb = ceil_div(lam or 0.0, b / (t_pre + t_dec + o * t_dec))
                queue.append((lb * tp, tp, -b))
                if lb == 1:
                    break
        queue.sort()
        best: tuple[tuple[int, int, int], int, ServingPrediction] | None = None
        for lb_devs, tp, neg_b in queue:
            if best is not None and (lb_devs, tp, neg_b) >= best[0]:
                break
            b = -neg_b
            pred = self.cache.colocated(req, sid, hw, ctx.hid, tp, b, self.options)
            evals += 1
            over_ttft = pred.ttft_seconds / ttft_slo
            over_tpot = pred.tpot_seconds / tpot_slo
            if over_ttft > 1 + _EPS or over_tpot > 1 + _EPS:
                if over_tpot >= over_ttft:
                    what = f"TPOT {fmt_seconds(pred.tpot_seconds)} > {fmt_seconds(tpot_slo)}"
                else:
                    what = f"TTFT {fmt_seconds(pred.ttft_seconds)} > {fmt_seconds(ttft_slo)}"
                rec.reject(
                    "colocated",
                    name,
                    Reason.SLO,
                    max(over_ttft, over_tpot),
                    f"{what} colocated (TP {tp}, batch {b})",
                    tp,
                    b,
                )
                continue
            rps = pred.decode_requests_per_second
            reps = ceil_div(sessions, b) if sessions else ceil_div(lam or 0.0, rps)
            devs = reps * tp
            if devs > ctx.total:
                rec.reject(
                    "colocated",
                    name,
                    Reason.DEMAND,
                    devs / ctx.total,
                    f"{_replicas(reps, tp, devs)} colocated (batch {b}) for {_demand(req)}; "
                    f"the pool has {ctx.total}",
                    tp,
                    b,
                )
                continue
            key = (devs, tp, neg_b)
            if best is None or key < best[0]:
                best = (key, reps, pred)
        if best is None:
            return None, evals
        (devs, tp, neg_b), reps, pred = best
        b = -neg_b
        rps = pred.decode_requests_per_second
        if lam is None:  # closed loop: each session has one request in flight (Little's law)
            lam = (sessions or 0) / (pred.ttft_seconds + o * pred.tpot_seconds)
        cost = devs * ctx.pool.price_per_device_hour
        pre = PhaseConfig(name, tp, b, reps, pred.prefill.performance.step_seconds, rps, pred.prefill)
        dec = PhaseConfig(name, tp, b, reps, pred.tpot_seconds, rps, pred.decode)
        opt = Option(
            Mode.COLOCATED,
            pre,
            dec,
            ((name, devs),),
            cost,
            pred.ttft_seconds,
            pred.tpot_seconds,
            0.0,
            lam,
            pred,
            cost,
            cost,
            0,
        )
        return opt, evals

    # -- workload ------------------------------------------------------------------------------
    def generate(self, req: WorkloadRequest) -> WorkloadCandidates:
        rec = RejectionRecorder(self.options.record_all_rejections)
        self._alt_decode.clear()
        pools = self.pools_for(req.engine)
        limit = req.model.context_limit
        if limit is not None and req.capacity_context > limit:
            # The model itself does not serve such a context (serving engines refuse the
            # max_model_len): no pool can, whatever its memory.
            detail = (
                f"a request holds {req.capacity_context:,} tokens (cached + prompt + output); "
                f"{req.model.name} serves at most {limit:,} ({context_limit_source(req.model)})"
            )
            for ctx in pools:
                for kind in ("colocated", "prefill", "decode"):
                    phases = ("prefill", "decode") if kind == "colocated" else (kind,)
                    if all(req.allows(ph, ctx.pool.name) for ph in phases):
                        rec.reject(
                            kind, ctx.pool.name, Reason.CONTEXT_LIMIT, req.capacity_context / limit, detail
                        )
            return WorkloadCandidates(req, [], [], rec.best, rec.all, rec.count, 0, rec.feasible)
        sid = self.cache.shape_id(req)
        evals = 0
        allow_coloc = req.disaggregation is not DisaggregationMode.ALWAYS
        allow_disagg = req.disaggregation is not DisaggregationMode.NEVER
        options: list[Option] = []
        colocated: dict[str, Option] = {}
        if allow_coloc:
            for ctx in pools:
                if self.limits.allowed(req, "colocated", ctx.pool.name, rec):
                    opt, n = self._colocated_best(req, sid, ctx, rec)
                    evals += n
                    if opt is not None:
                        options.append(opt)
                        colocated[ctx.pool.name] = opt
                        rec.feasible.add(("colocated", ctx.pool.name))
        if allow_disagg:
            decode_best: dict[str, PhaseConfig] = {}
            prefill_cfgs: dict[str, list[_PrefillCfg]] = {}
            for ctx in pools:
                if self.limits.allowed(req, "decode", ctx.pool.name, rec):
                    cfg, n = self._decode_best(req, sid, ctx, rec)
                    evals += n
                    if cfg is not None:
                        decode_best[ctx.pool.name] = cfg
                        rec.feasible.add(("decode", ctx.pool.name))
            for ctx in pools:
                if self.limits.allowed(req, "prefill", ctx.pool.name, rec):
                    cfgs, n = self._prefill_configs(req, sid, ctx, rec)
                    evals += n
                    if cfgs:
                        prefill_cfgs[ctx.pool.name] = cfgs
                        rec.feasible.add(("prefill", ctx.pool.name))
            pairs, n = self._pairs(req, sid, decode_best, prefill_cfgs, colocated, rec)
            options.extend(pairs)
            evals += n

        order = {c.pool.name: c.index for c in pools}

        def rank(o: Option) -> tuple[float, int, int, int, int]:
            return (
                o.cost_per_hour,
                sum(n for _, n in o.devices),
                0 if o.mode is Mode.COLOCATED else 1,
                order[o.prefill.pool],
                order[o.decode.pool],
            )

        options.sort(key=rank)
        pruned = prune_dominated(options)
        return WorkloadCandidates(req, pruned, options, rec.best, rec.all, rec.count, evals, rec.feasible)

    def _pairs(
        self,
        req: WorkloadRequest,
        sid: int,
        decode_best: dict[str, PhaseConfig],
        prefill_cfgs: dict[str, list[_PrefillCfg]],
        colocated: dict[str, Option],
        rec: RejectionRecorder,
    ) -> tuple[list[Option], int]:
        """Per (prefill pool, decode pool): the fewest prefill devices meeting TTFT by the serving model.

        The decode side is the pool's best decode configuration. Requests in flight: ``S`` for
        sessions, else ``⌈λ · (t_prefill + KV transfer + O · TPOT)⌉`` (Little's law at the open-loop
        request time). Prefill replicas start at the throughput minimum ``⌈λ · t_prefill / Bp⌉``
        (λ for sessions: ``S / (t_prefill + KV transfer + O · TPOT)``, an upper bound) and grow
        while queueing keeps TTFT above the SLO.
        """
        out: list[Option] = []
        evals = 0
        slo = req.ttft_slo_seconds
        o_tokens = req.output_tokens
        sessions = req.concurrent_sessions
        ctxs = {c.pool.name: c for c in self.pools_for(req.engine)}
        if not decode_best:
            for p, cfgs in prefill_cfgs.items():
                rec.reject(
                    "prefill",
                    p,
                    Reason.PAIRING,
                    math.inf,
                    f"prefill fits (TP {cfgs[0].tp}, step {fmt_seconds(cfgs[0].seconds)}) but no pool can run decode",
                    cfgs[0].tp,
                    cfgs[0].batch,
                )
        if not prefill_cfgs:
            for d, dec in decode_best.items():
                rec.reject(
                    "decode",
                    d,
                    Reason.PAIRING,
                    math.inf,
                    f"decode fits (TP {dec.tp}, TPOT {fmt_seconds(dec.step_seconds)}) but no pool can run prefill",
                    dec.tp,
                    dec.batch,
                )
        for p, all_cfgs in prefill_cfgs.items():
            pctx = ctxs[p]
            kv_bytes = all_cfgs[0].cost.kv_bytes_per_request
            for d, best_dec in decode_best.items():
                cfgs, dec = self._engine_pair(req, sid, p, d, all_cfgs, best_dec, rec)
                if not cfgs:
                    continue
                min_tp = min(c.tp for c in cfgs)
                quick = self._dominated(p, d, min_tp, dec, colocated)  # a replica needs ≥ TP devices
                if quick is not None:
                    self._record_dominated(p, d, *quick, rec)
                    continue
                dctx = ctxs[d]
                bw = self.limits.kv_bandwidth(req.serving, p, d)
                kv_s = kv_bytes / bw
                room = pctx.total - (dec.devices if p == d else 0)
                heap: list[tuple[int, int, int, int, int, int]] = []  # devices, tp, -Bp, index, replicas, N
                fastest: _PrefillCfg | None = None
                for i, cfg in enumerate(cfgs):
                    open_loop = cfg.seconds + kv_s + o_tokens * dec.step_seconds
                    if cfg.seconds + kv_s > slo * (1 + _EPS):
                        if fastest is None or cfg.seconds < fastest.seconds:
                            fastest = cfg
                        continue
                    if sessions:
                        lam, inflight = sessions / open_loop, sessions
                    else:
                        lam = req.requests_per_second or 0.0
                        inflight = max(1, math.ceil(lam * open_loop - 1e-9))
                    reps = max(1, ceil_div(lam, cfg.rps))
                    if reps * cfg.tp > room:
                        sev = reps * cfg.tp / max(room, 1)
                        if rec.wants("prefill", p, sev, PAIR_STAGE):
                            rec.add(
                                Rejection(
                                    p,
                                    Reason.DEMAND,
                                    f"{_replicas(reps, cfg.tp, reps * cfg.tp)} of prefill (batch {cfg.batch}) "
                                    f"for {lam:.3g} req/s; the pool has {room}"
                                    + (" beside decode" if p == d else ""),
                                    "prefill",
                                    sev,
                                    cfg.tp,
                                    cfg.batch,
                                    PAIR_STAGE,
                                )
                            )
                        continue
                    heap.append((reps * cfg.tp, cfg.tp, -cfg.batch, i, reps, inflight))
                if not heap:
                    if fastest is not None and not any(c.seconds + kv_s <= slo * (1 + _EPS) for c in cfgs):
                        ttft = fastest.seconds + kv_s
                        rec.reject(
                            "prefill",
                            p,
                            Reason.SLO,
                            ttft / slo,
                            f"TTFT ≥ {fmt_seconds(ttft)} = prefill {fmt_seconds(fastest.seconds)} + KV transfer "
                            f"{fmt_seconds(kv_s)} ({fmt_gib(kv_bytes)} at {bw / 1e9:g} GB/s to decode on {d}) "
                            f"> {fmt_seconds(slo)}",
                            fastest.tp,
                            fastest.batch,
                            PAIR_STAGE,
                        )
                    continue
                heapq.heapify(heap)
                dominated = self._dominated(p, d, heap[0][0], dec, colocated)
                if dominated is not None:
                    self._record_dominated(p, d, *dominated, rec)
                    continue
                found: tuple[int, _PrefillCfg, int, int, ServingPrediction] | None = None
                tries = 0
                last: tuple[_PrefillCfg, int, ServingPrediction] | None = None
                while heap and tries < self.options.max_exact_per_pair:
                    devs, _, _, i, reps, inflight = heapq.heappop(heap)
                    cfg = cfgs[i]
                    pred = self.cache.disaggregated(
                        req,
                        sid,
                        (pctx.pool.hardware, pctx.hid, cfg.tp, cfg.batch),
                        (dctx.pool.hardware, dctx.hid, dec.tp, dec.batch),
                        bw,
                        reps,
                        inflight,
                        self.options,
                    )
                    tries += 1
                    evals += 1
                    if pred.tpot_seconds > req.tpot_slo_seconds * (1 + _EPS):
                        rec.reject(
                            "decode",
                            d,
                            Reason.SLO,
                            pred.tpot_seconds / req.tpot_slo_seconds,
                            f"TPOT {fmt_seconds(pred.tpot_seconds)} > {fmt_seconds(req.tpot_slo_seconds)} "
                            f"(TP {dec.tp}, batch {dec.batch})",
                            dec.tp,
                            dec.batch,
                            PAIR_STAGE,
                        )
                        heap.clear()
                        break
                    if sessions is None:  # the serving model's throughput must carry λ too
                        need = max(
                            ceil_div(req.requests_per_second or 0.0, pred.prefill_requests_per_second), reps
                        )
                        if need > reps:
                            if need * cfg.tp <= room:
                                heapq.heappush(heap, (need * cfg.tp, cfg.tp, -cfg.batch, i, need, inflight))
                            continue
                    if pred.ttft_seconds <= slo * (1 + _EPS):
                        found = (devs, cfg, reps, inflight, pred)
                        break
                    last = (cfg, reps, pred)
                    if (reps + 1) * cfg.tp <= room:  # more prefill replicas: less queueing
                        heapq.heappush(heap, ((reps + 1) * cfg.tp, cfg.tp, -cfg.batch, i, reps + 1, inflight))
                if found is None:
                    if last is not None:
                        cfg, reps, pred = last
                        rec.reject(
                            "prefill",
                            p,
                            Reason.SLO,
                            pred.ttft_seconds / slo,
                            f"TTFT {fmt_seconds(pred.ttft_seconds)} (prefill {fmt_seconds(cfg.seconds)}, KV transfer "
                            f"{fmt_seconds(kv_s)} to decode on {d}, queueing with {reps} prefill replica"
                            f"{'s' if reps != 1 else ''}) > {fmt_seconds(slo)}",
                            cfg.tp,
                            cfg.batch,
                            PAIR_STAGE,
                        )
                    continue
                devs, cfg, reps, inflight, pred = found
                if req.requests_per_second is not None:
                    lam = req.requests_per_second
                else:  # closed loop (Little's law) at the serving model's request time
                    lam = (sessions or 0) / (pred.ttft_seconds + o_tokens * pred.tpot_seconds)
                pre = PhaseConfig(
                    p,
                    cfg.tp,
                    cfg.batch,
                    reps,
                    pred.prefill_seconds or cfg.seconds,
                    pred.prefill_requests_per_second,
                    pred.prefill,
                )
                dec_reps = (
                    ceil_div(sessions, dec.batch)
                    if sessions
                    else max(dec.replicas, ceil_div(lam, pred.decode_requests_per_second))
                )
                dcfg = PhaseConfig(
                    d,
                    dec.tp,
                    dec.batch,
                    dec_reps,
                    pred.tpot_seconds,
                    pred.decode_requests_per_second,
                    pred.decode,
                )
                if p == d:
                    devices: tuple[tuple[str, int], ...] = ((p, pre.devices + dcfg.devices),)
                else:
                    devices = tuple(sorted(((p, pre.devices), (d, dcfg.devices))))
                pc = pre.devices * pctx.pool.price_per_device_hour
                dc = dcfg.devices * dctx.pool.price_per_device_hour
                out.append(
                    Option(
                        Mode.DISAGGREGATED,
                        pre,
                        dcfg,
                        devices,
                        pc + dc,
                        pred.ttft_seconds,
                        pred.tpot_seconds,
                        pred.kv_transfer_seconds,
                        lam,
                        pred,
                        pc,
                        dc,
                        inflight,
                    )
                )
        return out, evals

    def _engine_pair(
        self,
        req: WorkloadRequest,
        sid: int,
        p: str,
        d: str,
        cfgs: list[_PrefillCfg],
        dec: PhaseConfig,
        rec: RejectionRecorder,
    ) -> tuple[list[_PrefillCfg], PhaseConfig]:
        """The prefill configurations of ``p`` the engine can pair with a decode on ``d``, and that
        decode: none when the engine cannot move KV between the pools (``kv-transfer``); else those
        whose TP its connector accepts beside ``dec`` (the pool's cheapest decode), or beside the
        cheapest decode at a TP the rule accepts (NIXL: decode TP ≥ prefill TP; equal TP), and
        ``engine-tp`` when there is none."""
        path = self.limits.path(req.serving, p, d)
        if not path.ok:
            for kind, pool in (("prefill", p), ("decode", d)):
                rec.reject(
                    kind, pool, Reason.KV_TRANSFER, math.inf, f"prefill on {p}, decode on {d}: {path.detail}"
                )
            return [], dec
        ok = [c for c in cfgs if self.limits.tp_ok(req.serving, c.tp, dec.tp)[0]]
        if ok:
            return ok, dec
        ctx = next(c for c in self.pools_for(req.engine) if c.pool.name == d)
        for tp in sorted({c.tp for c in cfgs}):
            wanted = frozenset(t for t in ctx.tps if self.limits.tp_ok(req.serving, tp, t)[0])
            key = (id(req), d, wanted)
            if key not in self._alt_decode:
                alt, _ = self._decode_best(req, sid, ctx, RejectionRecorder(False), wanted)
                self._alt_decode[key] = alt
            alt = self._alt_decode[key]
            if alt is not None:
                ok = [c for c in cfgs if self.limits.tp_ok(req.serving, c.tp, alt.tp)[0]]
                if ok:
                    return ok, alt
        why = self.limits.tp_ok(req.serving, cfgs[0].tp, dec.tp)[1]
        detail = f"{why}, and no decode configuration on {d} at a TP it accepts"
        self.limits.reject_pair(rec, p, d, Reason.ENGINE_TP, detail, (cfgs[0].tp, dec.tp))
        return [], dec

    @staticmethod
    def _record_dominated(p: str, d: str, co: Option, cost_lb: float, rec: RejectionRecorder) -> None:
        sev = cost_lb / max(co.cost_per_hour, 1e-12)
        for kind, pool_name in (("prefill", p), ("decode", d)):
            if rec.wants(kind, pool_name, sev, DOMINATED_STAGE):
                rec.add(
                    Rejection(
                        pool_name,
                        Reason.COST,
                        f"prefill on {p} with decode on {d} costs ≥ ${cost_lb:.2f}/h; {co.describe()} costs "
                        f"${co.cost_per_hour:.2f}/h with no more devices",
                        kind,
                        sev,
                        None,
                        None,
                        DOMINATED_STAGE,
                    )
                )
            else:
                rec.count += 1

    def _dominated(
        self, p: str, d: str, prefill_devices_lb: int, dec: PhaseConfig, colocated: dict[str, Option]
    ) -> tuple[Option, float] | None:
        """A colocated option dominating every (p, d) option (no more devices anywhere, no dearer),
        judged on a lower bound of the prefill devices; with its cost bound, else None."""
        cost_lb = prefill_devices_lb * self._price[p] + dec.devices * self._price[d]
        need = {p: prefill_devices_lb} if p != d else {p: prefill_devices_lb + dec.devices}
        if p != d:
            need[d] = dec.devices
        for q in dict.fromkeys((p, d)):
            co = colocated.get(q)
            if co is not None and co.cost_per_hour <= cost_lb + 1e-12 and co.devices[0][1] <= need[q]:
                return co, cost_lb
        return None


def _replicas(reps: int, tp: int, devices: int) -> str:
    return (
        f"{reps} replica{'s' if reps != 1 else ''} × TP {tp} = {devices} device{'s' if devices != 1 else ''}"
    )


def _demand(req: WorkloadRequest) -> str:
    if req.concurrent_sessions is not None:
        return f"{req.concurrent_sessions} concurrent sessions"
    return f"{req.requests_per_second:g} req/s"
