"""Kopf serving our CRDs again after they were deleted and re-created.

Kopf's resource observer rescans the API server's discovery (``/apis/<group>``) on every event of a
CustomResourceDefinition, and serves (watches) a resource only if that scan lists it. A re-created
CRD's last event is its ``Established`` condition, but the API server's discovery document is
updated asynchronously and can lag behind it: on a loaded machine every scan of the CRD's three
events still missed the resource ("Unresolved resources cannot be served"), no further CRD event
came, and the operator never watched AgentWorkloads again while reporting itself ready.

So when one of our CRDs comes back, :func:`serve_again` repeats Kopf's own rescan with a back-off
until Kopf serves the resource; only then is the CRD counted as installed (``/readyz``, the intake).
This uses Kopf's internal observer (``kopf._core.reactor.observation``): there is no public API for
a rescan.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from kopf._cogs.structs.references import Insights
from kopf._core.reactor import observation

log = logging.getLogger("hetsched.operator")

FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 10.0


def new_insights() -> Insights:
    """What Kopf serves; handed to ``kopf.run`` so that :func:`serve_again` can read and revise it."""
    return Insights()


def served(insights: Insights, crd: str) -> bool:
    """Whether Kopf watches the resource of CRD ``crd`` (``<plural>.<group>``)."""
    plural, _, group = crd.partition(".")
    return any(r.group == group and r.plural == plural for r in insights.watched_resources)


async def serve_again(insights: Insights, settings: kopf.OperatorSettings, crd: str) -> None:
    """Rescan discovery (as Kopf does on a CRD event) until Kopf serves ``crd``; retried with a
    doubling back-off (0.5 s up to 10 s) for as long as it takes (cancelled if the CRD goes again)."""
    group = crd.partition(".")[2]
    event: Any = {"type": "MODIFIED", "object": {"spec": {"group": group}}}
    delay = FIRST_RETRY_SECONDS
    attempts = 0
    while not served(insights, crd):
        attempts += 1
        try:
            await observation.process_discovered_resource_event(
                raw_event=event, settings=settings, registry=kopf.get_default_registry(), insights=insights
            )
        except Exception as exc:  # the API server may be briefly unavailable: retried
            log.warning("rescanning the API group %s failed: %s", group, exc)
        if served(insights, crd):
            break
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY_SECONDS)
    if attempts:
        log.info("CustomResourceDefinition %s is served again (%d discovery rescan(s))", crd, attempts)
