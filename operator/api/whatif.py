"""The HTTP API's planner backend: estimates and what-if plans against the live pools.

Runs in the HTTP server's thread (FastAPI runs these sync endpoints in its thread pool); it only
reads immutable snapshots the operator publishes and never talks to the API server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from hetsched.operator.api.app import EstimateRequest, PlanInputError, validation_detail
from hetsched.operator.api.state import OperatorState
from hetsched.operator.planning.plans import what_if
from hetsched.operator.pools.build import PoolsInput
from hetsched.scheduler import catalog
from hetsched.scheduler.estimator.analysis import Scenario, analyze
from hetsched.scheduler.placement.request import WorkloadRequest, precisions_from_spec, resolve_workload
from hetsched.scheduler.spec import AgentWorkload
from pydantic import ValidationError

MAX_WHAT_IF = 1000


class WhatIfBackend:
    def __init__(self, state: OperatorState, pools: Callable[[], PoolsInput | None]) -> None:
        self.state = state
        self.pools = pools

    def _pools(self) -> PoolsInput:
        p = self.pools()
        if p is None:
            raise LookupError("the operator has not observed the node pools yet")
        return p

    def estimate(self, request: EstimateRequest) -> dict[str, Any]:
        if (request.hardware is None) == (request.pool is None):
            raise ValueError("set exactly one of hardware (a catalog key) and pool (a live pool)")
        if request.pool is not None:
            pools = self._pools()
            try:
                hw = pools.cluster.pool(request.pool).hardware
            except KeyError:
                known = ", ".join(p.name for p in pools.cluster.pools) or "none"
                raise LookupError(f"no usable pool {request.pool!r} (pools: {known})") from None
        else:
            assert request.hardware is not None
            found = catalog.get_hardware(request.hardware)
            if found is None:
                raise LookupError(f"unknown hardware {request.hardware!r}")
            hw = found
        try:
            model = catalog.get_model(request.model)
        except (KeyError, LookupError) as exc:
            raise LookupError(str(exc)) from None
        agent = catalog.apply_overrides(catalog.get_agent(request.agent), request.overrides.model_dump())
        precisions = precisions_from_spec(model, request.precision)
        scenario = Scenario.from_agent(agent, batch=request.batch, context=request.max_context_tokens)
        result = analyze(model, hw, scenario, precisions=precisions, tp=request.tp)
        doc: dict[str, Any] = result.to_dict()
        doc["pool"] = request.pool
        return doc

    def plan(self, manifests: list[dict[str, Any]], include_existing: bool) -> dict[str, Any]:
        requests: list[WorkloadRequest] = []
        problems: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, doc in enumerate(manifests[:MAX_WHAT_IF]):
            try:
                wl = AgentWorkload.model_validate(doc)
            except ValidationError as exc:
                problems.extend(validation_detail(list(exc.errors()), ("workloads", i)))
                continue
            try:
                req = resolve_workload(wl.spec, name=wl.metadata.name, namespace=wl.metadata.namespace)
            except ValueError as exc:
                problems.append(
                    {"path": f"workloads[{i}].spec", "loc": ["workloads", i, "spec"], "msg": str(exc)}
                )
                continue
            if req.key in seen:
                problems.append(
                    {
                        "path": f"workloads[{i}].metadata",
                        "loc": ["workloads", i, "metadata"],
                        "msg": f"{req.key} twice",
                    }
                )
                continue
            seen.add(req.key)
            requests.append(req)
        if problems:
            raise PlanInputError(problems)
        used: Mapping[str, int] = self.state.snapshot().allocated() if include_existing else {}
        out: dict[str, Any] = what_if(requests, self._pools(), used)
        out["includeExisting"] = include_existing
        out["devicesInUse"] = dict(used)
        return out
