"""Placement engine: every chosen configuration re-checked independently, reasons, suggestions.

The builders (``model``, ``gpu``, ``request``, ``cluster``, ``check_plan``) are in
``tests/support/placement.py``, shared with the other placement tests.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from hetsched.scheduler.catalog.hardware import IDEAL, DeviceKind, HardwareSpec
from hetsched.scheduler.catalog.models import ModelConfig
from hetsched.scheduler.estimator.cost import Phase, Precisions
from hetsched.scheduler.estimator.precision import Precision
from hetsched.scheduler.estimator.serving import (
    Parallel,
    predict_colocated,
    predict_disaggregated,
)
from hetsched.scheduler.placement import PlanOptions, Reason, WorkloadRequest, plan, resolve_workload
from hetsched.scheduler.placement.candidates import CandidateGenerator, batch_ladder, ceil_div, tp_degrees
from hetsched.scheduler.placement.estimates import EstimateCache
from hetsched.scheduler.placement.result import Plan
from hetsched.scheduler.pools import Cluster, build_cluster
from hetsched.scheduler.spec import DisaggregationMode
from support import REPO
from support.placement import (
    BIG,
    CHEAP,
    CPU,
    FAST,
    GB,
    MID,
    OLD,
    SMALL,
    TINY,
    agent,
    check_plan,
    cluster,
    fresh,
    gpu,
    model,
    pool,
    request,
)


# ---- unit helpers ------------------------------------------------------------------------------------------
def test_ladders_and_ceil() -> None:
    assert tp_degrees(8, 64) == [1, 2, 4, 8]
    assert tp_degrees(6, 64) == [1, 2, 4]
    assert tp_degrees(1, 64) == [1]
    assert batch_ladder(1) == [1]
    assert batch_ladder(13) == [1, 2, 4, 8, 13]
    assert batch_ladder(16) == [1, 2, 4, 8, 16]
    assert batch_ladder(0) == []
    assert ceil_div(3.0000000000001, 1.0) == 3
    assert ceil_div(3.01, 1.0) == 4
    assert ceil_div(0.0, 2.0) == 0
    assert ceil_div(7, 2) == 4
    assert ceil_div(1e-12, 100.0) == 1  # far below one replica's capacity: still one replica


@pytest.mark.parametrize("mode", list(DisaggregationMode))
def test_a_tiny_demand_gets_one_replica_and_pays_for_it(mode: DisaggregationMode) -> None:
    """A demand far below one replica's capacity (10⁻¹⁰ req/s) is served by one replica per phase,
    and the plan's devices, cost and $/Mtok are those of that replica (never 0 replicas at $0/h)."""
    cl = cluster(pool("cheap", CHEAP, 8, 4), pool("old", OLD, 4))
    req = request("tiny", SMALL, rps=1e-10, mode=mode)
    result = plan([req], cl, **fresh())
    check_plan(result, [req], cl)
    w = result.workload("tiny")
    assert w.placed
    for phase in (w.prefill, w.decode):
        assert phase.replicas is not None and phase.replicas >= 1
        assert phase.tp is not None and phase.devices == phase.replicas * phase.tp
    assert w.cost_per_hour > 0 and w.cost_per_million_tokens is not None and w.cost_per_million_tokens > 0


# ---- the serving model's formulas -------------------------------------------------------------------------
def test_every_option_is_the_serving_models_prediction() -> None:
    """Options offered to the solver carry serving.predict_*'s numbers for their configuration."""
    cl = cluster(
        pool("fast", FAST, 1),
        pool("old", OLD, 1),
        pool("cheap", CHEAP, 2, 4),
        bandwidth={("fast", "old"): 50 * GB},
    )
    opts = PlanOptions()
    gen = CandidateGenerator(cl, opts, EstimateCache())
    seen = {"colocated": 0, "disaggregated": 0}
    for req in (
        request("a", MID, rps=3, prompt=2000, cached=3000),
        request("b", SMALL, sessions=40, tpot=0.03),
        request("c", BIG, sessions=8, ttft=3.0, tpot=0.1),
    ):
        for o in gen.generate(req).all_options:
            seen[o.mode.value] += 1
            pre, dec = o.prefill, o.decode
            if o.mode.value == "colocated":
                ref = predict_colocated(
                    req.model,
                    cl.pool(dec.pool).hardware,
                    req.shape,
                    Parallel(tp=dec.tp),
                    concurrency=dec.batch,
                )
            else:
                ref = predict_disaggregated(
                    req.model,
                    cl.pool(pre.pool).hardware,
                    cl.pool(dec.pool).hardware,
                    req.shape,
                    prefill=Parallel(tp=pre.tp),
                    decode=Parallel(tp=dec.tp),
                    prefill_batch=pre.batch,
                    decode_batch=dec.batch,
                    kv_transfer_bandwidth=gen.limits.kv_bandwidth(req.serving, pre.pool, dec.pool),
                    prefill_workers=pre.replicas,
                    concurrency=o.concurrency,
                )
            assert o.ttft_seconds == ref.ttft_seconds and o.tpot_seconds == ref.tpot_seconds
            assert o.ttft_seconds <= req.ttft_slo_seconds and o.tpot_seconds <= req.tpot_slo_seconds
    assert seen["colocated"] and seen["disaggregated"]


