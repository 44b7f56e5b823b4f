"""The HTTP API and /metrics, in process (httpx over ASGI): same numbers as the status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hetsched.operator import reconcile
from hetsched.operator.api import create_app, field_path
from hetsched.operator.metrics import Metrics
from hetsched.operator.planning import PoolsInput, plan_workloads
from hetsched.operator.state import OperatorState
from hetsched.operator.whatif import WhatIfBackend
from operator_testkit import CHAT, CODER, HUGE, pools_input, registration
from prometheus_client.parser import text_string_to_metric_families

NOW = "2026-01-01T00:00:00Z"


def _state(pools: PoolsInput | None = None) -> OperatorState:
    """An operator state with the demo pools and three reconciled workloads."""
    pools = pools or pools_input()
    state = OperatorState()
    state.set_pools(pools.views, pools.fingerprint)
    plans = plan_workloads(
        [registration("chat", CHAT), registration("coder", CODER), registration("huge", HUGE)], pools
    )
    for key, plan in plans.items():
        if plan.placed:
            s = reconcile.placed_status(plan, 1, None, (True, "ok"), namespace_name=key, now=NOW)
        else:
            s = reconcile.unplaced_status(plan, 1, None, now=NOW)
        state.set_workload(*key, reconcile.comparable(s))
    return state


def _request(app: Any, method: str, url: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, url, **kw)

    return asyncio.run(go())


@pytest.fixture(scope="module")
def setup() -> tuple[Any, OperatorState, Metrics, PoolsInput]:
    pools = pools_input()
    state = _state(pools)
    metrics = Metrics(state)
    app = create_app(state, metrics, WhatIfBackend(state, lambda: pools), max_body=64 * 1024)
    return app, state, metrics, pools


def test_health_and_readiness() -> None:
    state = OperatorState()
    app = create_app(state, Metrics(state), None)
    assert _request(app, "GET", "/healthz").json() == {"status": "ok"}
    r = _request(app, "GET", "/readyz")
    assert r.status_code == 503 and r.json()["ready"] is False
    state.started.set()
    state.set_pools((), "")
    assert _request(app, "GET", "/readyz").status_code == 200
    assert (
        _request(app, "POST", "/v1/estimate", json={"model": "llama-3.1-8b", "hardware": "h100"}).status_code
        == 503
    )


def test_pools_and_allocation(setup: tuple[Any, OperatorState, Metrics, PoolsInput]) -> None:
    app, state, _, pools = setup
    doc = _request(app, "GET", "/v1/pools").json()
    assert doc["fingerprint"] == pools.fingerprint
    by_name = {p["name"]: p for p in doc["pools"]}
    assert set(by_name) == {"a100", "cpu-amx", "h100", "l4", "t4"}
    used = state.snapshot().allocated()
    for name, p in by_name.items():
        assert p["devicesAllocated"] == used.get(name, 0)
        assert p["devicesFree"] == p["devices"] - p["devicesAllocated"]
        assert p["hardware"] and p["pricePerDeviceHour"] is not None
    assert sum(used.values()) > 0


def test_workloads_match_status(setup: tuple[Any, OperatorState, Metrics, PoolsInput]) -> None:
    app, state, _, _ = setup
    doc = _request(app, "GET", "/v1/workloads").json()
    assert [(w["namespace"], w["name"]) for w in doc["workloads"]] == [
        ("default", "chat"),
        ("default", "coder"),
        ("default", "huge"),
    ]
    for w in doc["workloads"]:
        assert w["status"] == dict(state.snapshot().workloads[(w["namespace"], w["name"])])
    assert _request(app, "GET", "/v1/workloads", params={"namespace": "other"}).json() == {"workloads": []}


def test_metrics_equal_status(setup: tuple[Any, OperatorState, Metrics, PoolsInput]) -> None:
    app, state, _, _ = setup
    r = _request(app, "GET", "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for fam in text_string_to_metric_families(r.text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    snap = state.snapshot()
    for (ns, name), status in snap.workloads.items():
        for phase in ("prefill", "decode"):
            ph = status.get(phase)
            if not ph:
                continue
            labels = tuple(
                sorted({"namespace": ns, "name": name, "phase": phase, "pool": ph["pool"]}.items())
            )
            assert (
                samples[("hetsched_phase_operational_intensity_flops_per_byte", labels)]
                == ph["operationalIntensity"]
            )
            assert (
                samples[("hetsched_phase_capacity_footprint_bytes", labels)] == ph["capacityFootprintBytes"]
            )
            assert samples[("hetsched_phase_predicted_tokens_per_second", labels)] == ph["tokensPerSecond"]
            regime = tuple(sorted({**dict(labels), "regime": ph["regime"]}.items()))
            assert samples[("hetsched_phase_regime", regime)] == 1.0
            key = "ttftSeconds" if phase == "prefill" else "tpotSeconds"
            metric = (
                "hetsched_phase_predicted_ttft_seconds"
                if phase == "prefill"
                else "hetsched_phase_predicted_tpot_seconds"
            )
            assert samples[(metric, labels)] == ph[key]
        cost = samples.get(
            ("hetsched_workload_cost_dollars_per_million_tokens", (("name", name), ("namespace", ns)))
        )
        assert cost == status.get("dollarsPerMillionTokens")
    for (metric, labels), value in samples.items():
        if metric == "hetsched_pool_devices_allocated":
            assert value == snap.allocated().get(dict(labels)["pool"], 0)
    names = {m for m, _ in samples}
    for m in (
        "hetsched_pool_devices",
        "hetsched_pool_memory_bytes",
        "hetsched_reconcile_total",
        "hetsched_reconcile_duration_seconds_count",
        "hetsched_build_info",
    ):
        assert m in names
    # huge is not placed: no phase series for it.
    assert not any(
        dict(labels).get("name") == "huge" and m.startswith("hetsched_phase") for m, labels in samples
    )


def test_deleted_workload_series_disappear() -> None:
    state = _state()
    metrics = Metrics(state)
    app = create_app(state, metrics, None)
    assert 'name="chat"' in _request(app, "GET", "/metrics").text
    state.drop_workload("default", "chat")
    text = _request(app, "GET", "/metrics").text
    assert 'name="chat"' not in text and 'name="coder"' in text


def test_estimate(setup: tuple[Any, OperatorState, Metrics, PoolsInput]) -> None:
    app, *_ = setup
    r = _request(app, "POST", "/v1/estimate", json={"model": "llama-3.1-8b", "pool": "h100", "batch": 8})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["hardware"]["name"] == "h100-sxm" and doc["pool"] == "h100"
    pre, dec = doc["phases"]["prefill"], doc["phases"]["decode"]
    assert pre["operational_intensity"] > dec["operational_intensity"]
    by_hw = _request(app, "POST", "/v1/estimate", json={"model": "llama-3.1-8b", "hardware": "l4"}).json()
    assert by_hw["hardware"]["name"] == "l4"
    assert (
        _request(app, "POST", "/v1/estimate", json={"model": "llama-3.1-8b", "pool": "nope"}).status_code
        == 404
    )
    assert (
        _request(app, "POST", "/v1/estimate", json={"model": "nope-model", "hardware": "l4"}).status_code
        == 404
    )
    both = _request(
        app, "POST", "/v1/estimate", json={"model": "llama-3.1-8b", "hardware": "l4", "pool": "l4"}
    )
    assert both.status_code == 422


def test_what_if_plan_never_writes_and_counts_existing(
    setup: tuple[Any, OperatorState, Metrics, PoolsInput],
) -> None:
    app, state, _, _ = setup
    before = dict(state.snapshot().workloads)
    manifest = {
        "apiVersion": "hetsched.io/v1alpha1",
        "kind": "AgentWorkload",
        "metadata": {"name": "whatif", "namespace": "x"},
        "spec": CHAT,
    }
    r = _request(app, "POST", "/v1/plan", json={"workloads": [manifest]})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["includeExisting"] is True and doc["devicesInUse"] == state.snapshot().allocated()
    (w,) = doc["workloads"]
    assert w["name"] == "whatif" and w["feasible"]
    assert dict(state.snapshot().workloads) == before
    empty = _request(app, "POST", "/v1/plan", json={"workloads": [manifest], "includeExisting": False}).json()
    assert empty["devicesInUse"] == {}


def test_validation_errors_name_the_field(setup: tuple[Any, OperatorState, Metrics, PoolsInput]) -> None:
    app, *_ = setup
    bad = {
        "apiVersion": "hetsched.io/v1alpha1",
        "kind": "AgentWorkload",
        "metadata": {"name": "b"},
        "spec": {**CHAT, "slo": {"ttftSeconds": -1, "tpotSeconds": 0.05}},
    }
    r = _request(app, "POST", "/v1/plan", json={"workloads": [bad]})
    assert r.status_code == 422
    paths = [d["path"] for d in r.json()["detail"]]
    assert "workloads[0].spec.slo.ttftSeconds" in paths
    r = _request(app, "POST", "/v1/estimate", json={"model": "llama-3.1-8b", "hardware": "l4", "tp": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "tp"
    r = _request(app, "POST", "/v1/plan", json={"workloads": []})
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "workloads"
    unknown = {**bad, "spec": {**CHAT, "model": {"name": "no-such-model-q"}}}
    r = _request(app, "POST", "/v1/plan", json={"workloads": [unknown]})
    assert r.status_code == 422 and r.json()["detail"][0]["path"] == "workloads[0].spec"
    assert field_path(("body", "workloads", 0, "spec")) == "workloads[0].spec"


def test_body_limit(setup: tuple[Any, OperatorState, Metrics, PoolsInput]) -> None:
    app, *_ = setup
    big = json.dumps({"workloads": [{"x": "y" * 70_000}]})
    r = _request(app, "POST", "/v1/plan", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 8192

    r = _request(app, "POST", "/v1/plan", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_openapi_documents_the_endpoints(setup: tuple[Any, OperatorState, Metrics, PoolsInput]) -> None:
    app, *_ = setup
    paths = set(_request(app, "GET", "/openapi.json").json()["paths"])
    assert {
        "/healthz",
        "/readyz",
        "/v1/pools",
        "/v1/workloads",
        "/v1/estimate",
        "/v1/plan",
        "/metrics",
    } <= paths
    assert _request(app, "GET", "/docs").status_code == 200
