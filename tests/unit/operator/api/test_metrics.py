"""The operator's /metrics: ridge points, SLOs and conditions per workload, computed at scrape time
from the state (status and planned spec), bounded labels, series gone with the workload, and
Prometheus naming (`promtool check metrics` when the binary is installed)."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from typing import Any

import pytest
from hetsched.operator.api.metrics import CONDITION_STATUSES, CONDITIONS, Metrics, condition_statuses
from hetsched.operator.api.state import OperatorState, Slo
from hetsched.operator.planning.loop import PlanningLoop
from hetsched.operator.planning.plans import plan_workloads
from hetsched.operator.reconcile.reconciler import Reconciler
from hetsched.operator.reconcile.status import comparable, placed_status, problem_status, unplaced_status
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from support.builders import CHAT, CODER, HUGE, FakeApi, pools_input, registration

NOW = "2026-01-01T00:00:00Z"
SPECS = {"chat": CHAT, "coder": CODER, "huge": HUGE}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _state() -> OperatorState:
    """Demo pools; chat and coder placed (Ready), huge infeasible; each with its spec's SLO."""
    pools = pools_input()
    state = OperatorState()
    state.set_pools(pools.views, pools.fingerprint)
    plans = plan_workloads([registration(n, spec) for n, spec in SPECS.items()], pools)
    for key, plan in plans.items():
        if plan.placed:
            s = placed_status(plan, 1, None, (True, "ok"), namespace_name=key, now=NOW)
        else:
            s = unplaced_status(plan, 1, None, now=NOW)
        state.set_workload(*key, comparable(s), Slo.from_spec(SPECS[key[1]]))
    return state


def _text(state: OperatorState) -> str:
    return generate_latest(Metrics(state).registry).decode()


def _samples(state: OperatorState) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(_text(state)):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _of(samples: Samples, metric: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (m, labels), v in samples.items() if m == metric}


def _labels(**kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(kw.items()))


def test_ridge_point_per_phase_equals_the_status() -> None:
    state = _state()
    ridge = _of(_samples(state), "hetsched_phase_ridge_point_flops_per_byte")
    expected = {}
    for (ns, name), status in state.snapshot().workloads.items():
        for phase in ("prefill", "decode"):
            ph = status.get(phase)
            if ph:
                assert ph["ridgePoint"] > 0
                expected[_labels(namespace=ns, name=name, phase=phase, pool=ph["pool"])] = ph["ridgePoint"]
    assert ridge == expected
    assert {dict(k)["name"] for k in ridge} == {"chat", "coder"}  # huge has no placed phase


def test_slo_series_equal_the_spec() -> None:
    samples = _samples(_state())
    for metric, field in (
        ("hetsched_workload_slo_ttft_seconds", "ttftSeconds"),
        ("hetsched_workload_slo_tpot_seconds", "tpotSeconds"),
    ):
        # Also for the infeasible workload: its SLO is what it could not be placed for.
        assert _of(samples, metric) == {
            _labels(namespace="default", name=name): float(spec["slo"][field]) for name, spec in SPECS.items()
        }


def test_slo_from_spec() -> None:
    assert Slo.from_spec({"slo": {"ttftSeconds": 2, "tpotSeconds": 0.05}}) == Slo(2.0, 0.05)
    assert Slo.from_spec({}) is None
    assert Slo.from_spec({"slo": {"ttftSeconds": 2}}) is None
    assert Slo.from_spec({"slo": {"ttftSeconds": "x", "tpotSeconds": 1}}) is None


def test_one_condition_series_per_condition_with_the_current_status() -> None:
    state = _state()
    cond = _of(_samples(state), "hetsched_workload_condition")
    assert set(cond.values()) == {1.0}
    for name in SPECS:
        mine = {dict(k)["condition"]: dict(k)["status"] for k in cond if dict(k)["name"] == name}
        assert len([k for k in cond if dict(k)["name"] == name]) == len(CONDITIONS) == len(mine)
        status = state.snapshot().workloads[("default", name)]
        assert mine == {c["type"]: c["status"] for c in status["conditions"]}
    assert cond[_labels(namespace="default", name="chat", condition="Degraded", status="False")] == 1
    assert cond[_labels(namespace="default", name="chat", condition="Ready", status="True")] == 1
    assert cond[_labels(namespace="default", name="huge", condition="Degraded", status="True")] == 1
    assert cond[_labels(namespace="default", name="huge", condition="Placed", status="False")] == 1
    assert cond[_labels(namespace="default", name="huge", condition="Estimated", status="True")] == 1


