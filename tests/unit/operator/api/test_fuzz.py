"""The HTTP API fuzzed from its own OpenAPI document (schemathesis, in process over ASGI): whatever
the generated request — valid, edge-case or schema-violating bodies, odd query strings — the answer
is never a server error, and request bodies over the limit get 413."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
import schemathesis
from hetsched.operator.api.app import create_app
from hetsched.operator.api.metrics import Metrics
from hetsched.operator.api.state import OperatorState
from hetsched.operator.api.whatif import WhatIfBackend
from hetsched.operator.planning.plans import plan_workloads
from hetsched.operator.reconcile.status import comparable, placed_status, unplaced_status
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from support.builders import CHAT, CODER, HUGE, pools_input, registration

MAX_BODY = 64 * 1024


def _app() -> Any:
    pools = pools_input()
    state = OperatorState()
    state.set_pools(pools.views, pools.fingerprint)
    state.started.set()
    regs = [registration("chat", CHAT), registration("coder", CODER), registration("huge", HUGE)]
    for key, plan in plan_workloads(regs, pools).items():
        if plan.placed:
            status = placed_status(plan, 1, None, (True, "ok"), namespace_name=key)
        else:
            status = unplaced_status(plan, 1, None)
        state.set_workload(*key, comparable(status))
    return create_app(state, Metrics(state), WhatIfBackend(state, lambda: pools), max_body=MAX_BODY)


APP = _app()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Valid requests and schema-violating ones (wrong types, missing fields, out-of-range numbers).
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])


@schema.parametrize()
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any) -> None:
    response = case.call()
    assert response.status_code < 500, (
        f"{case.method} {case.path}: {response.status_code} {response.text[:500]}"
    )
    case.validate_response(response, checks=[not_a_server_error])


def _post(path: str, **kw: Any) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=APP)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.post(path, **kw)

    return asyncio.run(go())


@pytest.mark.parametrize("path", ["/v1/estimate", "/v1/plan"])
def test_oversized_bodies_get_413(path: str) -> None:
    big = b'{"model": "' + b"x" * (MAX_BODY + 10) + b'"}'
    assert _post(path, content=big, headers={"content-type": "application/json"}).status_code == 413

    async def chunks() -> Any:  # no Content-Length: the limit applies to what is streamed
        for _ in range(MAX_BODY // 4096 + 2):
            yield b" " * 4096

    assert _post(path, content=chunks(), headers={"content-type": "application/json"}).status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"null",
        b"[]",
        b'{"workloads": null}',
        b'{"workloads": [null]}',
        b'{"workloads": [{"spec": []}]}',
        b'{"workloads": [{"metadata": {"name": "x"}, "spec": {"model": {"name": 5}}}]}',
        b'{"model": "llama-3.1-8b", "hardware": "h100-sxm", "tp": 1e308}',
        b'{"model": "llama-3.1-8b", "hardware": "h100-sxm", "batch": NaN}',
        b'{"model": "llama-3.1-8b", "pool": "h100", "hardware": "h100-sxm"}',
        b"\xff\xfe\x00",
        b'{"model": "' + b"\\ud800" + b'"}',
        b"{" * 5000,
    ],
)
@pytest.mark.parametrize("path", ["/v1/estimate", "/v1/plan"])
def test_hostile_bodies_are_client_errors(path: str, body: bytes) -> None:
    response = _post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