# ---- end to end on small clusters ---------------------------------------------------------------------------
def test_small_model_lands_on_cheap_gpus_and_checks_out() -> None:
    cl = cluster(pool("fast", FAST, 2), pool("cheap", CHEAP, 2, 4), pool("tiny", TINY, 2, 4))
    reqs = [request("chat", SMALL, rps=4, ttft=1.0, tpot=0.05)]
    result = plan(reqs, cl, **fresh())
    check_plan(result, reqs, cl)
    w = result.workloads[0]
    assert w.placed and {w.prefill.pool, w.decode.pool} <= {"cheap", "tiny"}
    assert result.solver.optimal


def test_big_model_needs_tensor_parallelism() -> None:
    cl = cluster(pool("fast", FAST, 2), pool("old", OLD, 2), pool("cheap", CHEAP, 4, 4))
    reqs = [request("coder", BIG, sessions=32, prompt=2000, cached=14000, output=200, ttft=2.0, tpot=0.05)]
    result = plan(reqs, cl, **fresh())
    check_plan(result, reqs, cl)
    w = result.workloads[0]
    assert w.placed and w.decode.pool in ("fast", "old") and (w.decode.tp or 0) >= 2
    cheap = next(r for r in w.decode.rejected if r.pool == "cheap")
    assert cheap.reason is Reason.TP_EXCEEDS_NODE and "TP 8" in cheap.detail and "4 device" in cheap.detail


def test_several_workloads_share_pools_and_check_out() -> None:
    cl = cluster(
        pool("fast", FAST, 1, 8), pool("old", OLD, 1, 8), pool("cheap", CHEAP, 2, 4), pool("tiny", TINY, 2, 4)
    )
    reqs = [
        request("a", SMALL, rps=6),
        request("b", MID, sessions=16, prompt=2500, cached=8000, output=200, ttft=2.0, tpot=0.06),
        request("c", MID, rps=3, ttft=0.5, tpot=0.03),
        request("d", BIG, sessions=8, prompt=1000, output=100, ttft=3.0, tpot=0.08),
        request("e", SMALL, sessions=64, prompt=500, cached=4000, output=300, tpot=0.04),
    ]
    result = plan(reqs, cl, **fresh())
    check_plan(result, reqs, cl)
    assert result.placed == len(reqs)


def test_modes_never_and_always() -> None:
    cl = cluster(pool("fast", FAST, 1), pool("cheap", CHEAP, 2, 4))
    never = request("n", SMALL, mode=DisaggregationMode.NEVER)
    always = request("a", SMALL, mode=DisaggregationMode.ALWAYS)
    result = plan([never, always], cl, **fresh())
    check_plan(result, [never, always], cl)
    assert result.workload("n").mode == "colocated"
    assert result.workload("a").mode == "disaggregated"


def test_kv_transfer_is_added_to_ttft_and_explained() -> None:
    """Prefill on one pool, decode on another: TTFT pays the KV over the inter-pool link."""
    slow_net = {("fast", "big"): 0.2 * GB}
    big_mem = gpu("bigmem", 192, 1.0, 100, 1.0)
    cl = cluster(pool("fast", FAST, 1), pool("big", big_mem, 1), bandwidth=slow_net)
    req = request(
        "w",
        MID,
        rps=1,
        prompt=8000,
        cached=0,
        output=500,
        ttft=0.8,
        tpot=0.2,
        mode=DisaggregationMode.ALWAYS,
        prefill_pools=frozenset({"fast"}),
        decode_pools=frozenset({"big"}),
    )
    result = plan([req], cl, **fresh())
    w = result.workload("w")
    assert not w.placed and w.reason == "slo"
    assert "KV transfer" in w.detail and "GB/s" in w.detail
    fast_net = cluster(pool("fast", FAST, 1), pool("big", big_mem, 1), bandwidth={("fast", "big"): 50 * GB})
    ok = plan([req], fast_net, **fresh())
    check_plan(ok, [req], fast_net)
    w2 = ok.workload("w")
    assert w2.placed and w2.prefill.kv_transfer_seconds is not None and w2.prefill.kv_transfer_seconds > 0
    # TTFT = prefill step + KV transfer (+ queueing for a prefill slot, per the serving model).
    assert (w2.ttft_seconds or 0) >= w2.prefill.kv_transfer_seconds + (w2.prefill.step_seconds or 0)


