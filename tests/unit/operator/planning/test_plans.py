"""Planning rounds: resolution, the stable and joint policies, shared capacity, pool loss."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hetsched.operator.planning.intake import resolve
from hetsched.operator.planning.plans import plan_workloads, what_if
from hetsched.operator.pools.build import with_used
from hetsched.operator.reconcile.manifests import phase_deployments
from hetsched.scheduler.placement.request import resolve_workload
from support.builders import CHAT, CODER, HUGE, demo_nodes, pools_input, registration


def test_resolve_reports_the_field() -> None:
    with pytest.raises(ValueError, match=r"spec\.model"):
        resolve("ns", "w", {**CHAT, "model": {"name": "no-such-model-xyz"}})
    with pytest.raises(ValueError, match=r"spec\.agent\.profile"):
        resolve("ns", "w", {**CHAT, "agent": {"profile": "no-such-agent"}})
    req, model_id = resolve("ns", "w", CHAT)
    assert req.key == "ns/w" and model_id  # Hugging Face id when the catalog knows it


def test_resolve_from_config_json() -> None:
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "num_hidden_layers": 16,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "torch_dtype": "bfloat16",
        "tie_word_embeddings": True,
    }
    spec = {**CHAT, "model": {"configMap": {"name": "my-model"}}}
    req, model_id = resolve("ns", "w", spec, config_json=config)
    assert req.model.num_layers == 16
    assert "my-model" in model_id or model_id == req.model.name
    with pytest.raises(ValueError, match="configMap"):
        resolve("ns", "w", spec, config_json={"model_type": "llama"})


def test_plan_places_disaggregated_and_colocated() -> None:
    plans = plan_workloads([registration("chat", CHAT), registration("coder", CODER)], pools_input())
    chat, coder = plans[("default", "chat")], plans[("default", "coder")]
    assert chat.placed and coder.placed
    for p in (chat, coder):
        assert p.prefill is not None and p.decode is not None
        assert p.prefill.operational_intensity > p.decode.operational_intensity  # prefill is the dense phase
        assert p.decode.capacity_footprint_bytes > 0 and p.decode.tpot_seconds is not None
        assert p.dollars_per_million_tokens is not None and p.dollars_per_million_tokens > 0
        assert p.max_model_len > 0
        assert p.rejected and all(pool and phase and reason for pool, phase, reason in p.rejected)
    deployments = phase_deployments(chat) if chat.mode == "disaggregated" else phase_deployments(coder)
    assert {d.phase for d in deployments} <= {"prefill", "decode", "colocated"}
    for d in phase_deployments(chat) + phase_deployments(coder):
        assert d.node_selector == {"hetsched.io/pool": d.pool} and d.gpu and d.tp >= 1 and d.replicas >= 1


def test_infeasible_plan_says_why() -> None:
    plans = plan_workloads([registration("huge", HUGE)], pools_input())
    huge = plans[("default", "huge")]
    assert not huge.placed and huge.reason and huge.message
    assert phase_deployments(huge) == [] and huge.devices() == {}
    assert huge.signature() == ("unplaced", huge.reason)


def test_stable_policy_keeps_placements_and_counts_their_devices() -> None:
    pools = pools_input()
    chat = registration("chat", CHAT)
    first = plan_workloads([chat], pools)
    coder = registration("coder", CODER)
    second = plan_workloads([chat, coder], pools, first)
    assert second[chat.key] is first[chat.key]  # untouched, not re-planned
    used = {}
    for p in second.values():
        for pool, n in p.devices().items():
            used[pool] = used.get(pool, 0) + n
    totals = {p.name: p.free_devices for p in pools.cluster.pools}
    assert all(n <= totals[pool] for pool, n in used.items())
    # A spec change (new generation) re-plans that workload.
    third = plan_workloads([replace(chat, generation=2), coder], pools, second)
    assert third[chat.key].generation == 2 and third[coder.key] is second[coder.key]


def test_joint_policy_replans_everything() -> None:
    pools = pools_input()
    regs = [registration("chat", CHAT), registration("coder", CODER)]
    first = plan_workloads(regs, pools, policy="joint")
    second = plan_workloads(regs, pools, first, policy="joint")
    assert all(second[k] is not first[k] for k in first)
    assert all(second[k].signature() == first[k].signature() for k in first)
    with pytest.raises(ValueError, match="policy"):
        plan_workloads(regs, pools, policy="random")


def test_losing_a_pool_replans_its_workloads() -> None:
    chat = registration("chat", CHAT)
    first = plan_workloads([chat], pools_input())
    used_pools = set(first[chat.key].devices())
    nodes = [x for x in demo_nodes() if x["metadata"]["labels"]["hetsched.io/pool"] not in used_pools]
    second = plan_workloads([chat], pools_input(nodes), first)
    assert second[chat.key].placed
    assert not set(second[chat.key].devices()) & used_pools


def test_shrunk_pool_unpins_the_newest_workloads() -> None:
    # Copies of one colocated workload pinned to the pool it prefers; then one of its two nodes goes.
    colocated = {**CHAT, "disaggregation": "never"}
    (probe,) = plan_workloads([registration("probe", colocated)], pools_input()).values()
    assert probe.placed and probe.decode is not None
    pool = probe.decode.pool
    spec = {**colocated, "pools": {"prefill": [pool], "decode": [pool]}}
    # Created in reverse name order: the last names are the oldest and keep their devices.
    regs = [registration(f"w{i:02d}", spec, created=f"2026-01-01T00:00:{59 - i:02d}Z") for i in range(8)]
    first = plan_workloads(regs, pools_input())
    placed = sorted(k for k, p in first.items() if p.placed)
    assert placed
    per_node = {p.name: p.devices_per_node for p in pools_input().cluster.pools}[pool]
    nodes = [x for x in demo_nodes() if x["metadata"]["name"] != f"{pool}-1"]
    second = plan_workloads(regs, pools_input(nodes), first)
    assert sum(p.devices().get(pool, 0) for p in second.values()) <= per_node  # one node left
    kept = sorted(k for k in placed if second[k] is first[k])
    assert kept and kept == placed[len(placed) - len(kept) :]  # the oldest keep theirs, the newest move


def test_with_used_and_what_if() -> None:
    pools = pools_input()
    cluster = with_used(pools.cluster, {"h100": 10, "l4": 100})
    free = {p.name: p.free_devices for p in cluster.pools}
    assert free["h100"] == 6 and free["l4"] == 0
    req = resolve_workload(CHAT, name="what", namespace="ns")
    doc = what_if([req], pools, {"t4": 8})
    (w,) = doc["workloads"]
    assert w["name"] == "what" and w["feasible"]
    assert w["phases"]["decode"]["pool"] != "t4"
    assert doc["poolsFingerprint"] == pools.fingerprint

    def finite(x: object) -> bool:
        if isinstance(x, float):
            return math.isfinite(x)
        if isinstance(x, dict):
            return all(finite(v) for v in x.values())
        if isinstance(x, list):
            return all(finite(v) for v in x)
        return True

    assert finite(doc)


def test_workload_without_serving_is_planned_with_the_default_images_engine() -> None:
    """The operator deploys the registry's vLLM image when spec.serving names no image, so the
    plan uses vLLM's fitted terms; a spec naming another engine (or its image) gets that engine's,
    and the serving choice the placement limits read follows."""
    from hetsched.operator.planning.intake import resolve
    from hetsched.scheduler.engines.platform import DEFAULT_ENGINE

    req, _ = resolve("ns", "chat", CHAT)
    assert req.engine == DEFAULT_ENGINE == "vllm" and req.serving.engine == "vllm"
    sglang = {**CHAT, "serving": {"prefill": {"image": "lmsysorg/sglang:v0.5.9"}}}
    req, _ = resolve("ns", "chat", sglang)
    assert req.engine == "sglang" and req.serving.engine == "sglang"
    assert req.serving.image("decode") == ("lmsysorg/sglang:v0.5.9", "spec.serving.prefill.image")
    named = {**CHAT, "serving": {"engine": "sglang", "kvConnector": "mooncake"}}
    req, _ = resolve("ns", "chat", named)
    assert req.engine == "sglang" and req.serving.connector == "mooncake"
    custom = {**CHAT, "serving": {"prefill": {"image": "registry.local/my-llm:1"}}}
    req, _ = resolve("ns", "chat", custom)
    assert req.engine is None  # an image of no known engine: the shared calibrated terms


def test_model_id_is_the_named_hugging_face_id() -> None:
    """{model} renders the id the workload names (an -Instruct id stays -Instruct), else the
    catalog entry's Hugging Face id."""
    from hetsched.operator.planning.intake import resolve

    _, model_id = resolve("ns", "w", {**CHAT, "model": {"name": "meta-llama/Llama-3.1-8B-Instruct"}})
    assert model_id == "meta-llama/Llama-3.1-8B-Instruct"
    _, model_id = resolve("ns", "w", {**CHAT, "model": {"name": "llama-3.1-8b"}})
    assert model_id == "meta-llama/Llama-3.1-8B"


def test_a_cpu_phase_quotes_its_error_band_in_the_plan_description() -> None:
    plans = plan_workloads([registration("chat", CHAT)], pools_input())
    [plan] = plans.values()
    assert plan.placed and plan.prefill is not None and plan.decode is not None
    assert plan.prefill.error_band is None and plan.decode.error_band is None  # GPUs: no band
    assert "±" not in plan.describe()
    on_cpu = replace(
        plan,
        prefill=replace(plan.prefill, error_band=0.2, gpu=False),
        decode=replace(plan.decode, error_band=0.1, gpu=False),
    )
    text = on_cpu.describe()
    assert plan.mode == "disaggregated" and plan.prefill.ttft_seconds is not None
    assert plan.decode.tpot_seconds is not None
    assert (
        f"TTFT {plan.prefill.ttft_seconds * 1e3:.3g} ms ±20% (CPU, held-out median error on the calibrated CPU)"
        in text
    )
    assert (
        f"TPOT {plan.decode.tpot_seconds * 1e3:.3g} ms ±10% (CPU, held-out median error on the calibrated CPU)"
        in text
    )
