"""``hetsched operator run`` — Kopf (main thread) plus the HTTP API and /metrics (own thread) — and
``hetsched crds``, which writes the CustomResourceDefinitions generated from the spec models.

The command-line defaults of ``operator run`` are :class:`~hetsched.operator.settings.OperatorSettings`'.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hetsched.operator.settings import OperatorSettings
from hetsched.scheduler.pools import network_bandwidths

DEFAULTS = OperatorSettings()


def _network(values: list[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in values:
        key, sep, value = item.partition("=")
        try:
            gbps = float(value)
        except ValueError:
            gbps = -1.0
        if not sep or not key or gbps <= 0:
            raise ValueError(f"--network-gbps {item!r}: expected default=<GB/s> or <pool>/<pool>=<GB/s>")
        out[key] = gbps
    try:  # the keys: default or <pool>/<pool> (the pools themselves are seen later)
        network_bandwidths(out)
    except ValueError as exc:
        raise ValueError(f"--network-gbps: {exc}") from None
    return out


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


DEFAULT_OUT = Path(__file__).resolve().parents[1] / "crds"


def cmd_crds(args: argparse.Namespace) -> int:
    from hetsched.operator import crdgen

    out = Path(args.out)
    if args.check:
        stale = crdgen.drifted(out)
        if stale:
            print(
                f"hetsched crds: {', '.join(stale)} in {out} differ from scheduler/spec.py; run `make crds`",
                file=sys.stderr,
            )
            return 1
        print(f"{out}: CRDs up to date")
        return 0
    if args.stdout:
        sys.stdout.write("---\n".join(crdgen.rendered_crds().values()))
        return 0
    for path in crdgen.write_crds(out):
        print(path)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    # Kopf's client reads $KUBECONFIG when it is imported: set it before any import of kopf.
    if args.kubeconfig:
        os.environ["KUBECONFIG"] = args.kubeconfig

    import kopf
    from hetsched.operator import handlers  # noqa: F401  (importing it registers the handlers)
    from hetsched.operator.api.app import Readiness, create_app
    from hetsched.operator.api.metrics import Metrics
    from hetsched.operator.api.server import HttpLimits, HttpServer, default_hosts
    from hetsched.operator.api.state import OperatorState
    from hetsched.operator.api.whatif import WhatIfBackend
    from hetsched.operator.settings import OperatorContext

    namespaces = tuple(args.namespace or ())
    settings = OperatorSettings(
        clusterwide=not namespaces,
        namespaces=namespaces,
        policy=args.policy,
        network_gbps=_network(args.network_gbps or []),
        kubeconfig=args.kubeconfig,
        resync_seconds=args.resync_seconds,
        debounce_seconds=args.debounce_seconds,
        workers=args.workers,
        solver=args.solver,
        not_ready_grace_seconds=args.not_ready_grace_seconds,
        unschedulable_grace_seconds=args.unschedulable_grace_seconds,
        startup_grace_seconds=args.startup_grace_seconds,
        inference_pool_epp=args.inference_pool_epp,
    )
    lease = None
    if args.leader_elect:  # checked before anything starts
        from hetsched.operator.leader import LeaseConfig, default_namespace

        lease = LeaseConfig(
            namespace=args.leader_elect_namespace or default_namespace(),
            name=args.leader_elect_name,
            identity=args.leader_elect_identity or "",
            lease_duration=args.leader_elect_lease_duration,
            renew_deadline=args.leader_elect_renew_deadline,
            retry_period=args.leader_elect_retry_period,
        )
    state = OperatorState()
    metrics = Metrics(state)
    readiness = Readiness(
        leader_election=lease is not None,
        lease="" if lease is None else f"{lease.namespace}/{lease.name}",
    )
    op = OperatorContext(settings=settings, state=state, metrics=metrics, readiness=readiness)
    backend = WhatIfBackend(state, op.pools)
    app = create_app(
        state,
        metrics,
        backend,
        max_body=args.max_body_bytes,
        max_concurrent_plans=args.max_concurrent_plans,
        readiness=readiness,
    )
    limits = HttpLimits(
        read_timeout=args.http_read_timeout,
        idle_timeout=args.http_idle_timeout,
        max_connections=args.http_max_connections,
    )
    server = HttpServer(app, args.host or default_hosts(), args.port, limits)
    kopf.configure(verbose=args.verbose, debug=args.debug)
    logging.getLogger("hetsched").setLevel(logging.DEBUG if args.debug else logging.INFO)
    server.start()
    print(
        f"hetsched operator: HTTP API on {', '.join(server.urls())} (/metrics, /v1/pools, /v1/workloads, /docs)",
        file=sys.stderr,
        flush=True,
    )
    elector = None
    if lease is not None:
        from hetsched.operator.leader import LeaderElector

        elector = LeaderElector(lease, args.kubeconfig)
        readiness.leading = elector.leading  # /readyz: not ready the moment the Lease is lost or released
        elector.start()
        print(
            f"hetsched operator: {lease.identity} waiting to lead (Lease {lease.namespace}/{lease.name})",
            file=sys.stderr,
            flush=True,
        )
        try:
            if not elector.wait_leading():
                server.stop()
                return 1
        except KeyboardInterrupt:
            elector.stop(release=False)
            server.stop()
            return 0
    from hetsched.operator.kopf_discovery import new_insights

    op.kopf_insights = new_insights()
    try:
        kopf.run(
            clusterwide=settings.clusterwide,
            namespaces=list(namespaces),
            standalone=True,
            memo=kopf.Memo(op=op),
            insights=op.kopf_insights,
        )
    finally:
        server.stop()  # not ready any more before the Lease goes to a standby
        if elector is not None:
            elector.stop(release=True)
    return 0


def register(subparsers: Any) -> None:
    _register_crds(subparsers)
    _register_operator(subparsers)


def _register_crds(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "crds",
        help="generate the CRDs (AgentWorkload, AcceleratorProfile) from the spec models",
        description="Write crds/*.yaml from hetsched/scheduler/spec.py (structural OpenAPI v3 with CEL rules).",
    )
    p.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default: the repo's crds/)")
    p.add_argument("--check", action="store_true", help="exit 1 if the files there differ from the models")
    p.add_argument("--stdout", action="store_true", help="print the CRDs instead of writing files")
    p.set_defaults(func=cmd_crds)


def _register_operator(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "operator", help="run the Kubernetes operator", description="The hetsched operator."
    )
    sub = p.add_subparsers(dest="operator_command", metavar="COMMAND", required=True)
    run = sub.add_parser(
        "run",
        help="run Kopf and the HTTP API (/metrics, /v1/*) against $KUBECONFIG",
        description="Watch AgentWorkloads, AcceleratorProfiles and Nodes; place workloads on the node pools "
        "and converge their Deployments and Services. Kubeconfig: --kubeconfig, $KUBECONFIG or in-cluster.",
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("-n", "--namespace", action="append", help="watch this namespace (repeatable)")
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch all namespaces (default)")
    run.add_argument(
        "--port", type=int, default=int(os.environ.get("HETSCHED_PORT", "8080")), help="HTTP port"
    )
    run.add_argument(
        "--host",
        action="append",
        help="HTTP bind address (repeatable; default: $POD_IP when set, else 127.0.0.1 — "
        "0.0.0.0 serves every interface: see docs/security.md for who may reach the API)",
    )
    run.add_argument(
        "--http-read-timeout",
        type=_positive_seconds,
        default=10.0,
        help="seconds a client has to send a request's headers and body (default 10)",
    )
    run.add_argument(
        "--http-idle-timeout",
        type=_positive_seconds,
        default=5.0,
        help="seconds a kept-alive connection may wait for its next request (default 5)",
    )
    run.add_argument(
        "--http-max-connections",
        type=_positive_int,
        default=100,
        help="open HTTP connections at most; beyond, the one waiting longest for its request is "
        "closed (default 100)",
    )
    run.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")
    run.add_argument(
        "--policy",
        choices=("stable", "joint"),
        default=DEFAULTS.policy,
        help="stable: placed workloads keep their placement while valid (default); joint: re-optimise all",
    )
    run.add_argument(
        "--network-gbps",
        action="append",
        metavar="KEY=GBPS",
        help="inter-pool bandwidth for KV transfer: default=25 or a100/h100=50 (repeatable)",
    )
    run.add_argument(
        "--resync-seconds",
        type=float,
        default=DEFAULTS.resync_seconds,
        help=f"periodic re-convergence (default {DEFAULTS.resync_seconds:g})",
    )
    run.add_argument(
        "--debounce-seconds",
        type=float,
        default=DEFAULTS.debounce_seconds,
        help=f"planning debounce (default {DEFAULTS.debounce_seconds:g})",
    )
    run.add_argument(
        "--not-ready-grace-seconds",
        type=float,
        default=DEFAULTS.not_ready_grace_seconds,
        help="a NotReady node still counts until it has been NotReady this long "
        f"(default {DEFAULTS.not_ready_grace_seconds:g})",
    )
    run.add_argument(
        "--unschedulable-grace-seconds",
        type=_non_negative,
        default=DEFAULTS.unschedulable_grace_seconds,
        help="a child Deployment's pod the scheduler finds no node for makes the workload Degraded "
        f"(reason Unschedulable) after this long (default {DEFAULTS.unschedulable_grace_seconds:g})",
    )
    run.add_argument(
        "--startup-grace-seconds",
        type=float,
        default=DEFAULTS.startup_grace_seconds,
        help="before the first plan, wait this long for every existing workload to be read "
        f"(default {DEFAULTS.startup_grace_seconds:g})",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=DEFAULTS.workers,
        help=f"concurrent convergences (default {DEFAULTS.workers})",
    )
    run.add_argument("--solver", choices=("milp", "greedy"), default=DEFAULTS.solver, help="placement solver")
    run.add_argument(
        "--inference-pool-epp",
        metavar="SERVICE",
        default=os.environ.get("HETSCHED_INFERENCE_POOL_EPP") or None,
        help="give each workload an InferencePool (Gateway API Inference Extension) whose endpoint "
        "picker is this Service in the workload's namespace, when the InferencePool CRD is installed "
        "(docs/serving.md)",
    )
    run.add_argument("--max-body-bytes", type=int, default=1 << 20, help="HTTP request body limit (1 MiB)")
    run.add_argument(
        "--max-concurrent-plans",
        type=_positive_int,
        default=2,
        help="what-if plans (POST /v1/plan) computed at once; more get 429 with Retry-After (default 2)",
    )
    run.add_argument(
        "--leader-elect",
        action="store_true",
        help="run only while holding a coordination.k8s.io Lease (several replicas: one acts at a time)",
    )
    run.add_argument("--leader-elect-namespace", default=None, help="Lease namespace (default: the pod's)")
    run.add_argument("--leader-elect-name", default="hetsched-operator", help="Lease name")
    run.add_argument("--leader-elect-identity", default=None, help="holder identity (default: host + random)")
    run.add_argument("--leader-elect-lease-duration", type=float, default=15.0, help="seconds (default 15)")
    run.add_argument("--leader-elect-renew-deadline", type=float, default=10.0, help="seconds (default 10)")
    run.add_argument("--leader-elect-retry-period", type=float, default=2.0, help="seconds (default 2)")
    run.add_argument("-v", "--verbose", action="store_true", help="log more")
    run.add_argument("--debug", action="store_true", help="log everything (Kopf debug)")
    run.set_defaults(func=cmd_run)