def test_sessions_set_decode_replicas() -> None:
    cl = cluster(pool("old", OLD, 2))
    req = request("s", MID, sessions=100, mode=DisaggregationMode.NEVER, max_batch=16)
    result = plan([req], cl, **fresh())
    check_plan(result, [req], cl)
    d = result.workload("s").decode
    assert d.batch is not None and d.batch <= 16 and d.replicas == math.ceil(100 / d.batch)


def test_rps_sets_replicas_from_throughput() -> None:
    cl = cluster(pool("cheap", CHEAP, 8, 4))
    req = request("r", SMALL, rps=40, mode=DisaggregationMode.ALWAYS, tpot=0.05)
    result = plan([req], cl, **fresh())
    check_plan(result, [req], cl)
    w = result.workload("r")
    assert w.placed
    d, p = w.decode, w.prefill
    dec_rps = (d.batch or 0) / (req.output_tokens * (d.tpot_seconds or 1))
    assert d.replicas == ceil_div(40, dec_rps)
    pre_rps = (p.batch or 0) / (p.step_seconds or 1)
    assert p.replicas == ceil_div(40, pre_rps)


def test_tp_exceeds_node() -> None:
    cl = cluster(pool("singles", OLD, nodes=8, per_node=1))
    req = request("big", BIG, rps=1)
    result = plan([req], cl, **fresh())
    w = result.workload("big")
    assert not w.placed and w.reason == "tp-exceeds-node"
    rej = next(r for r in w.decode.rejected if r.pool == "singles")
    assert rej.reason is Reason.TP_EXCEEDS_NODE and "TP 2" in rej.detail and "1 device" in rej.detail
    assert any(s.action == "bigger-nodes" and s.feasible for s in w.suggestions)


def test_slo_rejection_names_the_numbers() -> None:
    cl = cluster(pool("tiny", TINY, 1, 4))
    req = request("w", MID, rps=1, tpot=0.005, mode=DisaggregationMode.NEVER)
    w = plan([req], cl, **fresh()).workload("w")
    assert not w.placed and w.reason == "slo"
    rej = w.decode.rejected[0]
    assert rej.reason is Reason.SLO and "TPOT" in rej.detail and "> 5.0 ms" in rej.detail
    relax = next(s for s in w.suggestions if s.action == "relax-slo")
    assert relax.feasible
    tpot = float(relax.changes["slo.tpotSeconds"])
    again = plan([replace(req, tpot_slo_seconds=tpot)], cl, **fresh())
    assert again.workload("w").placed


def test_pool_constraints_and_unknown_hardware() -> None:
    doc = {
        "pools": [
            {"name": "fast", "hardware": "custom-fast", "nodes": 1, "devicesPerNode": 8},
            {
                "name": "cheap",
                "hardware": "custom-cheap",
                "nodes": 2,
                "devicesPerNode": 4,
                "pricePerDeviceHour": 0.1,
            },
            {"name": "mystery", "hardware": "no-such-device", "nodes": 1, "devicesPerNode": 8},
        ],
        "hardware": [
            {
                "name": "custom-fast",
                "memory": "80GB",
                "bandwidth": "3.35TB/s",
                "peakTflops": {"bf16": 989},
                "intraNodeBandwidth": "450GB/s",
                "networkBandwidth": "400Gb/s",
                "power": "700W",
                "pricePerHour": 4.0,
                "source": "test",
            },
            {
                "name": "custom-cheap",
                "memory": "24GB",
                "bandwidth": "300GB/s",
                "peakTflops": {"bf16": 121},
                "intraNodeBandwidth": "32GB/s",
                "networkBandwidth": "100Gb/s",
                "power": "72W",
                "pricePerHour": 0.8,
                "source": "test",
            },
        ],
    }
    cl = build_cluster(doc)
    assert [p.name for p in cl.pools] == ["fast", "cheap"]
    assert cl.pool("cheap").price_per_device_hour == 0.1 and cl.pool("fast").price_per_device_hour == 4.0
    assert cl.unavailable[0].name == "mystery" and cl.unavailable[0].reason == "hardware-unknown"
    assert "no-such-device" in cl.unavailable[0].detail
    req = request("w", SMALL, rps=2, excluded_pools=frozenset({"cheap"}))
    result = plan([req], cl, **fresh())
    check_plan(result, [req], cl)
    w = result.workload("w")
    assert w.prefill.pool == "fast"
    reasons = {r.pool: r for r in w.prefill.rejected}
    assert reasons["cheap"].reason is Reason.POOL_EXCLUDED and "exclude" in reasons["cheap"].detail
    assert reasons["mystery"].reason is Reason.HARDWARE_UNKNOWN
    only = request("o", SMALL, rps=2, decode_pools=frozenset({"cheap"}), mode=DisaggregationMode.ALWAYS)
    w2 = plan([only], cl, **fresh()).workload("o")
    assert w2.decode.pool == "cheap"
    assert {r.pool: r.reason for r in w2.decode.rejected}["fast"] is Reason.POOL_EXCLUDED