def test_missing_or_odd_conditions_read_unknown() -> None:
    status: dict[str, Any] = {
        "conditions": [
            {"type": "Degraded", "status": "True"},
            {"type": "Ready", "status": "Maybe"},  # not a condition status
            {"type": "Accepted", "status": "True"},  # not an AgentWorkload condition
        ]
    }
    assert condition_statuses(status) == [
        ("Estimated", "Unknown"),
        ("Placed", "Unknown"),
        ("Ready", "Unknown"),
        ("Degraded", "True"),
    ]
    assert condition_statuses({}) == [(c, "Unknown") for c in CONDITIONS]


def test_condition_labels_are_bounded() -> None:
    cond = _of(_samples(_state()), "hetsched_workload_condition")
    for labels in cond:
        d = dict(labels)
        assert set(d) == {"namespace", "name", "condition", "status"}
        assert d["condition"] in CONDITIONS and d["status"] in CONDITION_STATUSES


def test_status_changes_move_the_condition_series() -> None:
    """The Degraded=True series of a workload that becomes placed is gone at the next scrape."""
    state = _state()
    pools = pools_input()
    (plan,) = plan_workloads([registration("huge", CHAT)], pools).values()  # a feasible spec
    s = placed_status(plan, 2, None, (False, "rolling out"), namespace_name=("default", "huge"))
    state.set_workload("default", "huge", comparable(s), Slo.from_spec(CHAT))
    cond = _of(_samples(state), "hetsched_workload_condition")
    huge = {(dict(k)["condition"], dict(k)["status"]) for k in cond if dict(k)["name"] == "huge"}
    assert huge == {("Estimated", "True"), ("Placed", "True"), ("Ready", "False"), ("Degraded", "False")}


def test_deleted_workload_series_disappear() -> None:
    state = _state()
    text = _text(state)
    for metric in (
        "hetsched_phase_ridge_point_flops_per_byte",
        "hetsched_workload_slo_ttft_seconds",
        "hetsched_workload_slo_tpot_seconds",
        "hetsched_workload_condition",
    ):
        assert re.search(rf'^{metric}{{[^}}]*name="chat"', text, re.M), metric
    state.drop_workload("default", "chat")
    text = _text(state)
    assert 'name="chat"' not in text and 'name="coder"' in text
    assert ("default", "chat") not in state.snapshot().slos


def test_a_workload_without_a_planned_spec_has_no_slo() -> None:
    """Invalid specs (set without an SLO) keep their conditions but report no SLO."""
    state = _state()
    problem = problem_status(1, None, "InvalidSpec", "spec.model: unknown model 'x'", now=NOW)
    state.set_workload("default", "chat", comparable(problem))
    samples = _samples(state)
    assert _labels(namespace="default", name="chat") not in _of(samples, "hetsched_workload_slo_ttft_seconds")
    cond = _of(samples, "hetsched_workload_condition")
    assert cond[_labels(namespace="default", name="chat", condition="Degraded", status="True")] == 1
    assert cond[_labels(namespace="default", name="chat", condition="Estimated", status="False")] == 1
    assert not any(
        dict(k)["name"] == "chat" for k in _of(samples, "hetsched_phase_ridge_point_flops_per_byte")
    )


def test_the_reconciler_exports_the_planned_slo_and_drops_it_on_a_problem() -> None:
    api, state = FakeApi(), OperatorState()
    planning_loop = PlanningLoop(debounce=0.01, max_delay=0.2, startup_grace=5)
    reconciler = Reconciler(api, state, Metrics(state), planning_loop, lambda k: {}, api.post_event)
    key = ("default", "chat")

    async def main() -> None:
        planning_loop.start()
        planning_loop.set_pools(pools_input())
        planning_loop.register(registration("chat", CHAT))
        await planning_loop.plan_for(key, 1, timeout=30)
        assert await reconciler.converge(key) == "placed"
        assert state.snapshot().slos[key] == Slo(1.0, 0.05)
        await reconciler.report_problem(key, 2, "uid-chat", "InvalidSpec", "spec.model: unknown model 'x'")
        assert key not in state.snapshot().slos and key in state.snapshot().workloads
        reconciler.forget(key)
        assert key not in state.snapshot().workloads
        await planning_loop.stop()

    asyncio.run(main())


def test_gauge_names_follow_prometheus_conventions() -> None:
    text = _text(_state())
    types = dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    for name, kind in types.items():
        assert re.fullmatch(r"hetsched_[a-z0-9_]+", name), name
        if kind == "gauge":
            assert not name.endswith(("_total", "_count", "_sum", "_bucket")), name
    for name in (
        "hetsched_phase_ridge_point_flops_per_byte",
        "hetsched_workload_slo_ttft_seconds",
        "hetsched_workload_slo_tpot_seconds",
        "hetsched_workload_condition",
    ):
        assert types[name] == "gauge"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (Debian `prometheus`)")
def test_promtool_check_metrics_is_clean() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None
    result = subprocess.run(
        [promtool, "check", "metrics"], input=_text(_state()), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (result.stdout + result.stderr).strip() == ""
