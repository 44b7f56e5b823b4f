"""The operator's HTTP API (FastAPI), served beside Kopf: health, pools, workloads, what-if
estimates and plans, and ``/metrics`` in the same app.

Nothing here writes to the cluster: ``POST /v1/plan`` plans against the live pools the operator
last observed (optionally net of the devices the placed workloads use) and returns the result.
Request bodies are capped (413 above the limit); validation errors are 422 with one entry per
problem naming the field path (``workloads[0].spec.slo.ttftSeconds``). What-if plans (a MILP, up to
seconds of CPU) run in a worker thread, at most ``max_concurrent_plans`` at a time: beyond that the
answer is 429 with ``Retry-After``, never a queue.

``/readyz`` is 200 only once the operator knows the cluster: Kopf started, the pools were observed,
Kopf's indices hold every watched object (:class:`Readiness`), and, with leader election, this
replica leads. Otherwise 503 with the reason in the body.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Protocol

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from hetsched.operator.api.metrics import Metrics
from hetsched.operator.api.state import OperatorState
from hetsched.scheduler.spec import AgentOverrides, PrecisionSpec
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

DEFAULT_MAX_BODY = 1 << 20  # 1 MiB
DEFAULT_MAX_CONCURRENT_PLANS = 2

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _Body(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class EstimateRequest(_Body):
    """OI, CF, regime and timing of both phases of one model on one hardware entry."""

    model: str = Field(min_length=1, max_length=200, description="catalog name or Hugging Face id")
    hardware: str | None = Field(default=None, max_length=253, description="hardware catalog key")
    pool: str | None = Field(default=None, max_length=253, description="a live pool: use its hardware")
    agent: str = Field(default="chatbot", min_length=1, max_length=63, description="agent profile")
    overrides: AgentOverrides = Field(default_factory=AgentOverrides)
    max_context_tokens: int | None = Field(default=None, ge=1, le=10_000_000)
    tp: int = Field(default=1, ge=1, le=1024)
    batch: int = Field(default=1, ge=1, le=65536)
    precision: PrecisionSpec = Field(default_factory=PrecisionSpec)


class PlanRequest(_Body):
    """What-if: place these AgentWorkloads (whole manifests) on the live pools."""

    workloads: list[dict[str, Any]] = Field(min_length=1, max_length=1000)
    include_existing: bool = Field(
        default=True, description="count the devices of the workloads already placed as used"
    )


class Backend(Protocol):
    """What the API needs from the planner (the operator's, or a fake in tests)."""

    def estimate(self, request: EstimateRequest) -> dict[str, Any]: ...

    def plan(self, manifests: list[dict[str, Any]], include_existing: bool) -> dict[str, Any]: ...


class Readiness:
    """What ``/readyz`` needs beyond the state's flags, set from the operator's threads.

    ``indexed``: Kopf's indices hold every watched object (Kopf calls no handler before they are
    complete, so the first handler call sets it), or there is nothing to index (namespaced and no
    namespace matches: Kopf then starts no watch at all). ``leading``: this replica holds the
    Lease (only consulted with ``leader_election``).
    """

    def __init__(self, *, leader_election: bool = False, lease: str = "") -> None:
        self.created = time.monotonic()
        self.indexed = threading.Event()
        self.indexed_after: float | None = None  # seconds from creation to ``indexed``
        self.indexed_how = ""
        self.leader_election = leader_election
        self.lease = lease
        self.leading = threading.Event()
        self.missing_crds: frozenset[str] = frozenset()  # set by the operator's thread

    def mark_indexed(self, how: str) -> bool:
        """Record that the indices are complete; True the first time."""
        if self.indexed.is_set():
            return False
        self.indexed_after = time.monotonic() - self.created
        self.indexed_how = how
        self.indexed.set()
        return True


class PlanLimiter:
    """At most ``limit`` what-if plans at a time, counted until the computation itself ends (a client
    that hangs up does not free its slot early). ``retry_after``: the last plan's duration, rounded
    up, 1–60 s."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"max concurrent plans must be >= 1, got {limit}")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self.last_seconds = 1.0
        self.rejected = 0

    def try_acquire(self) -> bool:
        if self._slots.acquire(blocking=False):
            return True
        self.rejected += 1
        return False

    def release(self, seconds: float) -> None:
        self.last_seconds = seconds
        self._slots.release()

    def retry_after(self) -> int:
        return max(1, min(60, math.ceil(self.last_seconds)))


class BodyLimit:
    """ASGI middleware: 413 when a request body exceeds ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers") or []:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    await self._reject(send)
                    return
        seen = 0
        rejected = False

        async def limited_receive() -> Message:
            # Over the limit: answer 413 ourselves and tell the app the client went away.
            nonlocal seen, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    rejected = True
                    await self._reject(send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not rejected:
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not rejected:
                raise

    async def _reject(self, send: Send) -> None:
        body = (b'{"detail":"request body larger than %d bytes"}') % self.limit
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def field_path(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "workloads", 0, "spec", "slo")`` → ``workloads[0].spec.slo``."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out or "(body)"


def validation_detail(errors: list[Any], prefix: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    out = []
    for err in errors:
        loc = (*prefix, *tuple(err.get("loc", ())))
        out.append(
            {
                "path": field_path(loc),
                "loc": list(loc),
                "msg": err.get("msg", ""),
                "type": err.get("type", ""),
            }
        )
    return out


def create_app(
    state: OperatorState,
    metrics: Metrics,
    backend: Backend | None,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    max_concurrent_plans: int = DEFAULT_MAX_CONCURRENT_PLANS,
    readiness: Readiness | None = None,
) -> FastAPI:
    """The API. ``readiness`` None: ready on the state's flags alone (tests without an operator)."""
    limiter = PlanLimiter(max_concurrent_plans)
    app = FastAPI(
        title="hetsched operator",
        version="v1alpha1",
        description="Placement of AI-agent LLM inference phases on heterogeneous node pools by "
        "operational intensity and capacity footprint. Read-only: nothing here writes to the cluster.",
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": validation_detail(list(exc.errors()))})

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """Liveness: the process serves HTTP."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready; `reason` says why"}})
    def readyz() -> JSONResponse:
        """Readiness: this replica leads (with leader election), Kopf has started, the node pools
        were observed and Kopf's indices hold the whole cluster. 503 with a reason otherwise."""
        started, observed = state.started.is_set(), state.pools_observed.is_set()
        indexed = readiness is None or readiness.indexed.is_set()
        leader: bool | None = None
        lease = ""
        if readiness is not None and readiness.leader_election:
            leader, lease = readiness.leading.is_set(), readiness.lease
        if leader is False:
            reason = f"standby: not the leader (Lease {lease or '?'})"
        elif not started:
            reason = "Kopf has not started"
        elif not observed:
            reason = "the node pools have not been observed yet"
        elif not indexed:
            reason = "indexing the cluster: Kopf has not listed every watched object yet"
        elif readiness is not None and readiness.missing_crds:
            missing = ", ".join(sorted(readiness.missing_crds))
            reason = f"CustomResourceDefinition {missing} not installed (or being deleted)"
        else:
            reason = ""
        body: dict[str, Any] = {
            "ready": not reason,
            "started": started,
            "poolsObserved": observed,
            "indexed": indexed,
        }
        if leader is not None:
            body["leader"] = leader
        if readiness is not None and readiness.indexed_after is not None:
            body["indexedAfterSeconds"] = round(readiness.indexed_after, 3)
            body["indexedBy"] = readiness.indexed_how
        if reason:
            body["reason"] = reason
        return JSONResponse(status_code=503 if reason else 200, content=body)

    @app.get("/v1/pools", tags=["pools"])
    def pools() -> dict[str, Any]:
        """The live pools: nodes, devices (total, allocated, free), hardware, price."""
        snap = state.snapshot()
        used = snap.allocated()
        return {
            "fingerprint": snap.pools_fingerprint,
            "pools": [v.to_dict(used.get(v.pool.name, 0)) for v in snap.pools],
        }

    @app.get("/v1/workloads", tags=["workloads"])
    def workloads(namespace: str | None = Query(default=None, max_length=253)) -> dict[str, Any]:
        """Every AgentWorkload the operator reconciled, with the status it last wrote."""
        snap = state.snapshot()
        items = [
            {"namespace": ns, "name": name, "status": dict(status)}
            for (ns, name), status in sorted(snap.workloads.items())
            if namespace is None or ns == namespace
        ]
        return {"workloads": items}

    @app.post("/v1/estimate", tags=["what-if"])
    def estimate(request: EstimateRequest) -> dict[str, Any]:
        """OI, CF, regime, TTFT/TPOT of prefill and decode on one hardware entry or live pool."""
        if backend is None:
            raise HTTPException(status_code=503, detail="planner not available")
        try:
            return backend.estimate(request)
        except LookupError as exc:
            raise HTTPException(status_code=404, detail=str(exc).strip("'\"")) from None
        except ValidationError as exc:
            return _unprocessable(validation_detail(list(exc.errors())))  # type: ignore[return-value]
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=[{"path": "(body)", "msg": str(exc)}]) from None

    @app.post(
        "/v1/plan",
        tags=["what-if"],
        responses={429: {"description": "as many plans as allowed are running; see Retry-After"}},
    )
    async def plan(request: PlanRequest) -> dict[str, Any]:
        """Place the given AgentWorkloads on the live pools (what-if; the cluster is not changed).

        At most ``--max-concurrent-plans`` run at a time (in worker threads); beyond that: 429."""
        if backend is None:
            raise HTTPException(status_code=503, detail="planner not available")
        if not limiter.try_acquire():
            raise HTTPException(
                status_code=429,
                detail=f"{limiter.limit} what-if plan(s) already running; retry later",
                headers={"Retry-After": str(limiter.retry_after())},
            )

        def run() -> dict[str, Any]:
            t0 = time.perf_counter()
            try:
                return backend.plan(request.workloads, request.include_existing)
            finally:
                limiter.release(time.perf_counter() - t0)  # in the thread: when the work ends

        try:
            return await asyncio.to_thread(run)
        except PlanInputError as exc:
            return _unprocessable(exc.detail)  # type: ignore[return-value]
        except ValueError as exc:
            raise HTTPException(status_code=422, detail=[{"path": "workloads", "msg": str(exc)}]) from None

    @app.get("/metrics", tags=["metrics"], response_class=Response)
    def prometheus_metrics() -> Response:
        """Prometheus text format: per workload and phase OI, CF, regime, predictions; per pool devices."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.add_middleware(BodyLimit, limit=max_body)
    app.state.plan_limiter = limiter
    return app


class PlanInputError(ValueError):
    """Invalid workloads in a what-if request; ``detail`` lists field paths and messages."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{d['path']}: {d['msg']}" for d in detail))
        self.detail = detail


def _unprocessable(detail: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": detail})