def test_competition_leaves_one_out_with_no_free_devices() -> None:
    cl = cluster(pool("old", OLD, 1, 8, free=4))
    reqs = [
        request("a", BIG, rps=0.5, mode=DisaggregationMode.NEVER),
        request("b", BIG, rps=0.5, mode=DisaggregationMode.NEVER),
    ]
    result = plan(reqs, cl, **fresh())
    check_plan(result, reqs, cl)
    placed = [w for w in result.workloads if w.placed]
    out = [w for w in result.workloads if not w.placed]
    assert len(placed) == 1 and len(out) == 1
    w = out[0]
    assert w.reason == "no-free-devices" and w.closest_miss is not None
    assert (
        w.closest_miss.reason is Reason.NO_FREE_DEVICES
        and "free after the other workloads" in w.closest_miss.detail
    )
    add = next(s for s in w.suggestions if s.action == "add-devices")
    assert add.feasible and add.changes["pools"] == {"old": 4}


def test_unfit_context_gets_verified_suggestions() -> None:
    cl = cluster(pool("old", OLD, 1, 8))
    req = request(
        "long",
        BIG,
        sessions=4,
        prompt=2000,
        cached=2_000_000,
        output=200,
        ttft=600,
        tpot=1.0,
        mode=DisaggregationMode.NEVER,
    )
    result = plan([req], cl, **fresh())
    w = result.workload("long")
    assert not w.placed and w.reason == "capacity"
    assert w.closest_miss is not None and w.closest_miss.reason is Reason.CAPACITY
    actions = {s.action: s for s in w.suggestions}
    lower = actions["lower-context"]
    assert lower.feasible and lower.cost_per_hour is not None
    ctx = int(lower.changes["maxContextTokens"])
    assert ctx < req.capacity_context
    again = plan([req.with_context(ctx)], cl, **fresh())
    assert again.workload("long").placed
    assert "kv-cache-fp8" in actions
    if actions["kv-cache-fp8"].feasible:
        fp8 = req.with_precisions(replace(req.precisions, kv_cache=Precision.FP8))
        assert plan([fp8], cl, **fresh()).workload("long").placed


def test_every_rejected_candidate_has_reason_and_detail() -> None:
    cl = cluster(
        pool("fast", FAST, 1),
        pool("old", OLD, 1),
        pool("cheap", CHEAP, 2, 4),
        pool("tiny", TINY, 1, 4),
        pool("cpu", CPU, 2, 2),
    )
    reqs = [
        request("a", BIG, sessions=16, prompt=2000, cached=20000, tpot=0.04),
        request("b", SMALL, rps=50, ttft=0.2, tpot=0.02),
    ]
    opts = PlanOptions(record_all_rejections=True)
    gen = CandidateGenerator(cl, opts, EstimateCache())
    total = 0
    for r in reqs:
        c = gen.generate(r)
        assert c.rejections, "these workloads must reject some candidates"
        for rej in c.rejections:
            assert (
                isinstance(rej.reason, Reason)
                and rej.detail.strip()
                and rej.pool in {p.name for p in cl.pools}
            )
            assert rej.kind in ("prefill", "decode", "colocated")
            assert rej.severity > 0
        total += len(c.rejections)
    assert total > 5
    result = plan(reqs, cl, **fresh(opts))
    check_plan(result, reqs, cl)


def test_cpu_pool_serves_relaxed_small_workload() -> None:
    cheap_cpu = gpu("socket", 768, 0.6, 200, 0.3, kind=DeviceKind.CPU)
    cl = cluster(pool("fast", FAST, 1), pool("cpu", cheap_cpu, 2, 2))
    req = request("batch-job", SMALL, rps=0.2, ttft=30, tpot=0.2)
    result = plan([req], cl, **fresh())
    check_plan(result, [req], cl)
    assert result.workload("batch-job").decode.pool == "cpu"


