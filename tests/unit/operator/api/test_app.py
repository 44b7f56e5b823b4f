"""The HTTP API and /metrics, in process (httpx over ASGI): same numbers as the status."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from hetsched.operator.api.app import PlanLimiter, Readiness, create_app, field_path
from hetsched.operator.api.metrics import Metrics
from hetsched.operator.api.state import OperatorState
from hetsched.operator.api.whatif import WhatIfBackend
from hetsched.operator.planning.plans import plan_workloads
from hetsched.operator.pools.build import PoolsInput
from hetsched.operator.reconcile.status import comparable, placed_status, unplaced_status
from prometheus_client.parser import text_string_to_metric_families
from support.builders import CHAT, CODER, HUGE, pools_input, registration

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
            s = placed_status(plan, 1, None, (True, "ok"), namespace_name=key, now=NOW)
        else:
            s = unplaced_status(plan, 1, None, now=NOW)
        state.set_workload(*key, comparable(s))
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


def _readyz(app: Any) -> tuple[int, dict[str, Any]]:
    r = _request(app, "GET", "/readyz")
    return r.status_code, r.json()


def test_readyz_waits_for_the_indices_and_says_why() -> None:
    """Started and pools listed is not enough: until Kopf's indices hold the cluster the workloads
    and the devices they use are unknown (~80 s at 2,000 nodes), so a Service must not route here."""
    state = OperatorState()
    readiness = Readiness()
    app = create_app(state, Metrics(state), None, readiness=readiness)
    code, body = _readyz(app)
    assert code == 503 and body["ready"] is False and body["reason"] == "Kopf has not started"
    assert "leader" not in body  # no leader election
    state.started.set()
    code, body = _readyz(app)
    assert code == 503 and "pools" in body["reason"]
    state.set_pools((), "")
    code, body = _readyz(app)
    assert code == 503 and body["indexed"] is False and body["reason"].startswith("indexing the cluster")
    assert _request(app, "GET", "/healthz").status_code == 200  # live all along
    assert readiness.mark_indexed("Kopf's indices") is True
    code, body = _readyz(app)
    assert code == 200 and body["ready"] is True and "reason" not in body
    assert (
        body["indexed"] is True and body["indexedBy"] == "Kopf's indices" and body["indexedAfterSeconds"] >= 0
    )
    assert readiness.mark_indexed("again") is False and readiness.indexed_how == "Kopf's indices"


def test_standby_replica_is_live_but_not_ready() -> None:
    """The chart's readinessProbe is /readyz: a standby stays out of the Service (it has no state)."""
    state = OperatorState()
    readiness = Readiness(leader_election=True, lease="hetsched/hetsched-operator")
    app = create_app(state, Metrics(state), None, readiness=readiness)
    assert _request(app, "GET", "/healthz").status_code == 200
    code, body = _readyz(app)
    assert code == 503 and body["leader"] is False
    assert body["reason"] == "standby: not the leader (Lease hetsched/hetsched-operator)"
    state.started.set()
    state.set_pools((), "")
    readiness.mark_indexed("Kopf's indices")
    assert _readyz(app)[0] == 503  # state complete, still not the leader
    readiness.leading.set()
    code, body = _readyz(app)
    assert code == 200 and body["leader"] is True
    readiness.leading.clear()  # the Lease was lost or released
    assert _readyz(app)[1]["reason"].startswith("standby")


def test_operator_marks_readiness_when_indexed_or_watching_nothing() -> None:
    from hetsched.operator.pools import watcher
    from hetsched.operator.settings import OperatorContext, OperatorSettings

    state = OperatorState()
    op = OperatorContext(OperatorSettings(), state, Metrics(state), readiness=Readiness())
    assert op.readiness is not None

    async def first_handler() -> None:
        op.indexed = asyncio.Event()
        op.mark_indexed()

    asyncio.run(first_handler())
    assert op.readiness.indexed.is_set() and op.readiness.indexed_how == "Kopf's indices"

    def kube(*names: str) -> Any:
        items = [SimpleNamespace(metadata=SimpleNamespace(name=n)) for n in names]

        async def list_namespace() -> Any:
            return SimpleNamespace(items=items)

        return SimpleNamespace(core=SimpleNamespace(list_namespace=list_namespace))

    def watches_nothing(clusterwide: bool, patterns: tuple[str, ...], *existing: str) -> bool:
        settings = OperatorSettings(clusterwide=clusterwide, namespaces=patterns)
        ctx = OperatorContext(settings, state, Metrics(state), kube=kube(*existing))
        return asyncio.run(watcher.watches_nothing(ctx))

    assert watches_nothing(False, ("hs-op-*",), "default", "kube-system")
    assert not watches_nothing(False, ("hs-op-*",), "default", "hs-op-1")
    assert not watches_nothing(False, ("team-a", "team-b"), "team-b")
    assert not watches_nothing(True, (), "default")  # cluster-wide: nodes are always watched


