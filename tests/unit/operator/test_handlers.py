"""Kopf wiring: which handlers exist (no daemons or timers, hence no finalizers), the CLI, the log
filter, and the pool publisher that turns index contents into pools."""

from __future__ import annotations

import asyncio
import logging

import kopf
import pytest
from hetsched.operator import handlers
from hetsched.operator.api.metrics import Metrics
from hetsched.operator.api.state import OperatorState
from hetsched.operator.cli import build_parser
from hetsched.operator.planning.loop import PlanningLoop
from hetsched.operator.pools.watcher import PoolPublisher
from hetsched.operator.run import _network
from hetsched.operator.settings import OperatorContext, OperatorSettings
from support.builders import demo_nodes, projections


def test_handlers_are_registered_without_finalizers() -> None:
    registry = kopf.get_default_registry()
    indices = {h.id for h in registry._indexing.get_all_handlers()}
    assert {"nodes_idx", "workloads_idx", "profiles_idx", "deployments_idx", "services_idx"} <= indices
    changing = {h.id for h in registry._changing.get_all_handlers()}
    assert {"workload-create", "workload-update/spec", "workload-resume"} <= changing
    assert all(not h.requires_finalizer for h in registry._changing.get_all_handlers())
    # Daemons and timers would put a finalizer on every AgentWorkload: none are used.
    assert list(registry._spawning.get_all_handlers()) == []
    watching = {h.id for h in registry._watching.get_all_handlers()}
    assert {"workload_event", "deployment_event", "service_event", "node_event", "profile_event"} <= watching
    activities = {h.id for h in registry._activities.get_all_handlers()}
    assert {"startup", "cleanup"} <= activities


def test_index_functions_project_small_values() -> None:
    node = demo_nodes()[0]
    meta = node["metadata"]
    out = handlers.nodes_idx(
        name=meta["name"], labels=meta["labels"], spec=node["spec"], status=node["status"]
    )
    (pool,) = out
    assert out[pool]["name"] == meta["name"]
    assert handlers.nodes_idx(name="x", labels={}, spec={}, status={}) is None
    assert handlers.workloads_idx(namespace="ns", name="w", meta={"generation": 3}) == {("ns", "w"): 3}
    body = {
        "metadata": {"name": "w-decode", "annotations": {"hetsched.io/spec-hash": "abc"}},
        "spec": {"replicas": 2},
    }
    child = handlers.deployments_idx(namespace="ns", labels={"hetsched.io/workload": "w"}, body=body)
    assert child[("ns", "w")].hash == "abc" and child[("ns", "w")].replicas == 2
    assert handlers.services_idx(namespace="ns", labels={}, body=body) is None


def test_quiet_filter_drops_watch_successes_only() -> None:
    f = handlers._QuietWatchHandlers()

    def record(msg: str) -> logging.LogRecord:
        return logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, msg, None, None)

    assert not f.filter(record("Handler 'node_event' succeeded."))
    assert f.filter(record("Handler 'workload-create' succeeded."))
    assert f.filter(record("Handler 'node_event' failed temporarily: boom"))


def test_pool_publisher_publishes_on_change_only() -> None:
    async def main() -> None:
        state = OperatorState()
        op = OperatorContext(OperatorSettings(), state, Metrics(state))
        op.planning_loop = PlanningLoop()
        op.pools_dirty = asyncio.Event()
        pub = PoolPublisher(op)
        projs = projections(demo_nodes())
        pub.publish(projs, {})
        first = op.planning_loop.pools
        assert first is not None and state.pools_observed.is_set()
        assert {v.pool.name for v in state.snapshot().pools} == {"a100", "cpu-amx", "h100", "l4", "t4"}
        pub.publish(projs, {})
        assert op.planning_loop.pools is first  # same fingerprint: nothing published
        pub.publish(projs, {"cheap": {"matchPool": "t4", "pricePerHour": 0.01}})
        assert op.planning_loop.pools is not first
        t4 = {v.pool.name: v for v in state.snapshot().pools}["t4"]
        assert t4.price_per_device_hour == 0.01

    asyncio.run(main())


def test_cli_registers_operator_and_crds() -> None:
    parser = build_parser()
    args = parser.parse_args(["operator", "run", "-n", "a", "-n", "b", "--port", "9000", "--policy", "joint"])
    assert args.namespace == ["a", "b"] and args.port == 9000 and args.policy == "joint"
    assert parser.parse_args(["crds", "--check"]).check
    with pytest.raises(SystemExit):
        parser.parse_args(["operator", "run", "-n", "a", "--all-namespaces"])
    assert parser.parse_args(["operator", "run"]).unschedulable_grace_seconds == 60.0
    grace = parser.parse_args(["operator", "run", "--unschedulable-grace-seconds", "5"])
    assert grace.unschedulable_grace_seconds == 5.0
    for bad in ("-1", "nan", "inf", "soon"):
        with pytest.raises(SystemExit):
            parser.parse_args(["operator", "run", "--unschedulable-grace-seconds", bad])
    assert _network(["default=25", "a/b=50"]) == {"default": 25.0, "a/b": 50.0}
    with pytest.raises(ValueError, match="network-gbps"):
        _network(["bogus"])