def test_cpu_options_carry_the_cpu_fits_error_band(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU phase quotes the CPU fit's held-out median error (TTFT for prefill, TPOT for decode);
    GPU phases and the pure roofline quote none."""
    from hetsched.scheduler.estimator import efficiency
    from hetsched.scheduler.placement.cli import _row

    monkeypatch.setattr(efficiency, "CPU_ERROR_BAND", efficiency.ErrorBand(0.123, 0.234, "test"))
    cheap_cpu = gpu("socket", 768, 0.6, 200, 0.3, kind=DeviceKind.CPU)
    cl = cluster(pool("fast", FAST, 1), pool("cpu", cheap_cpu, 2, 2))
    reqs = [
        request("batch-job", SMALL, rps=0.2, ttft=30, tpot=0.2),
        request("chat", SMALL, rps=200, tpot=0.01),
    ]
    result = plan(reqs, cl, **fresh())
    for w in result.workloads:
        for ph in (w.prefill, w.decode):
            on_cpu = ph.pool == "cpu"
            expected = (0.234 if ph.phase == "prefill" else 0.123) if on_cpu else None
            assert ph.error_band == expected, (w.name, ph.phase, ph.pool)
            assert ph.to_dict()["error_band"] == expected
            row = " ".join(_row(ph, w))
            assert ("±" in row) == on_cpu
            if expected is not None:
                assert f"±{expected:.0%}" in row and "held-out median error" in row
    batch = result.workload("batch-job")
    assert batch.decode.pool == "cpu" and batch.decode.error_band == 0.123
    assert "fast" in {ph.pool for w in result.workloads for ph in (w.prefill, w.decode)}
    # The pure roofline is no calibrated prediction: no band.
    ideal = plan(reqs, cl, **fresh(efficiency=IDEAL))
    assert all(ph.error_band is None for w in ideal.workloads for ph in (w.prefill, w.decode))


def test_utilization_caps_memory() -> None:
    cl = cluster(pool("old", OLD, 1, 1))
    req = request(
        "w", model("m", layers=40, hidden=5120, heads=40, kv=40, ffn=20480), rps=0.1, tpot=1.0, ttft=10
    )
    # ~13B parameters = 26 GB of weights: fits at 0.9 × 80 GB, not at 0.3 × 80 GB (it would at TP 2).
    assert plan([req], cl, **fresh(utilization=0.9)).workload("w").placed
    opts = PlanOptions(utilization=0.3, record_all_rejections=True)
    w = plan([req], cl, **fresh(opts)).workload("w")
    assert not w.placed and w.reason == "tp-exceeds-node"
    c = CandidateGenerator(cl, opts, EstimateCache()).generate(req)
    assert any(r.reason is Reason.CAPACITY and "0.3 ×" in r.detail for r in c.rejections)


# ---- resolution --------------------------------------------------------------------------------------------
SPEC: dict[str, Any] = {
    "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
    "agent": {"profile": "coding", "overrides": {"outputTokens": 150}},
    "maxContextTokens": 16384,
    "maxBatch": 64,
    "precision": {"kvCache": "fp8"},
    "demand": {"concurrentSessions": 12},
    "slo": {"ttftSeconds": 2, "tpotSeconds": 0.05},
    "disaggregation": "always",
    "pools": {"decode": ["a100"], "exclude": ["t4"]},
}


def test_resolve_workload_from_a_spec_dict() -> None:
    req = resolve_workload(SPEC, name="w", namespace="team")
    assert req.key == "team/w" and req.model.name == "llama-3.1-8b"
    assert req.output_tokens == 150 and req.agent.output_tokens == 150
    assert req.precisions.kv_cache is Precision.FP8 and req.precisions.weights is Precision.BF16
    assert req.concurrent_sessions == 12 and req.requests_per_second is None
    assert req.disaggregation is DisaggregationMode.ALWAYS and req.max_batch == 64
    # Scenario.from_agent's convention: decode context = maxContextTokens = C + P + O//2.
    assert req.cached_tokens + req.prompt_tokens + req.output_tokens // 2 == 16384
    assert req.capacity_context == req.cached_tokens + req.prompt_tokens + req.output_tokens
    assert (
        req.allows("decode", "a100") and not req.allows("decode", "h100") and not req.allows("prefill", "t4")
    )
    assert req.allows("prefill", "h100")


def test_resolve_workload_errors_and_injection() -> None:
    with pytest.raises(ValueError, match=r"spec\.model"):
        resolve_workload({**SPEC, "model": {"name": "no-such-model-xyz"}}, name="w")
    with pytest.raises(ValueError, match=r"spec\.agent\.profile"):
        resolve_workload({**SPEC, "agent": {"profile": "no-such-agent-xyz"}}, name="w")
    with pytest.raises(ValueError, match="configMap"):
        resolve_workload({**SPEC, "model": {"configMap": {"name": "cfg"}}}, name="w")
    with pytest.raises(ValueError, match="demand"):
        resolve_workload({**SPEC, "demand": {}}, name="w")
    req = resolve_workload(
        {**SPEC, "model": {"configMap": {"name": "cfg"}}}, name="w", model=SMALL, agent=agent(500, 100)
    )
    assert req.model is SMALL and req.agent.prompt_tokens == 500 and req.output_tokens == 150


def test_request_validation() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        request(rps=1.0, sessions=2)
    with pytest.raises(ValueError, match="SLO"):
        request(rps=1.0, ttft=0)


# ---- the examples ----------------------------------------------------------------------------------------
def _plan_files(pools: str, *workloads: str) -> tuple[Plan, Cluster, list[WorkloadRequest]]:
    from hetsched.scheduler.placement import load_requests

    cl = build_cluster(REPO / "examples" / "pools" / pools)
    reqs = load_requests([str(REPO / "examples" / "workloads" / w) for w in workloads])
    return plan(reqs, cl, **fresh()), cl, reqs


def test_examples_plan_sensibly() -> None:
    result, cl, reqs = _plan_files(
        "demo.yaml", "chatbot.yaml", "coding.yaml", "web-use.yaml", "computer-use.yaml"
    )
    check_plan(result, reqs, cl)
    assert result.placed == 4
    chat = result.workload("chatbot-8b")
    pools = {chat.prefill.pool, chat.decode.pool}
    assert "h100" not in pools and pools & {"l4", "t4"}, "a small chatbot belongs on older, cheaper GPUs"
    coder = result.workload("coding-70b")
    for ph in (coder.prefill, coder.decode):
        assert ph.pool in ("h100", "a100") and (ph.tp or 0) >= 2
    for w in result.workloads:
        for ph in (w.prefill, w.decode):
            assert ph.regime in ("compute-bound", "bandwidth-bound", "capacity-bound")


def test_mix_example_uses_several_pools() -> None:
    result, cl, reqs = _plan_files("demo.yaml", "mix.yaml")
    check_plan(result, reqs, cl)
    assert result.placed == len(reqs) >= 5
    used = {u.name for u in result.pools if u.used_devices}
    assert len(used) >= 3
    assert any(w.mode == "disaggregated" and w.prefill.pool != w.decode.pool for w in result.workloads)


MOE = ModelConfig.model_validate(
    {
        "name": "moe",
        "source": "test",
        "num_layers": 24,
        "hidden_size": 2048,
        "num_heads": 16,
        "num_kv_heads": 4,
        "head_dim": 128,
        "intermediate_size": 0,
        "vocab_size": 32000,
        "moe": {"num_experts": 32, "experts_per_token": 4, "expert_intermediate_size": 768},
    }
)


@pytest.mark.parametrize("hw", [FAST, OLD, CHEAP])
@pytest.mark.parametrize("tp", [1, 2, 8])
def test_step_time_is_the_rooflines(hw: HardwareSpec, tp: int) -> None:
    """The hot path's fast step time equals roofline.evaluate's (and so the serving model's steps)."""
    from hetsched.scheduler.catalog.hardware import Efficiency
    from hetsched.scheduler.estimator.roofline import evaluate

    calibrated = hw.model_copy(
        update={
            "peak_flops": {**hw.peak_flops, "fp8": 2 * hw.peak_flops["bf16"]},
            "efficiency": Efficiency(
                bandwidth=0.6,
                compute=0.55,
                step_overhead_seconds=0.0015,
                collective_latency_seconds=2e-5,
                link_efficiency=0.8,
            ),
        }
    )
    cache = EstimateCache()
    for m, prec in (
        (MID, Precisions()),
        (MOE, Precisions(kv_cache=Precision.FP8, activations=Precision.FP8)),
    ):
        req = replace(request(m=m, prompt=3000, cached=2000, output=300), precisions=prec)
        sid = cache.shape_id(req)
        for h in (hw, calibrated):
            hid = cache.hardware_id(h, None, 0.9)
            for phase in (Phase.PREFILL, Phase.DECODE):
                for batch in (1, 7, 64):
                    cost = cache.cost(req, sid, phase, tp, batch)
                    ref = evaluate(cost, h, compute_class=prec.compute_class).step_seconds
                    assert cache._fast_step(req, cost, h, hid, tp) == pytest.approx(ref, rel=1e-12)
                    assert cache.step_time(req, sid, h, hid, phase, tp, batch) == pytest.approx(
                        ref, rel=1e-12
                    )
    assert cache.fast_mismatches == 0


def test_step_time_falls_back_to_the_roofline(monkeypatch: pytest.MonkeyPatch) -> None:
    from hetsched.scheduler.estimator.roofline import evaluate

    cache = EstimateCache()
    monkeypatch.setattr(cache, "_fast_step", lambda *a: 123.0)  # a roofline that changed under us
    req = request(m=MID)
    sid, hid = cache.shape_id(req), cache.hardware_id(FAST, None, 0.9)
    for batch in (1, 2, 4, 8, 16):
        ref = evaluate(cache.cost(req, sid, Phase.DECODE, 1, batch), FAST).step_seconds
        assert cache.step_time(req, sid, FAST, hid, Phase.DECODE, 1, batch) == pytest.approx(ref)
    assert cache.fast_mismatches == 1


# ---- spec.pools naming pools the cluster does not have -----------------------------------------------
def test_unknown_pools_are_named_with_the_known_ones() -> None:
    """A typo or a pool whose nodes have not joined: reason unknown-pool, the message names the
    missing pool(s) and lists the cluster's (not an invalid spec: re-planned when pools change)."""
    cl = cluster(pool("fast", FAST, 1, 8), pool("cheap", CHEAP, 2, 4))
    req = request("w", SMALL, rps=2, decode_pools=frozenset({"h10"}))
    w = plan([req], cl, **fresh()).workload("w")
    assert not w.placed and w.reason == "unknown-pool"
    assert w.detail.startswith("spec.pools.decode: unknown pool 'h10' (pools: cheap, fast); ")
    excluded = {r.pool: r.detail for r in w.decode.rejected if r.reason is Reason.POOL_EXCLUDED}
    assert excluded == {
        p: "spec.pools.decode allows only h10 (unknown pool 'h10')" for p in ("fast", "cheap")
    }

    both = request("b", SMALL, rps=2, prefill_pools=frozenset({"x", "y"}), decode_pools=frozenset({"z"}))
    w = plan([both], cl, **fresh()).workload("b")
    assert w.reason == "unknown-pool"
    assert w.detail.startswith(
        "spec.pools.prefill: unknown pools 'x', 'y' (pools: cheap, fast); "
        "spec.pools.decode: unknown pool 'z' (pools: cheap, fast); "
    )


def test_a_known_but_unusable_pool_is_not_unknown() -> None:
    cl = cluster(pool("fast", FAST, 1, 8), pool("cheap", CHEAP, 2, 4))
    # One of the allowed pools exists: placed there; the missing one is still named in the
    # rejections of the pools the restriction excludes.
    req = request("w", SMALL, rps=2, decode_pools=frozenset({"cheap", "h10"}))
    w = plan([req], cl, **fresh()).workload("w")
    assert w.placed and w.decode.pool == "cheap" and w.reason is None
    assert "(unknown pool 'h10')" in {r.pool: r.detail for r in w.decode.rejected}["fast"]
    # Only allowed pools the cluster has (here one that cannot hold the model): the usual reason.
    tiny = cluster(pool("fast", FAST, 1, 8), pool("tiny", TINY, 1, 1))
    huge = request("h", BIG, rps=2, decode_pools=frozenset({"tiny"}), mode=DisaggregationMode.NEVER)
    w = plan([huge], tiny, **fresh()).workload("h")
    assert not w.placed and w.reason != "unknown-pool" and "unknown pool" not in w.detail
    assert (
        req.unknown_pools(["fast", "cheap"]) == "spec.pools.decode: unknown pool 'h10' (pools: cheap, fast)"
    )
    assert huge.unknown_pools(["fast", "tiny"]) == ""


# ---- replicas sit on one node ------------------------------------------------------------------------------
BIGGER = model("big-200b", layers=96, hidden=12288, heads=96, kv=8, ffn=28672, vocab=128256)


def _packs(replicas: list[int], nodes: Sequence[int]) -> bool:
    """Exhaustive check that the replicas fit on nodes with these free devices."""
    if not replicas:
        return True
    first, rest = replicas[0], replicas[1:]
    free = list(nodes)
    for i, d in enumerate(free):
        if d >= first:
            free[i] -= first
            if _packs(rest, free):
                return True
            free[i] += first
    return False


def test_aligned_capacity_matches_exhaustive_packing() -> None:
    """For power-of-two replica sizes, 'for every size s the replicas of s or more need at most
    aligned_capacity(s)' is exactly 'they pack onto the nodes' (checked by exhaustive search)."""
    import itertools

    for nodes in [(6, 6), (8, 4), (5, 3, 2), (7,), (8, 8, 2, 1)]:
        p = replace(pool("p", OLD, len(nodes), max(nodes), free=sum(nodes)), node_devices=nodes)
        for counts in itertools.product(range(4), repeat=4):
            replicas = [s for s, c in zip((8, 4, 2, 1), counts, strict=True) for _ in range(c)]
            rule = all(sum(r for r in replicas if r >= s) <= p.aligned_capacity(s) for s in (1, 2, 4, 8))
            assert rule == _packs(replicas, nodes), (nodes, replicas)
    # Without per-node detail the free devices fill whole nodes of devices_per_node first.
    p = pool("p", OLD, 2, 6, free=10)
    assert [p.aligned_capacity(s) for s in (1, 2, 4, 8)] == [10, 10, 8, 0]


def test_take_and_give_back() -> None:
    p = replace(pool("p", OLD, 3, 8, free=20), node_devices=(8, 8, 4))
    taken = p.take([4, 8, 2])
    # largest first, each on the fullest node that holds it: 8 → an 8, 4 → the 4, 2 → the other 8
    assert taken.free_devices == 6 and taken.node_devices == (6,)
    assert taken.aligned_capacity(4) == 4 and taken.aligned_capacity(8) == 0
    back = taken.give_back([8])
    assert back.free_devices == 14 and back.aligned_capacity(8) == 8


@pytest.mark.parametrize("solver", ["milp", "greedy"])
def test_replicas_are_planned_onto_whole_nodes(solver: str) -> None:
    """Two 6-device nodes: 12 devices, but only two replicas of 4 devices fit (one per node)."""
    reqs = [
        request(f"w{i}", BIGGER, rps=0.1, ttft=10, tpot=0.2, mode=DisaggregationMode.NEVER) for i in range(3)
    ]
    four = cluster(replace(pool("old", OLD, 3, 4), node_devices=(4, 4, 4)))
    result = plan(reqs, four, **fresh(solver=solver))
    assert all(w.placed and w.decode.tp == 4 for w in result.workloads)  # the same 12 devices, as 3 × 4
    six = cluster(replace(pool("old", OLD, 2, 6), node_devices=(6, 6)))
    result = plan(reqs, six, **fresh(solver=solver))
    check_plan(result, reqs, six)
    placed = [w for w in result.workloads if w.placed]
    assert len(placed) == 2 and all(w.decode.tp == 4 for w in placed)
    (out,) = [w for w in result.workloads if not w.placed]
    assert out.reason == "no-free-devices"
    miss = (
        next(r for r in out.decode.rejected if r.pool == "old") if out.decode.rejected else out.closest_miss
    )
    assert miss is not None and "in replicas of 4" in miss.detail and "0 usable" in miss.detail, miss
    add = next(s for s in out.suggestions if s.action == "add-devices")
    assert add.changes["pools"] == {"old": 4}


@pytest.mark.parametrize("engine", [None, "sglang", "trtllm"])
def test_options_carry_the_engines_whole_prediction(engine: str | None) -> None:
    """With a calibrated catalog GPU, every option's prediction (times and the per-phase step
    analyses shown in the status) is serving.predict_colocated's with the workload's engine."""
    from hetsched.scheduler.catalog.hardware_catalog import get_hardware

    h100 = get_hardware("h100")
    assert h100 is not None
    cl = cluster(pool("h100", h100, 1))
    gen = CandidateGenerator(cl, PlanOptions(), EstimateCache())
    req = request("a", MID, rps=3, prompt=2000, mode=DisaggregationMode.NEVER, engine=engine)
    options = gen.generate(req).all_options
    assert options
    for o in options:
        ref = predict_colocated(
            req.model,
            h100,
            req.shape,
            Parallel(tp=o.decode.tp),
            concurrency=o.decode.batch,
            engine=engine,
        )
        assert (o.ttft_seconds, o.tpot_seconds) == (ref.ttft_seconds, ref.tpot_seconds)
        for mine, theirs in ((o.prediction.prefill, ref.prefill), (o.prediction.decode, ref.decode)):
            assert mine.performance.step_seconds == pytest.approx(theirs.performance.step_seconds, rel=1e-12)


def test_unfragmented_pools_add_no_capacity_rows() -> None:
    """Whole nodes of power-of-two devices need only the per-pool row; fragmented ones add a row
    per binding replica size (here 4: two 6-device nodes hold 8 devices of 4-device replicas)."""
    from hetsched.scheduler.placement import build_problem

    reqs = [request("w", SMALL)]
    plain = cluster(pool("fast", FAST, 2, 8), replace(pool("cheap", CHEAP, 3, 4), node_devices=(4, 4, 4)))
    gen = CandidateGenerator(plain, PlanOptions(), EstimateCache())
    problem, _ = build_problem([gen.generate(r) for r in reqs], plain)
    assert problem.capacity == (16, 12)
    split = cluster(pool("fast", FAST, 2, 8), replace(pool("old", OLD, 2, 6), node_devices=(6, 6)))
    gen = CandidateGenerator(split, PlanOptions(), EstimateCache())
    problem, _ = build_problem([gen.generate(r) for r in reqs], split)
    assert problem.capacity == (16, 12, 8)


def test_context_beyond_the_model_limit_is_rejected_everywhere() -> None:
    """A model serves at most its own context (max_position_embeddings): however much memory a pool
    has, a longer request is rejected there with context-limit, and the suggestion caps the context."""
    limited = SMALL.model_copy(update={"name": "short-ctx", "max_position_embeddings": 4096})
    cl = cluster(pool("fast", FAST, nodes=2), pool("cheap", CHEAP))
    req = request("long", limited, prompt=1000, output=200, cached=3800, ttft=60, tpot=1.0)
    assert req.capacity_context == 5000
    w = plan([req], cl, **fresh()).workload("long")
    assert not w.placed and w.reason == "context-limit"
    reasons = {r.pool: r for r in (*w.prefill.rejected, *w.decode.rejected)}
    assert {r.reason for r in reasons.values()} == {Reason.CONTEXT_LIMIT}
    assert "holds 5,000 tokens" in reasons["fast"].detail and "serves at most 4,096" in reasons["fast"].detail
    lower = {s.action: s for s in w.suggestions}["lower-context"]
    assert lower.feasible and int(lower.changes["maxContextTokens"]) <= 4096
    ok = request("ok", limited, prompt=1000, output=200, cached=2800, ttft=60, tpot=1.0)  # 4,000 tokens
    assert plan([ok], cl, **fresh()).workload("ok").placed
