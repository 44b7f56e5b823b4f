"""Serve: the HTTP API (``/v1/pools``, ``/v1/workloads``, ``/v1/estimate``, ``/v1/plan``, probes) and
the Prometheus ``/metrics``, in their own thread, from snapshots the operator publishes.

* :mod:`.app` — the FastAPI application and readiness;
* :mod:`.state` — the published snapshot (pools, workloads, SLOs);
* :mod:`.whatif` — estimates and what-if plans against the live pools;
* :mod:`.metrics` — the Prometheus collectors; :mod:`.server` — the uvicorn thread.
"""
