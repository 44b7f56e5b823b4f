"""Builders and checks of the placement tests (tests/unit/scheduler/placement/): small models,
GPU-like hardware, requests, pools and clusters, and ``check_plan``, which re-checks every chosen
configuration independently of the planner.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from hetsched.scheduler.catalog.agents import AgentProfile
from hetsched.scheduler.catalog.hardware import DeviceKind, HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.cost import Phase, Precisions, estimate_phase
from hetsched.scheduler.estimator.precision import Precision
from hetsched.scheduler.estimator.serving import (
    Parallel,
    predict_colocated,
    predict_disaggregated,
)
from hetsched.scheduler.placement import PlanOptions, Reason, WorkloadRequest
from hetsched.scheduler.placement.engine_limits import EngineLimits
from hetsched.scheduler.placement.estimates import EstimateCache
from hetsched.scheduler.placement.result import Plan
from hetsched.scheduler.pools import Cluster, Pool
from hetsched.scheduler.spec import DisaggregationMode

GB = 1e9
GIB = float(1 << 30)


def model(
    name: str = "tiny-1b",
    layers: int = 16,
    hidden: int = 2048,
    heads: int = 16,
    kv: int = 4,
    ffn: int = 8192,
    vocab: int = 32000,
) -> ModelConfig:
    return ModelConfig(
        name=name,
        source="test",
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=hidden // heads,
        intermediate_size=ffn,
        vocab_size=vocab,
    )


SMALL = model()  # ~1.1B parameters
MID = model("mid-8b", layers=32, hidden=4096, heads=32, kv=8, ffn=14336, vocab=128256)  # Llama-3.1-8B shape
BIG = model("big-70b", layers=80, hidden=8192, heads=64, kv=8, ffn=28672, vocab=128256)  # Llama-3.1-70B shape


def gpu(
    name: str,
    mem_gb: float,
    bw_tbs: float,
    tflops: float,
    price: float,
    net_gbs: float = 25.0,
    link_gbs: float = 300.0,
    kind: DeviceKind = DeviceKind.GPU,
) -> HardwareSpec:
    return HardwareSpec(
        name=name,
        kind=kind,
        memory_bytes=mem_gb * GB,
        memory_bandwidth=bw_tbs * 1e12,
        peak_flops={"bf16": tflops * 1e12},
        intra_node_bandwidth=link_gbs * GB,
        network_bandwidth=net_gbs * GB,
        power_watts=300,
        price_per_hour=price,
        source="test",
    )


FAST = gpu("fast", 80, 3.35, 989, 4.25, link_gbs=450)  # H100-like
OLD = gpu("old", 80, 2.0, 312, 2.2)  # A100-like
CHEAP = gpu("cheap", 24, 0.3, 121, 0.8)  # L4-like
TINY = gpu("tiny", 16, 0.32, 65, 0.5)  # T4-like
CPU = gpu("socket", 768, 0.6, 200, 6.0, kind=DeviceKind.CPU)


def agent(
    prompt: int = 1000,
    output: int = 200,
    turns: int = 1,
    initial: int | None = None,
    growth: int = 0,
    name: str = "test-agent",
) -> AgentProfile:
    return AgentProfile(
        name=name,
        prompt_tokens=prompt,
        output_tokens=output,
        turns_per_task=turns,
        initial_context_tokens=prompt if initial is None else initial,
        context_growth_per_turn=growth,
        source="test",
    )


def request(
    name: str = "w",
    m: ModelConfig = SMALL,
    *,
    rps: float | None = None,
    sessions: int | None = None,
    ttft: float = 1.0,
    tpot: float = 0.05,
    prompt: int = 1000,
    output: int = 200,
    cached: int = 0,
    mode: DisaggregationMode = DisaggregationMode.AUTO,
    kv: Precision = Precision.BF16,
    namespace: str = "default",
    **kw: Any,
) -> WorkloadRequest:
    if rps is None and sessions is None:
        rps = 2.0
    return WorkloadRequest(
        name=name,
        namespace=namespace,
        model=m,
        agent=agent(prompt, output),
        precisions=Precisions(kv_cache=kv),
        prompt_tokens=prompt,
        cached_tokens=cached,
        output_tokens=output,
        ttft_slo_seconds=ttft,
        tpot_slo_seconds=tpot,
        requests_per_second=rps,
        concurrent_sessions=sessions,
        disaggregation=mode,
        **kw,
    )


def pool(
    name: str,
    hw: HardwareSpec,
    nodes: int = 1,
    per_node: int = 8,
    free: int | None = None,
    price: float | None = None,
) -> Pool:
    return Pool(
        name=name,
        hardware=hw,
        nodes=nodes,
        devices_per_node=per_node,
        free_devices=nodes * per_node if free is None else free,
        price_per_device_hour=hw.price_per_hour if price is None else price,
        node_selector={"hetsched.io/pool": name},
    )


def cluster(
    *pools: Pool, bandwidth: dict[tuple[str, str], float] | None = None, default_gbs: float = 25.0
) -> Cluster:
    pairs = {tuple(sorted(k)): v for k, v in (bandwidth or {}).items()}
    return Cluster(tuple(pools), pairs, default_gbs * GB)  # type: ignore[arg-type]


def fresh(options: PlanOptions | None = None, **kw: Any) -> dict[str, Any]:
    return {"options": options or PlanOptions(**kw), "cache": EstimateCache()}


def check_plan(
    result: Plan, requests: Sequence[WorkloadRequest], cl: Cluster, options: PlanOptions | None = None
) -> None:
    """Re-check every placed workload with the estimator and the serving formulas directly."""
    opts = options or PlanOptions()
    by_key = {r.key: r for r in requests}
    used: dict[str, int] = {}
    limits = EngineLimits(cl)
    for w in result.workloads:
        req = by_key[w.key]
        if not w.placed:
            assert w.prefill.pool is None and w.decode.pool is None and w.cost_per_hour == 0
            assert w.reason and w.detail
            continue
        pre, dec = w.prefill, w.decode
        assert (
            pre.pool
            and dec.pool
            and pre.tp
            and dec.tp
            and pre.batch
            and dec.batch
            and pre.replicas
            and dec.replicas
        )
        pp, dp = cl.pool(pre.pool), cl.pool(dec.pool)
        for ph, p in ((pre, pp), (dec, dp)):
            assert ph.tp is not None and ph.tp <= p.devices_per_node and ph.tp & (ph.tp - 1) == 0
            assert req.allows(ph.phase, p.name)
            kind = "colocated" if w.mode == "colocated" else ph.phase
            assert limits.why_not_runs(req.serving, kind, p.name) is None  # the engine has an image there

        def fits(p: Pool, tp: int, batch: int, context: int, req: WorkloadRequest = req) -> bool:
            c = estimate_phase(
                req.model,
                Phase.DECODE,
                batch=1,
                new_tokens=1,
                context_tokens=context - 1,
                precisions=req.precisions,
                tp=tp,
            )
            usable = p.hardware.memory_bytes * opts.utilization
            return c.weight_resident_bytes / tp + batch * c.kv_bytes_per_request_per_device <= usable * (
                1 + 1e-12
            )

        lam = req.requests_per_second
        if w.mode == "colocated":
            assert pre.pool == dec.pool and pre.tp == dec.tp and pre.replicas == dec.replicas
            assert fits(dp, dec.tp, dec.batch, req.capacity_context)
            pred = predict_colocated(
                req.model,
                dp.hardware,
                req.shape,
                Parallel(tp=dec.tp),
                concurrency=dec.batch,
                engine=req.engine,
                efficiency=opts.efficiency,
                utilization=opts.utilization,
            )
            if lam is None:
                assert req.concurrent_sessions is not None
                assert dec.replicas * dec.batch >= req.concurrent_sessions
                lam = req.concurrent_sessions / (pred.ttft_seconds + req.output_tokens * pred.tpot_seconds)
            assert dec.replicas * pred.decode_requests_per_second >= lam * (1 - 1e-9)
            used[dp.name] = used.get(dp.name, 0) + dec.replicas * dec.tp
        else:
            assert w.mode == "disaggregated"
            # The engine can move KV between the pools, at these TP degrees (engine_limits).
            assert limits.path(req.serving, pp.name, dp.name).ok
            assert limits.tp_ok(req.serving, pre.tp, dec.tp)[0]
            assert fits(pp, pre.tp, pre.batch, req.prefill_context)
            assert fits(dp, dec.tp, dec.batch, req.capacity_context)
            pred = predict_disaggregated(
                req.model,
                pp.hardware,
                dp.hardware,
                req.shape,
                prefill=Parallel(tp=pre.tp),
                decode=Parallel(tp=dec.tp),
                prefill_batch=pre.batch,
                decode_batch=dec.batch,
                kv_transfer_bandwidth=limits.kv_bandwidth(req.serving, pp.name, dp.name),
                prefill_efficiency=opts.efficiency,
                decode_efficiency=opts.efficiency,
                utilization=opts.utilization,
                prefill_workers=pre.replicas,
                concurrency=w.concurrency,
                engine=req.engine,
            )
            if req.concurrent_sessions is not None:
                assert w.concurrency == req.concurrent_sessions
            if lam is None:
                assert req.concurrent_sessions is not None
                assert dec.replicas * dec.batch >= req.concurrent_sessions
                lam = req.concurrent_sessions / (pred.ttft_seconds + req.output_tokens * pred.tpot_seconds)
            assert pre.replicas * pred.prefill_requests_per_second >= lam * (1 - 1e-9)
            assert dec.replicas * pred.decode_requests_per_second >= lam * (1 - 1e-9)
            assert pre.kv_transfer_seconds == pytest.approx(pred.kv_transfer_seconds, rel=1e-9)
            used[pp.name] = used.get(pp.name, 0) + pre.replicas * pre.tp
            used[dp.name] = used.get(dp.name, 0) + dec.replicas * dec.tp
        assert pred.ttft_seconds <= req.ttft_slo_seconds * (1 + 1e-9)
        assert pred.tpot_seconds <= req.tpot_slo_seconds * (1 + 1e-9)
        assert w.ttft_seconds == pytest.approx(pred.ttft_seconds, rel=1e-9)
        assert w.tpot_seconds == pytest.approx(pred.tpot_seconds, rel=1e-9)
        assert pre.ttft_seconds == pytest.approx(pred.ttft_seconds, rel=1e-9)
        assert dec.tpot_seconds == pytest.approx(pred.tpot_seconds, rel=1e-9)
        assert w.requests_per_second == pytest.approx(lam, rel=1e-9)
        devices = {pre.pool: 0, dec.pool: 0}
        if w.mode == "colocated":
            devices[dec.pool] = dec.replicas * dec.tp
        else:
            devices[pre.pool] += pre.replicas * pre.tp
            devices[dec.pool] += dec.replicas * dec.tp
        cost = sum(n * cl.pool(p).price_per_device_hour for p, n in devices.items())
        assert w.cost_per_hour == pytest.approx(cost, rel=1e-9)
        tokens_per_hour = lam * req.output_tokens * 3600
        assert w.cost_per_million_tokens == pytest.approx(cost / (tokens_per_hour / 1e6), rel=1e-9)
    for p in cl.pools:
        assert used.get(p.name, 0) <= p.free_devices, f"pool {p.name} over-committed"
        usage = next(u for u in result.pools if u.name == p.name)
        assert usage.used_devices == used.get(p.name, 0)
    assert result.total_cost_per_hour == pytest.approx(sum(w.cost_per_hour for w in result.workloads))
    check_rejections(result, cl)


def check_rejections(result: Plan, cl: Cluster) -> None:
    names = [p.name for p in cl.pools] + [u.name for u in cl.unavailable]
    for w in result.workloads:
        for ph in (w.prefill, w.decode):
            pools = [r.pool for r in ph.rejected]
            expected = [n for n in names if n != ph.pool]
            assert sorted(pools) == sorted(expected), f"{w.key} {ph.phase}: every other pool gets one reason"
            for r in ph.rejected:
                assert isinstance(r.reason, Reason) and r.detail.strip()
                assert set(r.to_dict()) == {"pool", "reason", "detail"}
