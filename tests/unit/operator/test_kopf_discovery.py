"""A CRD that comes back counts as installed only once Kopf serves it again (``kopf_discovery``):
Kopf's own rescans on the CRD's events can all miss it while the API server's discovery lags."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from hetsched.operator import kopf_discovery
from hetsched.operator.api.metrics import Metrics
from hetsched.operator.api.state import OperatorState
from hetsched.operator.settings import WORKLOADS_CRD, OperatorContext, OperatorSettings
from kopf._cogs.structs.references import Resource

AW = Resource(group="hetsched.io", version="v1alpha1", plural="agentworkloads")


def context() -> OperatorContext:
    state = OperatorState()
    op = OperatorContext(OperatorSettings(), state, Metrics(state))
    op.kopf_insights = kopf_discovery.new_insights()
    op.kopf_settings = kopf.OperatorSettings()
    return op


def test_served_matches_plural_and_group() -> None:
    insights = kopf_discovery.new_insights()
    assert not kopf_discovery.served(insights, WORKLOADS_CRD)
    insights.watched_resources.add(AW)
    assert kopf_discovery.served(insights, WORKLOADS_CRD)
    assert not kopf_discovery.served(insights, "acceleratorprofiles.hetsched.io")


def test_a_crd_back_is_installed_only_once_kopf_serves_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf_discovery, "FIRST_RETRY_SECONDS", 0.01)
    scans: list[str] = []

    async def rescan(*, raw_event: Any, insights: Any, **_: Any) -> None:
        scans.append(raw_event["object"]["spec"]["group"])
        if len(scans) == 3:  # discovery lists the resource on the third scan
            insights.watched_resources.add(AW)

    monkeypatch.setattr(kopf_discovery.observation, "process_discovered_resource_event", rescan)

    async def main() -> None:
        op = context()
        op.crd_event(WORKLOADS_CRD, False)
        assert WORKLOADS_CRD in op.missing_crds
        op.crd_event(WORKLOADS_CRD, True)  # ADDED: not served yet
        op.crd_event(WORKLOADS_CRD, True)  # Established: still one rescan loop
        assert WORKLOADS_CRD in op.missing_crds and len(op.serving) == 1
        await asyncio.wait_for(asyncio.gather(*op.serving.values()), 5)
        assert scans == ["hetsched.io"] * 3
        assert WORKLOADS_CRD not in op.missing_crds and not op.serving

    asyncio.run(main())


def test_a_crd_deleted_again_stops_the_rescans(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kopf_discovery, "FIRST_RETRY_SECONDS", 0.01)

    async def never(**_: Any) -> None:
        return None

    monkeypatch.setattr(kopf_discovery.observation, "process_discovered_resource_event", never)

    async def main() -> None:
        op = context()
        op.crd_event(WORKLOADS_CRD, False)
        op.crd_event(WORKLOADS_CRD, True)
        (task,) = op.serving.values()
        await asyncio.sleep(0.05)
        op.crd_event(WORKLOADS_CRD, False)
        with pytest.raises(asyncio.CancelledError):
            await task
        assert WORKLOADS_CRD in op.missing_crds and not op.serving

    asyncio.run(main())