class _SlowBackend:
    """Plans block until released; counts how many ran at once."""

    def __init__(self) -> None:
        self.started = threading.Semaphore(0)
        self.go = threading.Event()
        self.lock = threading.Lock()
        self.running = 0
        self.peak = 0

    def estimate(self, request: Any) -> dict[str, Any]:
        raise NotImplementedError

    def plan(self, manifests: list[dict[str, Any]], include_existing: bool) -> dict[str, Any]:
        with self.lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        self.started.release()
        try:
            assert self.go.wait(20), "never released"
            return {"workloads": len(manifests)}
        finally:
            with self.lock:
                self.running -= 1


def test_plan_concurrency_is_bounded_with_429() -> None:
    backend = _SlowBackend()
    state = OperatorState()
    app = create_app(state, Metrics(state), backend, max_concurrent_plans=2)
    body = {"workloads": [{"kind": "AgentWorkload"}]}

    async def go() -> tuple[list[httpx.Response], list[httpx.Response], httpx.Response, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            running = [asyncio.create_task(client.post("/v1/plan", json=body)) for _ in range(2)]
            for _ in range(2):  # both computing, in worker threads
                assert await asyncio.to_thread(backend.started.acquire, True, 20)
            # The event loop is not blocked by the running plans.
            health = (await client.get("/healthz")).status_code
            extra = await asyncio.gather(*(client.post("/v1/plan", json=body) for _ in range(3)))
            backend.go.set()
            done = await asyncio.gather(*running)
            after = await client.post("/v1/plan", json=body)  # slots freed
        return list(done), list(extra), after, health

    done, extra, after, health = asyncio.run(go())
    assert health == 200
    assert [r.status_code for r in done] == [200, 200] and done[0].json() == {"workloads": 1}
    assert [r.status_code for r in extra] == [429, 429, 429]
    for r in extra:
        assert int(r.headers["retry-after"]) >= 1
        assert "2 what-if plan(s) already running" in r.json()["detail"]
    assert after.status_code == 200
    assert backend.peak == 2
    assert app.state.plan_limiter.rejected == 3


def test_failed_plans_free_their_slot(setup: tuple[Any, OperatorState, Metrics, PoolsInput]) -> None:
    app, *_ = setup  # the default limit (2)
    bad = {"workloads": [{"apiVersion": "hetsched.io/v1alpha1", "kind": "AgentWorkload", "spec": {}}]}
    for _ in range(5):
        assert _request(app, "POST", "/v1/plan", json=bad).status_code == 422
    limiter: PlanLimiter = app.state.plan_limiter
    assert limiter.try_acquire() and limiter.try_acquire() and not limiter.try_acquire()
    limiter.release(0.2)
    limiter.release(2.5)
    assert limiter.retry_after() == 3
    with pytest.raises(ValueError, match=">= 1"):
        PlanLimiter(0)


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


@pytest.mark.parametrize(
    ("name", "pattern", "expected"),
    [
        ("hs-op-1", "hs-op-*", True),
        ("default", "hs-op-*", False),
        ("myapp-pr-456", "myapp-*, !*-pr-*", False),
        ("myapp-pr-123", "myapp-*, !*-pr-*, *pr-123", True),  # re-admitted: the first glob matched
        ("other-pr-123", "myapp-*, !*-pr-*, *pr-123", False),  # never matched by the first glob
        ("anything", "!kube-*", True),  # a leading exclusion implies '*' first
        ("kube-system", "!kube-*", False),
    ],
)
def test_namespace_patterns_follow_kopf_syntax(name: str, pattern: str, expected: bool) -> None:
    from hetsched.operator.pools.watcher import namespace_matches

    assert namespace_matches(name, pattern) is expected
