"""Property-based fuzzing (hypothesis) of what untrusted input reaches: the Hugging Face config
loader (a ConfigMap's config.json), the estimator, and the operator's planning round (specs,
nodes). The contract: the only exception is ``ValueError`` with a message; every figure that comes
out is finite and non-negative; planning never over-commits a pool.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hetsched.operator.planning.intake import Registration, resolve
from hetsched.operator.planning.plans import plan_workloads
from hetsched.operator.pools.build import PoolsInput
from hetsched.operator.reconcile.status import placed_status, unplaced_status
from hetsched.scheduler import catalog
from hetsched.scheduler.catalog import agent_catalog, hardware_catalog, model_catalog
from hetsched.scheduler.estimator.analysis import Scenario, analyze
from hetsched.scheduler.estimator.cost import Phase, Precisions, estimate_phase
from hetsched.scheduler.estimator.precision import Precision
from hetsched.scheduler.placement.options import PlanOptions
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import DATA
from support.builders import demo_nodes, pools_input

HF_DIR = DATA / "hf_configs"
HF_CONFIGS = {p.stem: json.loads(p.read_text()) for p in sorted(HF_DIR.glob("*.json"))}
MODELS = sorted(model_catalog.MODELS)
HARDWARE = sorted(hardware_catalog.HARDWARE)
AGENTS = sorted(agent_catalog.AGENTS)
PRECISIONS = [p.value for p in Precision]

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def numbers(obj: Any, path: str = "") -> Iterator[tuple[str, float]]:
    """Every int/float in a nested structure of dicts, lists and dataclass-like ``to_dict`` results."""
    if isinstance(obj, bool) or obj is None:
        return
    if isinstance(obj, int | float):
        yield path, float(obj)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            yield from numbers(v, f"{path}.{k}")
    elif isinstance(obj, list | tuple):
        for i, v in enumerate(obj):
            yield from numbers(v, f"{path}[{i}]")


def assert_sane(doc: Any, what: str) -> None:
    for path, value in numbers(doc):
        assert math.isfinite(value), f"{what}: {path} = {value}"
        assert value >= 0, f"{what}: {path} = {value} < 0"


# ---- the config loader ------------------------------------------------------------------------------
def _paths(doc: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for k, v in doc.items():
        out.append((*prefix, k))
        if isinstance(v, Mapping):
            out += _paths(v, (*prefix, k))
    return out


HOSTILE = st.one_of(
    st.integers(-3, 3),
    st.integers(-(2**63), 2**63),
    st.sampled_from([0, -1, 10**6, 10**9, 10**12, 2**31]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.booleans(),
    st.none(),
    st.lists(st.integers(-2, 200), max_size=6),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)


@st.composite
def mutated_configs(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(sorted(HF_CONFIGS)))
    cfg = copy.deepcopy(HF_CONFIGS[name])
    paths = _paths(cfg)
    for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=3, unique=True)):
        parent: Any = cfg
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        if draw(st.booleans()) and draw(st.booleans()):
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = draw(HOSTILE)
    return cfg


def _load(cfg: Any) -> Any:
    try:
        return catalog.load_hf_config(cfg, "fuzz")
    except ValueError as exc:
        assert str(exc), "a ValueError without a message"
        return None


@FUZZ
@given(mutated_configs())
def test_config_loader_raises_only_value_errors(cfg: dict[str, Any]) -> None:
    model = _load(cfg)
    if model is None:
        return
    # A config that loads must also estimate sanely (or be refused with a ValueError).
    try:
        result = analyze(model, hardware_catalog.HARDWARE["h100-sxm"], Scenario(1, 512, 0, 1024, 128))
    except ValueError as exc:
        assert str(exc)
        return
    assert_sane(result.to_dict(), f"analysis of a fuzzed {cfg.get('model_type')} config")


@FUZZ
@given(
    st.one_of(
        st.dictionaries(st.text(max_size=20), HOSTILE, max_size=12),
        st.lists(st.integers(), max_size=3),
        st.text(max_size=20),
        st.integers(),
        st.none(),
    )
)
def test_config_loader_on_arbitrary_json(doc: Any) -> None:
    """Not even a config: a dict of junk, a list, a string, a number."""
    if isinstance(doc, Mapping):
        _load(doc)
        return
    with pytest.raises((ValueError, TypeError)):
        catalog.load_hf_config(doc, "fuzz")


@pytest.mark.parametrize(
    ("config", "key", "value", "match"),
    [
        ("llama-3.1-8b", "num_attention_heads", 0, "num_attention_heads"),
        ("qwen3-30b-a3b", "num_hidden_layers", 10**12, "num_hidden_layers"),
        ("qwen3-30b-a3b", "decoder_sparse_step", 0, "decoder_sparse_step"),
        ("deepseek-v3", "moe_layer_freq", 0, "moe_layer_freq"),
        ("deepseek-v3", "num_hidden_layers", 10**9, "num_hidden_layers"),
        ("qwen3-30b-a3b", "num_hidden_layers", -1, "num_hidden_layers"),
    ],
)
def test_config_loader_regressions(config: str, key: str, value: int, match: str) -> None:
    """Found by fuzzing: a zero divisor or an absurd layer count was a crash or a hang."""
    cfg = {**HF_CONFIGS[config], key: value}
    with pytest.raises(ValueError, match=match):
        catalog.load_hf_config(cfg, "fuzz")


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("no_rope_layer_interval", 0, "no_rope_layer_interval"),
        ("interleave_moe_layer_step", 0, "interleave_moe_layer_step"),
        ("num_hidden_layers", 10**9, "num_hidden_layers"),
    ],
)
def test_config_loader_regressions_llama4(key: str, value: int, match: str) -> None:
    cfg = copy.deepcopy(HF_CONFIGS["llama-4-scout-17b-16e"])
    if key == "no_rope_layer_interval":
        cfg["text_config"].pop("no_rope_layers")
    cfg["text_config"][key] = value
    with pytest.raises(ValueError, match=match):
        catalog.load_hf_config(cfg, "fuzz")


@pytest.mark.parametrize(
    ("key", "value"), [("patch_size", 0), ("pixel_shuffle_ratio", 0), ("image_size", -3)]
)
def test_config_loader_regressions_llama4_vision(key: str, value: int) -> None:
    cfg = copy.deepcopy(HF_CONFIGS["llama-4-scout-17b-16e"])
    cfg["vision_config"][key] = value
    with pytest.raises(ValueError, match=key):
        catalog.load_hf_config(cfg, "fuzz")


# ---- the estimator --------------------------------------------------------------------------------
@FUZZ
@given(
    model=st.sampled_from(MODELS),
    hardware=st.sampled_from(HARDWARE),
    batch=st.one_of(st.integers(1, 64), st.integers(1, 65536)),
    prompt=st.one_of(st.integers(1, 4096), st.integers(1, 10_000_000)),
    cached=st.integers(0, 10_000_000),
    output=st.integers(1, 100_000),
    tp=st.sampled_from([1, 2, 4, 8, 16, 64, 1024]),
    weights=st.sampled_from([None, *PRECISIONS]),
    kv=st.sampled_from(PRECISIONS),
)
def test_estimator_figures_are_finite_and_non_negative(
    model: str,
    hardware: str,
    batch: int,
    prompt: int,
    cached: int,
    output: int,
    tp: int,
    weights: str | None,
    kv: str,
) -> None:
    m = model_catalog.get_model(model)
    native = Precisions.native(m)
    precisions = Precisions(
        weights=Precision(weights) if weights else native.weights,
        kv_cache=Precision(kv),
        activations=Precision.BF16,
        experts=native.experts if weights is None else None,
    )
    scenario = Scenario(batch, prompt, cached, cached + prompt + output // 2, output)
    try:
        result = analyze(m, hardware_catalog.HARDWARE[hardware], scenario, precisions=precisions, tp=tp)
    except ValueError as exc:
        assert str(exc)
        return
    assert_sane(result.to_dict(), f"{model} on {hardware}")
    for phase in (result.prefill, result.decode):
        assert phase.cost.operational_intensity > 0
        assert phase.cost.capacity_footprint_bytes >= 0


@FUZZ
@given(
    batch=st.integers(-5, 5),
    new=st.integers(-5, 5),
    context=st.integers(-5, 5),
    tp=st.integers(-2, 2),
    phase=st.sampled_from(list(Phase)),
)
def test_estimator_refuses_impossible_shapes_with_value_error(
    batch: int, new: int, context: int, tp: int, phase: Phase
) -> None:
    m = model_catalog.get_model("llama-3.1-8b")
    valid = batch >= 1 and new >= 1 and context >= 0 and tp >= 1
    if valid:
        cost = estimate_phase(m, phase, batch=batch, new_tokens=new, context_tokens=context, tp=tp)
        assert math.isfinite(cost.operational_intensity) and cost.operational_intensity > 0
    else:
        with pytest.raises(ValueError, match="must be"):
            estimate_phase(m, phase, batch=batch, new_tokens=new, context_tokens=context, tp=tp)


# ---- the planner (the operator's planning round) -----------------------------------------------------
@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    tpot = draw(st.sampled_from([0.001, 0.02, 0.05, 0.1, 1.0, 60.0]))
    spec: dict[str, Any] = {
        "model": {"name": draw(st.sampled_from([*MODELS, "no-such-model"]))},
        "agent": {"profile": draw(st.sampled_from([*AGENTS, "no-such-agent"]))},
        "slo": {"ttftSeconds": tpot * draw(st.sampled_from([1, 2, 20, 60])), "tpotSeconds": tpot},
    }
    if draw(st.booleans()):
        spec["demand"] = {"requestsPerSecond": draw(st.sampled_from([0.001, 0.5, 5, 100, 1e4, 1e6]))}
    else:
        spec["demand"] = {"concurrentSessions": draw(st.sampled_from([1, 8, 256, 10**5, 10**7]))}
    if draw(st.booleans()):
        spec["disaggregation"] = draw(st.sampled_from(["auto", "always", "never"]))
    if draw(st.booleans()):
        spec["maxBatch"] = draw(st.sampled_from([1, 3, 64, 65536]))
    if draw(st.booleans()):
        spec["maxContextTokens"] = draw(st.sampled_from([2, 4096, 131072, 10_000_000]))
    if draw(st.booleans()):
        spec["precision"] = {
            "weights": draw(st.sampled_from(PRECISIONS)),
            "kvCache": draw(st.sampled_from(PRECISIONS)),
        }
    if draw(st.booleans()):
        names = ["h100", "a100", "l4", "t4", "cpu-amx", "tpu-v5"]
        spec["pools"] = {
            "decode": draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        }
    return spec


@st.composite
def nodes(draw: st.DrawFn) -> list[dict[str, Any]]:
    """The demo nodes, some gone, NotReady, cordoned or with odd GPU counts."""
    out = []
    for node in demo_nodes():
        fate = draw(st.sampled_from(["keep", "keep", "gone", "not-ready", "cordoned", "gpus"]))
        if fate == "gone":
            continue
        node = copy.deepcopy(node)
        if fate == "not-ready":
            node["status"]["conditions"] = [{"type": "Ready", "status": "False"}]
        elif fate == "cordoned":
            node.setdefault("spec", {})["unschedulable"] = True
        elif fate == "gpus":
            count = str(draw(st.sampled_from([0, 1, 3, 64])))
            for key in ("allocatable", "capacity"):
                if "nvidia.com/gpu" in node["status"].get(key, {}):
                    node["status"][key]["nvidia.com/gpu"] = count
        out.append(node)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes(), st.lists(specs(), min_size=1, max_size=5), st.sampled_from(["stable", "joint"]), st.data())
def test_planning_round_on_fuzzed_specs_and_nodes(
    node_list: list[dict[str, Any]], spec_list: list[dict[str, Any]], policy: str, data: st.DataObject
) -> None:
    pools: PoolsInput = pools_input(node_list)
    regs = []
    for i, spec in enumerate(spec_list):
        try:
            req, model_id = resolve("fuzz", f"w{i}", spec)
        except ValueError as exc:
            assert str(exc)
            continue
        regs.append(
            Registration(("fuzz", f"w{i}"), 1, f"uid-{i}", req, spec, model_id, f"2026-01-01T00:00:0{i}Z")
        )
    assume(regs)
    options = PlanOptions(solver=data.draw(st.sampled_from(["milp", "greedy"])), time_limit_seconds=5)
    plans = plan_workloads(regs, pools, policy=policy, options=options)
    assert set(plans) == {r.key for r in regs}
    used: dict[str, int] = {}
    for key, plan in plans.items():
        for pool, n in plan.devices().items():
            used[pool] = used.get(pool, 0) + n
        if plan.placed:
            status = placed_status(plan, 1, None, (True, "ok"), namespace_name=key)
        else:
            assert plan.reason and plan.message
            status = unplaced_status(plan, 1, None)
        assert_sane({k: v for k, v in status.items() if k != "conditions"}, f"status of {key}")
    free = {p.name: p.free_devices for p in pools.cluster.pools}
    for pool, n in used.items():
        assert n <= free.get(pool, 0), f"pool {pool} over-committed: {n} > {free.get(pool, 0)}"
