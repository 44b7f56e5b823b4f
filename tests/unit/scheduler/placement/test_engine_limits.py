"""Placement knows the serving engine's limits: builds per pool (``no-engine-build``), which pool
pairs can hand KV to each other (``kv-transfer``; CPU↔GPU only as an opted-in experimental pair),
connector TP rules (``engine-tp``), and the staged KV path's transfer time."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hetsched.scheduler.catalog.hardware_catalog import get_hardware
from hetsched.scheduler.engines.pairing import staged_bandwidth
from hetsched.scheduler.engines.platform import PoolServing, ServingChoice, platform_of
from hetsched.scheduler.placement import PlanOptions, Reason
from hetsched.scheduler.placement.planner import plan
from hetsched.scheduler.spec import DisaggregationMode
from support.placement import SMALL, check_plan, cluster, pool, request

L4, T4, H100 = get_hardware("l4"), get_hardware("t4"), get_hardware("h100-sxm")
XEON, MI300X = get_hardware("xeon-6980p"), get_hardware("mi300x")
OPTS = PlanOptions(suggestions=False)


def _reasons(phase_rejections: tuple[object, ...], pool_name: str) -> list[tuple[Reason, str]]:
    return [(r.reason, r.detail) for r in phase_rejections if r.pool == pool_name]  # type: ignore[attr-defined]


def test_cpu_prefill_with_gpu_decode_is_refused_without_the_opt_in() -> None:
    """The bad-input case of the operator: forced P/D, pools allowing only a CPU prefill and a GPU
    decode, no opt-in: not placed, the reason names the pair and the field that would allow it."""
    cl = cluster(pool("cpu", XEON, 2, 2), pool("l4", L4, 2, 4))
    req = request(
        "pd",
        SMALL,
        rps=0.5,
        ttft=30,
        tpot=0.5,
        mode=DisaggregationMode.ALWAYS,
        prefill_pools=frozenset({"cpu"}),
        decode_pools=frozenset({"l4"}),
    )
    w = plan([req], cl, OPTS).workloads[0]
    assert not w.placed and w.reason == "kv-transfer"
    assert "CPU and GPU pools is experimental" in w.detail and "allowExperimentalPairs" in w.detail
    opted = replace(req, serving=ServingChoice(experimental_pairs=True))
    result = plan([opted], cl, OPTS)
    w = result.workloads[0]
    assert w.placed and (w.prefill.pool, w.decode.pool) == ("cpu", "l4")
    check_plan(result, [opted], cl, OPTS)


def test_an_engine_without_a_build_for_the_pool_is_rejected_by_name() -> None:
    cl = cluster(pool("cpu", XEON, 2, 2), pool("l4", L4, 2, 4))
    req = replace(request("sg", SMALL, rps=1, ttft=30, tpot=0.5), serving=ServingChoice(engine="sglang"))
    w = plan([req], cl, OPTS).workloads[0]
    assert w.placed and w.decode.pool == "l4"
    reasons = _reasons(w.decode.rejected, "cpu")
    assert reasons and reasons[0][0] is Reason.NO_ENGINE_BUILD and "no CPU build" in reasons[0][1]
    # The pool names an image for the engine: it can run there again.
    mirrored = cluster(
        replace(pool("cpu", XEON, 2, 2), serving=PoolServing(images={"sglang": "mine/sglang-xeon:1"})),
        pool("l4", L4, 2, 4),
    )
    w2 = plan([req], mirrored, OPTS).workloads[0]
    assert all(r.reason is not Reason.NO_ENGINE_BUILD for r in w2.decode.rejected)


def test_a_pinned_cuda_image_keeps_the_workload_off_cpu_and_rocm_pools() -> None:
    cl = cluster(pool("cpu", XEON, 2, 2), pool("mi", MI300X, 1, 8), pool("l4", L4, 2, 4))
    pinned = replace(
        request("p", SMALL, rps=1, ttft=30, tpot=0.5),
        serving=ServingChoice(prefill_image="vllm/vllm-openai:v0.11.0"),
    )
    w = plan([pinned], cl, OPTS).workloads[0]
    assert w.placed and w.decode.pool == "l4"
    for name in ("cpu", "mi"):
        ((reason, detail),) = _reasons(w.decode.rejected, name)
        assert reason is Reason.NO_ENGINE_BUILD and "vllm/vllm-openai:v0.11.0 is vLLM's CUDA build" in detail


def test_nixl_decode_tp_at_least_prefill_tp() -> None:
    """A T4 prefill of an 8B model needs TP 2; an H100 decode fits at TP 1: NIXL needs decode TP ≥
    prefill TP, so the planner pairs it with a TP-2 decode (more devices) instead."""
    from hetsched.scheduler.catalog.model_catalog import get_model

    llama = get_model("llama-3.1-8b")
    cl = cluster(pool("t4", T4, 2, 4), pool("h100", H100, 1, 8))
    req = request(
        "tp",
        llama,
        rps=1,
        ttft=20,
        tpot=0.2,
        mode=DisaggregationMode.ALWAYS,
        prefill_pools=frozenset({"t4"}),
        decode_pools=frozenset({"h100"}),
    )
    result = plan([req], cl, OPTS)
    w = result.workloads[0]
    assert w.placed and w.prefill.tp == 2 and w.decode.tp >= 2
    check_plan(result, [req], cl, OPTS)
    # Mooncake needs equal TP: the decode runs at the prefill's TP.
    eq = replace(req, serving=ServingChoice(connector="mooncake"))
    w = plan([eq], cl, OPTS).workloads[0]
    assert w.placed and w.prefill.tp == w.decode.tp


def test_an_engine_tp_rule_nobody_meets_is_named() -> None:
    """SGLang needs equal TP; the decode pool's nodes hold one device, the prefill needs two."""
    from hetsched.scheduler.catalog.model_catalog import get_model

    cl = cluster(pool("t4", T4, 2, 4), pool("h100", H100, 2, 1))
    req = replace(
        request(
            "eq",
            get_model("llama-3.1-8b"),
            rps=1,
            ttft=20,
            tpot=0.2,
            mode=DisaggregationMode.ALWAYS,
            prefill_pools=frozenset({"t4"}),
            decode_pools=frozenset({"h100"}),
        ),
        serving=ServingChoice(engine="sglang"),
    )
    w = plan([req], cl, OPTS).workloads[0]
    assert not w.placed and w.reason == "engine-tp"
    assert "needs equal prefill and decode TP (prefill TP 2, decode TP 1)" in w.detail


def test_staged_kv_transfer_time_between_generations() -> None:
    cl = cluster(pool("l4", L4, 2, 4), pool("t4", T4, 2, 4))
    req = request(
        "st",
        SMALL,
        rps=1,
        ttft=30,
        tpot=0.5,
        mode=DisaggregationMode.ALWAYS,
        prefill_pools=frozenset({"l4"}),
        decode_pools=frozenset({"t4"}),
    )
    result = plan([req], cl, OPTS)
    w = result.workloads[0]
    assert w.placed
    check_plan(result, [req], cl, OPTS)
    network = cl.bandwidth_between("l4", "t4")
    bw = staged_bandwidth(network, platform_of(L4), platform_of(T4))
    assert bw < network  # device → host, the network, host → device, one after the other
    from hetsched.scheduler.estimator.cost import Phase, estimate_phase

    kv = estimate_phase(
        SMALL,
        Phase.PREFILL,
        batch=w.prefill.batch,
        new_tokens=req.prompt_tokens,
        context_tokens=0,
        precisions=req.precisions,
        tp=w.prefill.tp,
    ).kv_bytes_per_request
    assert w.prefill.kv_transfer_seconds == pytest.approx(kv / bw, rel=1e-9)
